"""Node acceptance before a large job (``xferscale bench node``), tagged ``smoke``.

On a GPU partition: one node, one task that sees its GPUs; R50x1 at every precision,
R152x4's fit, ours against the plain loop, the input pipelines, NCCL and a checkpoint/resume,
compared with ``references/node.yaml``. Elsewhere the CPU path (tiny model), tagged ``ci``.
"""
import reframe as rfm
from reframe.core.builtins import parameter, run_after

from xferscale.checklib import NodeAcceptanceBase


@rfm.simple_test
class NodeAcceptance(NodeAcceptanceBase):
    descr = "One node: train step, R152x4 fit, input pipelines, all-reduce, resume"
    gpu = parameter([False, True], fmt=lambda g: "gpu" if g else "cpu")
    reference = {"$ref": "references/node.yaml"}
    time_limit = "15m"

    @run_after("init")
    def select_mode(self):
        self.run_in_mode(gpu=self.gpu)
        self.tags |= {"smoke", "node"}
