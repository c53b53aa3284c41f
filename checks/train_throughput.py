"""Training-step throughput per model x precision x loader (``xferscale bench train``).

GPU partitions run R50x1 and R152x4 at every precision and loader on one GPU; other
partitions run the CPU mode (tiny model, fp32, synthetic data), tagged ``ci``.
"""
import reframe as rfm
from reframe.core.builtins import parameter, run_after

from xferscale.checklib import TrainThroughputBase


@rfm.simple_test
class TrainThroughput(TrainThroughputBase):
    descr = "BiT ResNetV2 training-step throughput"
    model = parameter(["tiny", "r50x1", "r152x4"])
    precision = parameter(["fp32", "tf32", "amp_fp16", "amp_bf16"])
    loader = parameter(["synthetic", "dali"])
    reference = {"$ref": "references/train.yaml"}
    time_limit = "30m"

    @run_after("init")
    def select_mode(self):
        if self.model != "tiny":
            self.run_in_mode(gpu=True)
        elif self.precision == "fp32" and self.loader == "synthetic":
            self.run_in_mode(gpu=False)
        else:
            self.run_nowhere()
        self.tags |= {"train", self.model, self.precision, self.loader}
