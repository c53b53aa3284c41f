"""Library of the xferscale ReFrame checks (the ``checks/`` folder derives from it).

Written in the manner of ReFrame's ``hpctestlib``: library classes hold the launch logic,
the reading of results, sanity and performance functions; the files in ``checks/`` fix
parameters, tags and references and register the tests.
"""
from xferscale.checklib.base import CPU_PARTITIONS, GPU_PARTITIONS, XferscaleRun, perflog_handlers
from xferscale.checklib.bench import (AllReduceBase, LoaderThroughputBase, NodeAcceptanceBase, ScalingSweepBase,
                                      TrainThroughputBase)
from xferscale.checklib.experiments import PretrainExperimentBase, TransferExperimentBase

__all__ = [
    "CPU_PARTITIONS", "GPU_PARTITIONS", "XferscaleRun", "perflog_handlers",
    "AllReduceBase", "LoaderThroughputBase", "NodeAcceptanceBase", "ScalingSweepBase", "TrainThroughputBase",
    "PretrainExperimentBase", "TransferExperimentBase",
]
