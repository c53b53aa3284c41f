"""Library classes of the experiment checks: the paper's pre-training runs and transfers.

These are regression tests of results, not of speed: a pre-training run is held to the
paper's cost (hours on its GPU count, projected from the measured throughput), a full-shot
transfer to the paper's score within a tolerance. On the real machine they take hours to
days; their CPU mode runs the tiny demo in a minute.
"""
from __future__ import annotations

import functools
import glob
import importlib.util
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import reframe.utility.sanity as sn
import yaml
from reframe.core.builtins import parameter, performance_function, run_after, run_before, sanity_function, variable

from xferscale.checklib.base import XferscaleRun

#: A CPU-mode pre-training: the demo config cut to a few small steps.
CPU_PRETRAIN_OVERRIDES = [
    "train.max_steps=3", "train.global_batch=16", "data.image_size=32", "data.synthetic_samples=64",
    "train.warmup_exclude=1", "train.progress=false", "schedule.warmup_steps=1",
]


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


def source_images(config_name: str) -> float | None:
    """Images in one epoch of a paper source ('r152x4_in21k' -> 14e6), from paper.yaml."""
    sources = _paper()["pretraining"]["sources"]
    _, _, source = config_name.partition("_")
    if source in sources:
        return float(sources[source]["images"])
    datasets = sources["medical"]["datasets"]
    parts = {"mimic": "mimic_cxr"}
    names = [parts.get(p, p) for p in source.split("_")]
    if names and all(n in datasets for n in names):
        return float(sum(datasets[n] for n in names))
    return None


class ExperimentRun(XferscaleRun):
    """A paper experiment: on GPUs it runs for hours to days, so only on request."""

    #: Run the paper experiments on GPUs; off unless -S run_long=true.
    run_long = variable(bool, value=False)

    @run_after("setup")
    def long_runs_on_request(self) -> None:
        self.skip_if(self.on_gpu and not self.run_long,
                     "a long paper experiment: select it with -t experiment -S run_long=true")


class PretrainExperimentBase(ExperimentRun):
    """``xferscale pretrain --config NAME``; reads ``<output_dir>/summary.json``."""

    config = parameter(["default"])
    #: Stop after this many steps (None: the whole schedule, as in the paper).
    max_steps = variable(int, type(None), value=None)
    #: Folder of prepared datasets, one sub-folder per source (data.path=<root>/<source>).
    data_root = variable(str, value="")
    extra_overrides = variable(list, value=[])

    @property
    def output_dir(self) -> str:
        return f"runs/{self.config}"

    def overrides(self) -> list[str]:
        out = list(self.extra_overrides)
        if not self.on_gpu:
            out += CPU_PRETRAIN_OVERRIDES
        if self.max_steps:
            out.append(f"train.max_steps={self.max_steps}")
        root = self.data_root or self.current_partition.extras.get("data_root", "")
        if root and self.config != "default":
            out.append(f"data.path={os.path.join(root, self.config.partition('_')[2])}")
        return out

    def xferscale_args(self) -> list[str]:
        config = [] if self.config == "default" else ["--config", self.config]
        return ["pretrain", *config, "--output-dir", self.output_dir, *self.overrides()]

    def load_result(self) -> dict[str, Any]:
        with open(os.path.join(self.stagedir, self.output_dir, "summary.json")) as fp:
            return json.load(fp)

    @sanity_function
    def assert_trained(self):
        return sn.all([
            sn.assert_found(r"checkpoint: ", self.stdout, msg="pretrain did not finish with a checkpoint"),
            sn.assert_eq(sn.getitem(self.result(), "world_size"), self.num_workers),
            sn.assert_true(sn.getitem(self.result(), "steps") > 0, msg="no step was run"),
        ])

    @performance_function("img/s")
    def throughput_total(self):
        return self.result_value("images_per_s_total")

    @performance_function("1")
    def final_loss(self):
        return self.result_value("loss")

    @performance_function("h")
    def projected_hours(self):
        """The whole schedule's wall time at the measured throughput."""
        from xferscale.config import load_config

        cfg = load_config(None if self.config == "default" else self.config, self.overrides(), require_data=False)
        images = source_images(self.config) if cfg.data.source == "prepared" else cfg.data.synthetic_samples
        if not images:
            return math.nan
        return cfg.schedule.epochs * images / self.result_value("images_per_s_total") / 3600


class TransferExperimentBase(ExperimentRun):
    """A full-shot transfer of a pre-trained checkpoint, scored against the paper.

    Reads the result records the transfer writes (``results/.../shots-full/seed-*.json``,
    one per seed) and scores them as the report's tables do (:func:`xferscale.report.aggregate`):
    the mean over the seeds in percent, a mean ROC-AUC over the labels whose AUC is defined
    (the labels left out are printed), and a cell that lacks a seed or is infeasible fails.
    """

    model = variable(str, value="tiny")
    source = variable(str, value="default")
    target = variable(str, value="default")
    seeds = variable(str, value="0-4")
    #: Folder holding the pre-training runs (<root>/<model>_<source>/checkpoint.pt).
    checkpoint_root = variable(str, value="runs")
    #: Folder of prepared target datasets (--data <root>/<target>); empty: the transfer's default.
    data_root = variable(str, value="")
    results_dir = variable(str, value="results")

    @run_after("init")
    def need_transfer_command(self) -> None:
        self.skip_if(importlib.util.find_spec("xferscale.commands.transfer") is None,
                     "xferscale transfer is not installed in this build")

    def xferscale_args(self) -> list[str]:
        if not self.on_gpu:  # the demo: the tiny default pre-training, then a full-shot digits transfer
            return ["transfer", "--shots", "full", "--seeds", "0", "--results", self.results_dir, "--no-progress"]
        checkpoint = os.path.join(self.checkpoint_root, f"{self.model}_{self.source}", "checkpoint.pt")
        args = ["transfer", "--checkpoint", checkpoint, "--source", self.source, "--target", self.target,
                "--shots", "full", "--seeds", self.seeds, "--results", self.results_dir, "--no-progress"]
        root = self.data_root or self.current_partition.extras.get("data_root", "")
        return args + (["--data", os.path.join(root, self.target)] if root else [])

    @run_before("run")
    def pretrain_demo_first(self) -> None:
        if not self.on_gpu:
            self.prerun_cmds.append(" ".join(["xferscale", "pretrain", *CPU_PRETRAIN_OVERRIDES]))

    def load_result(self) -> dict[str, Any]:
        from xferscale.report.aggregate import aggregate
        from xferscale.results import read_record

        paths = sorted(glob.glob(os.path.join(self.stagedir, "**", "shots-full", "seed-*.json"), recursive=True))
        cells = list(aggregate(read_record(Path(p)) for p in paths).values())
        if len(cells) != 1:
            return {"records": len(paths), "cells": len(cells), "seeds_scored": 0, "score": None}
        cell = cells[0]
        if cell.undefined_labels:
            print(f"{self.name}: mean AUC without the labels whose AUC is undefined: {', '.join(cell.undefined_labels)}")
        return {"records": len(paths), "cells": 1, "seeds_scored": cell.n, "score": cell.mean, "metric": cell.metric,
                "undefined_labels": cell.undefined_labels, "infeasible": cell.infeasible}

    @sanity_function
    def assert_scored(self):
        from xferscale.results import parse_seeds

        expected = len(parse_seeds(self.seeds)) if self.on_gpu else 1
        result = self.result()
        return sn.all([
            sn.assert_eq(sn.getitem(result, "cells"), 1, msg="the transfer wrote no full-shot record of one cell"),
            sn.assert_eq(sn.getitem(result, "seeds_scored"), expected,
                         msg="{0} of the expected {1} seeds have a score"),
        ])

    @performance_function("%")
    def score(self):
        return self.result_value("score")
