"""Scaling sweep: throughput on 1 GPU, 1 node (4 GPUs), then 2 ... 256 nodes (1024 GPUs).

E(N) = 100 T(N) / (N T(1)) is a performance variable of every N > 1, computed against
the 1-GPU run it depends on; the points run one after the other. GPU partitions sweep
R152x4 in FP32 (the paper's Fig. 4) over torch.distributed (DDP/NCCL) and, where the
partition declares ``horovod``, over Horovod: the paper measured Fig. 4 with Horovod, so
the Horovod variant is the one held to its values (``references/scaling.yaml``); the DDP
variant is reported beside it. Other partitions run the CPU mode on 1 and 2 processes,
tagged ``ci``. Turn the perflogs into the table and figure with
``xferscale report scaling PERFLOG_DIR``.
"""
import reframe as rfm
from reframe.core.builtins import parameter, run_after

from xferscale.checklib import GPU_PARTITIONS, ScalingSweepBase

GPU_COUNTS = [1, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
CPU_COUNTS = [1, 2]


@rfm.simple_test
class ScalingSweep(ScalingSweepBase):
    descr = "Data-parallel scaling efficiency E(N) against one GPU"
    model = parameter(["tiny", "r152x4"])
    framework = parameter(["torch", "horovod"])
    num_workers = parameter(sorted(set(GPU_COUNTS) | set(CPU_COUNTS)))
    reference = {"$ref": "references/scaling.yaml"}
    time_limit = "30m"

    def sweep_point_runs(self, num_workers: int) -> bool:
        return num_workers in (CPU_COUNTS if self.model == "tiny" else GPU_COUNTS)

    @run_after("init")
    def select_mode(self):
        if self.model == "tiny" and self.framework == "torch" and self.num_workers in CPU_COUNTS:
            self.run_in_mode(gpu=False)
        elif self.model != "tiny" and self.num_workers in GPU_COUNTS:
            self.run_in_mode(gpu=True)
            if self.framework == "horovod":
                self.valid_systems = [f"{GPU_PARTITIONS[0]} +horovod"]
                self.distributed = "horovod"
        else:
            self.run_nowhere()
        self.tags |= {"scaling", self.model, self.framework}
