"""Input-pipeline throughput: DALI and the torch DataLoader (``xferscale bench loader``).

GPU partitions read the prepared dataset of the partition (``extras['dataset']`` or
``-S dataset=PATH``) into the GPU; other partitions time both backends on CPU over a
small synthetic JPEG set, tagged ``ci``. Skipped where the loader kernel is not installed.
"""
import reframe as rfm
from reframe.core.builtins import parameter, run_after

from xferscale.checklib import LoaderThroughputBase


@rfm.simple_test
class LoaderThroughput(LoaderThroughputBase):
    descr = "Loader images/s, DALI and torch"
    gpu = parameter([False, True], fmt=lambda g: "gpu" if g else "cpu")
    reference = {"$ref": "references/loader.yaml"}
    time_limit = "20m"

    @run_after("init")
    def select_mode(self):
        self.run_in_mode(gpu=self.gpu)
        self.tags |= {"loader"}
