"""All-reduce bus bandwidth up to R152x4's gradient size (``xferscale bench allreduce``).

GPU partitions: 1 node (NVLink), 2 nodes (the first InfiniBand hop), then 16 and 256
nodes, over torch.distributed/NCCL; the Horovod variants run where a partition declares
the ``horovod`` feature. Other partitions: 2 processes over gloo, tagged ``ci``.
"""
import reframe as rfm
from reframe.core.builtins import parameter, run_after

from xferscale.checklib import GPU_PARTITIONS, AllReduceBase

GPU_COUNTS = [4, 8, 64, 1024]


@rfm.simple_test
class AllReduceSweep(AllReduceBase):
    descr = "All-reduce bus bandwidth over message sizes"
    num_workers = parameter([2, *GPU_COUNTS])
    framework = parameter(["torch", "horovod"])
    reference = {"$ref": "references/allreduce.yaml"}
    time_limit = "20m"

    @run_after("init")
    def select_mode(self):
        if self.num_workers in GPU_COUNTS:
            self.run_in_mode(gpu=True)
            if self.framework == "horovod":
                self.valid_systems = [f"{GPU_PARTITIONS[0]} +horovod"]
        elif self.framework == "torch":
            self.run_in_mode(gpu=False)
        else:
            self.run_nowhere()
        self.tags |= {"allreduce", self.framework}
