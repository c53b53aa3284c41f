"""The paper's experiments as regression tests (tags ``experiment``, ``paper``).

- ``PretrainExperiment``: each shipped pre-training config. Benchmark mode (default) on one
  node (4 GPUs, fits ``develbooster``): ``benchmark_steps`` steps, a finite loss, throughput,
  and the time to train projected on the paper's GPU count and held to the paper's cost in
  GPU-hours where it states one (R152x4 on ImageNet-21k: 81 h on 256 A100; R50x1: 13.5 h on
  128). Full mode (``-S mode=full``) on the paper's GPU count: the whole schedule as a chain
  of requeued jobs. ``-S gpus=N`` runs either mode on N GPUs instead (one of ``GPU_COUNTS``;
  e.g. ``-S gpus=4``: a chain rehearsed on one develbooster node), at the paper's batch per GPU.
- ``TransferExperiment``: the full-shot transfers of the paper's Tables 1 and 2 on one node,
  from the pre-training of the same experiment root. Full mode: five seeds, the mean score
  held to the paper's mean within max(2 std, 1 point); benchmark mode: one seed on a
  shortened schedule, no reference.

Select them explicitly, e.g. ``reframe -c checks/ -r -t experiment -t r50x1``. Their CPU
mode (tag ``ci``) runs the tiny demo pre-training (2 processes) and the demo transfer.
"""
import reframe as rfm
from reframe.core.builtins import parameter, run_after

from xferscale.checklib import PretrainExperimentBase, TransferExperimentBase
from xferscale.checklib.experiments import paper_transfer_cases

# GPUs per pre-training run: the paper's where it says (cost and medical set-up), else 64.
PAPER_GPUS = {"r152x4_in21k": 256, "r50x1_in21k": 128}
DEFAULT_GPUS = 64
BENCHMARK_GPUS = 4  # one node
# The GPU counts -S gpus=N may ask for: 1, 2, 4 GPUs and 2 ... 64 nodes.
GPU_COUNTS = [1, 2, 4, 8, 16, 32, 64, 128, 256]

NATURAL_SOURCES = ["in1k", "in21k"]
MEDICAL_SOURCES = ["chexpert", "chexpert_mimic", "chexpert_mimic_nih", "chexpert_mimic_nih_padchest"]
PRETRAIN_CONFIGS = [f"{m}_{s}" for m in ("r50x1", "r152x4") for s in NATURAL_SOURCES + MEDICAL_SOURCES]


@rfm.simple_test
class PretrainExperiment(PretrainExperimentBase):
    descr = "The paper's pre-training runs: throughput and projected time to train, or the full run"
    config = parameter(["default", *PRETRAIN_CONFIGS])
    num_workers = parameter(GPU_COUNTS)
    reference = {"$ref": "references/pretrain.yaml"}
    time_limit = "30m"  # CPU mode; GPU modes: benchmark_time, or the partition's limit per job

    @run_after("init")
    def select_mode(self):
        if self.gpus and self.gpus not in GPU_COUNTS:
            raise ValueError(f"-S gpus={self.gpus}: choose one of {', '.join(map(str, GPU_COUNTS))}")
        paper = PAPER_GPUS.get(self.config, DEFAULT_GPUS)
        if self.config == "default":
            if self.num_workers == 2:
                self.run_in_mode(gpu=False)
            else:
                self.run_nowhere()
        elif self.num_workers == (self.gpus or (paper if self.full else BENCHMARK_GPUS)):
            self.run_in_mode(gpu=True)
            self.paper_gpus = paper
            self.tags |= {"paper", *self.config.split("_", 1)}
        else:
            self.run_nowhere()
        self.tags |= {"experiment", "pretrain"}


@rfm.simple_test
class TransferExperiment(TransferExperimentBase):
    descr = "The paper's full-shot transfers (Tables 1 and 2)"
    # (model, source, target): the CPU demo, then every cell of the paper's Tables 1 and 2.
    case = parameter([("tiny", "default", "default"), *paper_transfer_cases()], fmt=lambda c: "/".join(c))
    num_workers = parameter([1, 4])
    reference = {"$ref": "references/transfer.yaml"}
    time_limit = "30m"  # CPU mode; GPU modes: benchmark_time, or the partition's limit per job

    @run_after("init")
    def select_mode(self):
        self.model, self.source, self.target = self.case
        if self.model == "tiny":
            if self.num_workers == 1:
                self.run_in_mode(gpu=False)
            else:
                self.run_nowhere()
        elif self.num_workers == 4:
            self.run_in_mode(gpu=True)
            self.tags |= {"paper", self.model, self.source, self.target}
        else:
            self.run_nowhere()
        self.tags |= {"experiment", "transfer"}
