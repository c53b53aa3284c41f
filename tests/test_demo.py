"""The embedded default as a user runs it (`make demo`): what it shows must stay true.

Pre-training on stroke glyphs must beat the same network from random init at 1, 5 and 10
shots by more than the spread over seeds, and fine-tuned accuracy must rise with shots.
"""
from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

from conftest import run_xferscale
from xferscale.results import ResultStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_make_demo_runs_exactly_the_two_default_commands():
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert [line.split()[-1] for line in recipe.strip().splitlines()] == ["pretrain", "transfer"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Both default commands, run in a fresh folder exactly as `make demo` runs them."""
    work = tmp_path_factory.mktemp("demo")
    import os

    here = os.getcwd()
    os.chdir(work)
    try:
        pretrain = run_xferscale("pretrain", "train.progress=false", timeout=600)
        transfer = run_xferscale("transfer", "--no-progress", timeout=900)
    finally:
        os.chdir(here)
    return work, pretrain.stdout, transfer.stdout


def _accuracies(root: Path) -> dict[tuple[str, object], list[float]]:
    out: dict[tuple[str, object], list[float]] = {}
    for r in ResultStore(root).records():
        out.setdefault((r.source, r.shots), []).append(r.value)
    return out


def test_pretraining_learns_the_fresh_glyphs(demo):
    _, out, _ = demo
    loss = float(re.search(r"^loss ([0-9.]+) after 1024 steps", out, re.M).group(1))
    assert loss < 1.5, out  # from ln(128) = 4.85: on samples never seen before, as every batch is new


def test_pretrained_beats_scratch_and_accuracy_rises_with_shots(demo):
    work, _, out = demo
    acc = _accuracies(work / "results/transfer")
    assert {src for src, _ in acc} == {"default", "scratch", "default-linear"}
    assert all(len(v) == 3 for v in acc.values()), acc
    mean = {k: statistics.mean(v) for k, v in acc.items()}
    std = {k: statistics.stdev(v) for k, v in acc.items()}
    for shots in (1, 5, 10):
        margin = mean["default", shots] - mean["scratch", shots]
        assert margin > max(std["default", shots], std["scratch", shots]), (shots, mean, std)
    for source in ("default", "scratch", "default-linear"):
        curve = [mean[source, s] for s in (1, 5, 10, "full")]
        assert curve == sorted(curve) and curve[0] < curve[-1], (source, curve)
    assert "| tiny -> digits [acc]: shots | default | scratch | default-linear |" in out
    assert "baseline scratch: the same network from random init" in out


def test_the_report_draws_the_baselines(demo):
    work, _, _ = demo
    report = work / "results/transfer/report"
    assert (report / "fewshot.png").stat().st_size > 10_000
    cells = (report / "cells.csv").read_text()
    assert all(src in cells for src in ("default", "scratch", "default-linear"))
