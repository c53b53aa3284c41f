"""Scaling sweep: throughput on 1 GPU, 1 node (4 GPUs), then 2 ... 256 nodes (1024 GPUs).

E(N) = 100 T(N) / (N T(1)) is a performance variable of every N > 1, computed against
the 1-GPU run it depends on. GPU partitions sweep R152x4 in FP32 (the paper's Fig. 4);
other partitions run the CPU mode on 1 and 2 processes, tagged ``ci``. Turn the
perflogs into the table and figure with ``xferscale report scaling PERFLOG_DIR``.
"""
import reframe as rfm
from reframe.core.builtins import parameter, run_after

from xferscale.checklib import ScalingSweepBase

GPU_COUNTS = [1, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
CPU_COUNTS = [1, 2]


@rfm.simple_test
class ScalingSweep(ScalingSweepBase):
    descr = "Data-parallel scaling efficiency E(N) against one GPU"
    model = parameter(["tiny", "r152x4"])
    num_workers = parameter(sorted(set(GPU_COUNTS) | set(CPU_COUNTS)))
    reference = {"$ref": "references/scaling.yaml"}
    time_limit = "30m"

    @run_after("init")
    def select_mode(self):
        if self.model == "tiny" and self.num_workers in CPU_COUNTS:
            self.run_in_mode(gpu=False)
        elif self.model != "tiny" and self.num_workers in GPU_COUNTS:
            self.run_in_mode(gpu=True)
        else:
            self.run_nowhere()
        self.tags |= {"scaling", self.model}
