"""Library classes of the experiment checks: the paper's pre-training runs and transfers.

Each experiment runs in one of two modes (``-S mode=...``), the way HPC benchmarks split
a days-long job:

- ``benchmark`` (default): a fixed number of steps in one short job (``benchmark_time``,
  within ``develbooster``'s limits on one node), checked for a finite loss, with the
  throughput measured and the whole schedule's time to train projected against the paper's
  cost (GPU-hours);
- ``full``: the whole schedule as a chain of requeued jobs: SLURM sends SIGUSR1
  ``signal_lead_s`` before each job's time limit, every rank checkpoints, the job script
  sees the stop marker (in the run directory, where no re-run deletes it) and calls
  ``scontrol requeue``, and the next job resumes. Re-running the check continues from
  wherever the chain stopped; after the end it passes again from the kept results. A
  run directory has at most one live job (:mod:`xferscale.checklib.chain`): a re-run that
  finds one still queued or running (its ReFrame session died) submits a job that waits
  for it to end, then continues or confirms the run.

Checkpoints and results live under a persistent ``experiment_root`` (``-S
experiment_root=...``, or the partition's ``extras['experiment_root']``, on JUWELS under
``$SCRATCH``), never in the stage directory, which ReFrame deletes when a test passes. A
transfer starts from the pre-training checkpoint of the same root (full mode: a finished
one). The container sees the experiment root and the prepared data (``container_binds``).
Their CPU mode (tag ``ci``) runs the tiny demo in a minute, in the stage directory.
"""
from __future__ import annotations

import functools
import glob
import importlib.util
import json
import math
import os
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import reframe.utility.sanity as sn
import reframe.utility.typecheck as typ
import yaml
from reframe.core.builtins import parameter, performance_function, run_after, run_before, sanity_function, variable

from xferscale.checklib.base import XferscaleRun
from xferscale.checklib.chain import ChainError, RunChain
from xferscale.cluster import STOP_MARKER_ENV, slurm_seconds

#: A CPU-mode pre-training: the demo config cut to a few small steps.
CPU_PRETRAIN_OVERRIDES = [
    "train.max_steps=3", "train.global_batch=16", "data.image_size=32", "data.synthetic_samples=64",
    "train.warmup_exclude=1", "train.progress=false", "schedule.warmup_steps=1",
]
MODES = ("benchmark", "full")
#: Written by a run that a signal stopped with its state saved, in the run's chain directory.
STOP_MARKER = "xferscale.stopped"
#: What the record of a GPU-mode run says about it: which GPUs, which batch (in its run directory).
EXPERIMENT_RECORD = "experiment.json"


@functools.lru_cache(maxsize=1)
def _paper() -> dict[str, Any]:
    return yaml.safe_load(resources.files("xferscale").joinpath("reference/paper.yaml").read_text())


def paper_transfer_cases() -> list[tuple[str, str, str]]:
    """(model, source, target) of every full-shot cell in the paper's Tables 1 and 2."""
    paper = _paper()
    return [(model, source, target)
            for table in ("paper_table1", "paper_table2")
            for model, sources in paper[table].items()
            for source, targets in sources.items()
            for target in targets]


@sn.deferrable
def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


@sn.deferrable
def _started_from(files: list[str], expected: str) -> bool:
    """True if the records that name their checkpoint file all name ``expected``."""
    return all(name == expected for name in files)


def requeue_commands(marker: str, max_restarts: int) -> list[str]:
    """After the job step: requeue when the run left the stop marker, within ``max_restarts``."""
    marker = shlex.quote(marker)
    return [
        f'if [ -e {marker} ]; then\n'
        f'    if [ "${{SLURM_RESTART_COUNT:-0}}" -ge {max_restarts} ]; then\n'
        f'        echo "xferscale: checkpoint written; {max_restarts} restarts used up, not requeueing" >&2; exit 1\n'
        f'    fi\n'
        f'    echo "xferscale: checkpoint written; requeueing (restart $(( ${{SLURM_RESTART_COUNT:-0}} + 1 )))"\n'
        f'    scontrol requeue "$SLURM_JOB_ID"\n'
        f'fi'
    ]


class ExperimentRun(XferscaleRun):
    """A paper experiment: a short benchmark-mode job, or the full run as a requeue chain."""

    #: ``benchmark`` (a fixed number of steps, time to train projected) or ``full`` (the
    #: whole schedule as a chain of requeued jobs).
    mode = variable(str, value="benchmark")
    #: Persistent folder of checkpoints and results. Empty: the partition's
    #: ``extras['experiment_root']``; CPU mode without either: the stage directory.
    experiment_root = variable(str, value="")
    #: Folder of prepared datasets, one sub-folder per source or target (--data/data.path).
    #: Empty: the partition's ``extras['data_root']``.
    data_root = variable(str, value="")
    #: Time limit of a benchmark-mode job.
    benchmark_time = variable(str, value="01:00:00")
    #: Full mode: the time limit of each job of the chain. Empty: the partition's limit.
    chain_job_time = variable(str, value="")
    #: Full mode: seconds before a job's time limit at which every rank checkpoints.
    signal_lead_s = variable(int, value=300)
    #: Full mode: requeues the chain may use before it gives up.
    max_restarts = variable(int, value=100)

    @run_after("init")
    def check_mode(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"-S mode={self.mode!r}: choose one of {', '.join(MODES)}")
        self.tags.add(self.mode)

    @property
    def full(self) -> bool:
        return self.mode == "full"

    @property
    def root(self) -> str:
        root = self.experiment_root or self.current_partition.extras.get("experiment_root", "")
        return os.path.expandvars(root) if root else self.stagedir

    @property
    def datasets(self) -> str:
        """The folder of prepared datasets ('' when none is configured)."""
        return os.path.expandvars(self.data_root or self.current_partition.extras.get("data_root", ""))

    def data_dir(self, name: str) -> str | None:
        return os.path.join(self.datasets, name) if self.datasets else None

    def container_binds(self) -> list[str]:
        return [path for path in (self.root, self.datasets) if path]

    @property
    def chain_dir(self) -> str:
        """The folder whose results the job writes: one live job at a time (GPU mode)."""
        raise NotImplementedError

    @run_after("setup")
    def set_time_limit(self) -> None:
        if not self.on_gpu:
            return
        limits = self.partition_limits()
        if self.full:
            limit = self.chain_job_time or (limits.max_time if limits else self.benchmark_time)
        else:
            limit = self.benchmark_time
        self.time_limit = slurm_seconds(limit)
        if self.full and self.chain_job_time:
            self.check_partition_limits()

    @run_before("run")
    def chain_requeues(self) -> None:
        """Full mode: signal before the limit, checkpoint, requeue, resume (see module doc)."""
        if not (self.on_gpu and self.full):
            return
        marker = os.path.join(self.chain_dir, STOP_MARKER)
        self.job.options += ["--requeue", "--open-mode=append", f"--signal=USR1@{self.signal_lead_s}"]
        self.env_vars[STOP_MARKER_ENV] = marker
        self.prerun_cmds.insert(0, f"rm -f {shlex.quote(marker)}")
        self.postrun_cmds += requeue_commands(marker, self.max_restarts)

    # -- one live job per run directory (xferscale.checklib.chain) ---------------------
    @property
    def claims_chain(self) -> bool:
        return (self.on_gpu and not self.is_dry_run()
                and self.current_partition.scheduler.registered_name == "slurm")

    @run_before("run")
    def join_chain(self) -> None:
        """Hold the run directory; behind jobs of it that a dead session left, wait for them."""
        self._chain = None
        if not self.claims_chain:
            return
        chain = RunChain(self.chain_dir)
        try:
            chain.lock()
            live = chain.live_jobs()
        except ChainError as err:
            chain.unlock()
            self.skip(f"{self.chain_dir}: {err}")
        self._chain = chain
        self.job.options.append(f"--comment={chain.tag}")
        self.prerun_cmds.insert(0, chain.record_command())
        if live:
            ids = ":".join(job for job, _ in live)
            self.job.options.append(f"--dependency=afterany:{ids}")
            print(f"{self.name}: job {', '.join(f'{job} ({state})' for job, state in live)} of {self.chain_dir} "
                  "is still live (a session that did not end cleanly); this job waits for it to end, then "
                  "continues or confirms the run")

    # ReFrame runs post-run hooks once the job has ended
    @run_after("run")
    def release_chain(self) -> None:
        if self._chain is not None:
            self._chain.unlock()


class PretrainExperimentBase(ExperimentRun):
    """``xferscale pretrain --config NAME``; reads ``<run dir>/summary.json``.

    A GPU count other than the paper's (``-S gpus=N``, e.g. a chain rehearsed on one node)
    keeps the paper's batch per GPU: the global batch becomes N times it, so the learning
    rate, ``base_lr * global_batch / 256``, follows the linear scaling rule, and a warm-up
    given in steps is stretched to cover the paper's number of images. Such a run has its
    own run directory (``<config>-<N>gpu``), and its ``experiment.json`` says how it deviates
    from the paper's run.
    """

    config = parameter(["default"])
    #: Benchmark mode: the steps of the job (the first ``train.warmup_exclude`` are not timed).
    benchmark_steps = variable(int, value=300)
    #: The GPUs of the paper's run, at which the time to train is projected.
    paper_gpus = variable(int, value=64)
    #: The GPUs of the run; 0: the mode's own (benchmark: one node, full: the paper's count).
    gpus = variable(int, value=0)
    #: Config overrides appended last, e.g. ``-S extra_overrides=train.precision=tf32,train.log_every=10``
    #: (ReFrame splits the value at commas: one override per item, so no value may hold a comma).
    extra_overrides = variable(typ.List[str], value=[])

    @property
    def source(self) -> str:
        return self.config.partition("_")[2]

    @property
    def at_paper_scale(self) -> bool:
        return self.num_workers == self.paper_gpus

    @property
    def run_dir(self) -> str:
        if not self.on_gpu:
            return os.path.join(self.stagedir, "runs", self.config)
        name = self.config if self.full and self.at_paper_scale else f"{self.config}-{self.num_workers}gpu"
        return os.path.join(self.root, "pretrain", self.mode, name)

    @property
    def chain_dir(self) -> str:
        return self.run_dir

    def user_overrides(self) -> list[str]:
        return [o for o in self.extra_overrides if o]  # -S extra_overrides= gives ['']

    def load_config(self, overrides: list[str]):
        from xferscale.config import load_config

        return load_config(None if self.config == "default" else self.config, overrides, require_data=False)

    @functools.cached_property
    def paper_config(self):
        """The shipped config: the paper's run."""
        return self.load_config([])

    @functools.cached_property
    def reads_dataset(self) -> bool:
        return self.load_config(self.user_overrides()).data.source == "prepared"

    @run_after("setup")
    def need_dataset(self) -> None:
        if not self.on_gpu or not self.reads_dataset:
            return
        data = self.data_dir(self.source)
        if data is not None and os.path.isfile(os.path.join(data, "dataset.json")):
            return
        from xferscale.data.converters import prepare_command

        out = data or os.path.join("<data_root>", self.source)
        self.skip(f"no prepared dataset at {out} (make it with `{prepare_command(self.source, out)}`; "
                  "-S data_root=DIR or XFERSCALE_DATA_ROOT names the folder of datasets)")

    def gpu_scaling(self) -> list[str]:
        """Overrides that keep the paper's batch per GPU on ``num_workers`` GPUs (class doc)."""
        if self.at_paper_scale:
            return []
        cfg = self.paper_config
        per_gpu, rest = divmod(cfg.train.global_batch, self.paper_gpus)
        if rest or not per_gpu:  # user overrides, applied last, may set it
            return []
        batch = per_gpu * self.num_workers
        out = [f"train.global_batch={batch}"]
        if cfg.schedule.warmup_steps:
            out.append(f"schedule.warmup_steps={-(-cfg.schedule.warmup_steps * cfg.train.global_batch // batch)}")
        return out

    def overrides(self) -> list[str]:
        if not self.on_gpu:
            return CPU_PRETRAIN_OVERRIDES + self.user_overrides()
        out = self.gpu_scaling()
        if self.reads_dataset:
            out.append(f"data.path={self.data_dir(self.source)}")
        if not self.full:
            out += [f"train.max_steps={self.benchmark_steps}", f"train.checkpoint_every={self.benchmark_steps}"]
        return out + self.user_overrides()

    def xferscale_args(self) -> list[str]:
        config = [] if self.config == "default" else ["--config", self.config]
        resume = ["--resume"] if self.full else []
        return ["pretrain", *config, "--output-dir", self.run_dir, *resume, *self.overrides()]

    @run_before("run")
    def record_experiment(self) -> None:
        """``<run dir>/experiment.json``: the run's GPUs and batch beside the paper's."""
        if not self.on_gpu:
            return
        from xferscale.optim import scaled_lr
        from xferscale.results import write_json_atomic

        cfg = self.load_config(self.overrides())
        deviation = None
        if not self.at_paper_scale:
            paper = self.paper_config
            gpus = f"{self.num_workers} GPU{'s' if self.num_workers > 1 else ''}"
            deviation = (f"{gpus} instead of the paper's {self.paper_gpus}: global batch "
                         f"{cfg.train.global_batch} instead of {paper.train.global_batch}, learning rate "
                         f"{scaled_lr(cfg.optim.base_lr, cfg.train.global_batch):.4g} instead of "
                         f"{scaled_lr(paper.optim.base_lr, paper.train.global_batch):.4g}")
            print(f"{self.name}: {deviation}")
        if self.is_dry_run():
            return
        write_json_atomic(Path(self.run_dir, EXPERIMENT_RECORD), {
            "config": self.config, "mode": self.mode, "gpus": self.num_workers, "paper_gpus": self.paper_gpus,
            "global_batch": cfg.train.global_batch, "paper_global_batch": self.paper_config.train.global_batch,
            "overrides": self.overrides(), "deviation": deviation,
        })

    def load_result(self) -> dict[str, Any]:
        with open(os.path.join(self.run_dir, "summary.json")) as fp:
            return json.load(fp)

    @sanity_function
    def assert_trained(self):
        result = self.result()
        checks = [
            # a re-run of a finished chain reports it "already finished" and keeps its summary
            sn.assert_found(r"checkpoint: |stopped by signal|already finished", self.stdout,
                            msg="pretrain wrote no checkpoint"),
            sn.assert_eq(sn.getitem(result, "world_size"), self.num_workers),
            sn.assert_true(sn.getitem(result, "steps") > 0, msg="no step was run"),
            sn.assert_true(_finite(sn.getitem(result, "loss")), msg="the loss is not finite"),
        ]
        if self.on_gpu and self.full:
            checks.append(sn.assert_true(sn.getitem(result, "finished"),
                                         msg="the chain stopped before the end of the schedule"))
        return sn.all(checks)

    @performance_function("img/s")
    def throughput_total(self):
        return self.result_value("images_per_s_total")

    @performance_function("1")
    def final_loss(self):
        return self.result_value("loss")

    def schedule_images(self) -> float:
        """Images of the whole schedule on the configured dataset's real size."""
        from xferscale.schedule import plan_on_dataset

        # the paper's run: its batch, whatever GPUs measured the throughput
        cfg = self.load_config([o for o in self.overrides() if o not in self.gpu_scaling()])
        plan = plan_on_dataset(cfg)
        return float(plan.total_steps * cfg.train.global_batch)

    @performance_function("h")
    def projected_hours(self):
        """The whole schedule's wall time on the paper's GPU count, scaling the measured
        throughput linearly (an optimistic bound; ``ScalingSweep`` measures E(N))."""
        per_gpu = self.result_value("images_per_s_total") / self.num_workers
        return self.schedule_images() / (per_gpu * self.paper_gpus) / 3600

    @performance_function("GPUh")
    def projected_gpu_hours(self):
        """GPU-hours of the whole schedule at the measured per-GPU throughput."""
        per_gpu = self.result_value("images_per_s_total") / self.num_workers
        return self.schedule_images() / per_gpu / 3600


class TransferExperimentBase(ExperimentRun):
    """A full-shot transfer of a pre-trained checkpoint, scored against the paper.

    Reads the result records the transfer writes (``<results>/<source>/<model>/<target>/
    shots-full/seed-*.json``) and scores them as the report's tables do
    (:func:`xferscale.report.aggregate`): the mean over the seeds in percent, a mean ROC-AUC
    over the labels whose AUC is defined (the labels left out are printed); a cell that
    lacks a seed or is infeasible fails. Benchmark mode: ``benchmark_seeds`` at
    ``benchmark_schedule_scale`` of the rule's schedule, with no reference.
    """

    model = variable(str, value="tiny")
    source = variable(str, value="default")
    target = variable(str, value="default")
    #: A published checkpoint to start from instead of this suite's pre-training (a name of
    #: ``xferscale weights list``, e.g. ``bit_m_r50x1``), read from ``<experiment_root>/weights/``.
    #: It runs the cases of its model and of the paper's source it stands beside (BiT-M: in21k);
    #: the records' source is the checkpoint's (``bit_m``).
    pretrained = variable(str, value="")
    seeds = variable(str, value="0-4")
    benchmark_seeds = variable(str, value="0")
    benchmark_schedule_scale = variable(float, value=0.05)

    @run_after("init")
    def need_transfer_command(self) -> None:
        self.skip_if(importlib.util.find_spec("xferscale.commands.transfer") is None,
                     "xferscale transfer is not installed in this build")

    @run_after("init")
    def no_reference_in_benchmark_mode(self) -> None:
        if not self.full:  # a shortened schedule is not the paper's cell
            self.reference = {}

    @property
    def results_dir(self) -> str:
        if not self.on_gpu:
            return os.path.join(self.stagedir, "results")
        return os.path.join(self.root, "transfer", self.mode)

    @property
    def chain_dir(self) -> str:
        return os.path.join(self.results_dir, self.record_source, self.model, self.target)

    def pretrain_candidates(self) -> list[str]:
        """Pre-training run folders this transfer may start from, in order of preference."""
        name = f"{self.model}_{self.source}"
        full = os.path.join(self.root, "pretrain", "full", name)
        if self.full:
            return [full]
        benchmarks = sorted(glob.glob(os.path.join(self.root, "pretrain", "benchmark", f"{name}-*gpu")))
        return [full, *benchmarks]

    @property
    def public_checkpoint(self):
        from xferscale.transfer.public_weights import known

        return known(self.pretrained) if self.pretrained else None

    @property
    def record_source(self) -> str:
        """The source the transfer's records carry: the case's, or the published checkpoint's."""
        return self.public_checkpoint.source if self.pretrained else self.source

    def checkpoint_path(self) -> str:
        """The file given to ``xferscale transfer --checkpoint``: a run's ``checkpoint.pt``, from
        which transfer itself picks ``best.pt`` where the run validated and kept one."""
        if self.pretrained:
            return os.path.join(self.root, "weights", self.public_checkpoint.file)
        return os.path.join(self.pretrained_run() or self.pretrain_candidates()[0], "checkpoint.pt")

    def expected_checkpoint_file(self) -> str:
        """The file the records should name: ``best.pt`` beside the run's checkpoint, if any."""
        from xferscale.validation import BEST_NAME

        path = self.checkpoint_path()
        if self.pretrained:
            return os.path.basename(path)
        return BEST_NAME if os.path.isfile(os.path.join(os.path.dirname(path), BEST_NAME)) else os.path.basename(path)

    def pretrained_run(self) -> str | None:
        for run in self.pretrain_candidates():
            if not os.path.isfile(os.path.join(run, "checkpoint.pt")):
                continue
            if self.full:
                try:
                    with open(os.path.join(run, "summary.json")) as fp:
                        if not json.load(fp).get("finished"):
                            continue
                except (OSError, ValueError):
                    continue
            return run
        return None

    @run_after("setup")
    def need_pretrained(self) -> None:
        if not self.on_gpu:
            return
        if self.pretrained:
            self._need_public_checkpoint()
            return
        self.skip_if(self.pretrained_run() is None,
                     f"no {'finished ' if self.full else ''}pre-training of {self.model}_{self.source} under "
                     f"{self.root}/pretrain: run PretrainExperiment %config={self.model}_{self.source} "
                     f"-S mode={self.mode} first")

    def _need_public_checkpoint(self) -> None:
        from xferscale.report.paper import PUBLIC_WEIGHT_SOURCES

        entry = self.public_checkpoint
        self.skip_if(entry.model != self.model, f"{entry.name} holds {entry.model}, this case is {self.model}")
        beside = PUBLIC_WEIGHT_SOURCES[entry.source]
        self.skip_if(self.source != beside, f"{entry.name} stands beside the paper's {beside} cases, not {self.source}")
        self.skip_if(not os.path.isfile(self.checkpoint_path()),
                     f"{self.checkpoint_path()} not found; on a login node: "
                     f"wget -O {self.checkpoint_path()} {entry.url}")

    def xferscale_args(self) -> list[str]:
        if not self.on_gpu:  # the demo: the tiny default pre-training, then a full-shot digits transfer
            return ["transfer", "--shots", "full", "--seeds", "0", "--baselines", "none", "--results", self.results_dir,
                    "--no-progress"]
        seeds = self.seeds if self.full else self.benchmark_seeds
        args = ["transfer", "--checkpoint", self.checkpoint_path(), "--source", self.record_source,
                "--target", self.target,
                "--shots", "full", "--seeds", seeds, "--results", self.results_dir, "--no-progress",
                # the cases share the results folder: its report is `xferscale report results`, run once
                "--no-report"]
        if not self.full:
            args += ["--schedule-scale", str(self.benchmark_schedule_scale)]
        data = self.data_dir(self.target)
        return args + (["--data", data] if data else [])

    @run_before("run")
    def pretrain_demo_first(self) -> None:
        if not self.on_gpu:
            self.prerun_cmds.append(" ".join(["xferscale", "pretrain", *CPU_PRETRAIN_OVERRIDES]))

    def load_result(self) -> dict[str, Any]:
        from xferscale.report.aggregate import aggregate
        from xferscale.results import read_record

        cell = ("**",) if not self.on_gpu else (self.record_source, self.model, self.target)
        paths = sorted(glob.glob(os.path.join(self.results_dir, *cell, "shots-full", "seed-*.json"), recursive=True))
        records = [read_record(Path(p)) for p in paths]
        cells = list(aggregate(records).values())
        # records written since transfer names the file it started from
        files = sorted({r.config["checkpoint_file"] for r in records if r.config.get("checkpoint_file")})
        if len(cells) != 1:
            return {"records": len(paths), "cells": len(cells), "seeds_scored": 0, "score": None,
                    "checkpoint_files": files}
        cell = cells[0]
        if cell.undefined_labels:
            print(f"{self.name}: mean AUC without the labels whose AUC is undefined: {', '.join(cell.undefined_labels)}")
        return {"records": len(paths), "cells": 1, "seeds_scored": cell.n, "score": cell.mean, "metric": cell.metric,
                "undefined_labels": cell.undefined_labels, "infeasible": cell.infeasible, "checkpoint_files": files}

    @sanity_function
    def assert_scored(self):
        from xferscale.results import parse_seeds

        expected = len(parse_seeds(self.seeds if self.full else self.benchmark_seeds)) if self.on_gpu else 1
        result = self.result()
        checks = [
            sn.assert_eq(sn.getitem(result, "cells"), 1, msg="the transfer wrote no full-shot record of one cell"),
            sn.assert_eq(sn.getitem(result, "seeds_scored"), expected,
                         msg="{0} of the expected {1} seeds have a score"),
        ]
        if self.on_gpu:
            checks.append(sn.assert_true(_started_from(sn.getitem(result, "checkpoint_files"),
                                                       self.expected_checkpoint_file()),
                                         msg=f"the records do not all start from {self.expected_checkpoint_file()}"))
        return sn.all(checks)

    @performance_function("%")
    def score(self):
        return self.result_value("score")
