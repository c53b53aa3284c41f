"""Shared test helpers: run the real CLI in fresh processes, one or several ranks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


# Tests run many small models: one intra-op thread avoids oversubscribing a small CI machine.
torch.set_num_threads(1)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID"):
        env.pop(key, None)
    return env


def xferscale_cmd(*args: str, nproc: int = 1) -> list[str]:
    """The command line of ``xferscale ARGS``, under torchrun with ``nproc`` ranks when > 1."""
    if nproc == 1:
        return [sys.executable, "-m", "xferscale.cli", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "xferscale.cli", *args]


def run_xferscale(*args: str, nproc: int = 1, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(xferscale_cmd(*args, nproc=nproc), capture_output=True, text=True, env=_env(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"xferscale {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_xferscale(*args: str, nproc: int = 1, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(xferscale_cmd(*args, nproc=nproc), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**_env(), **(env or {})})


def process_stats() -> list[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ...)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            found.append((int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split()))
        except OSError:  # the process ended meanwhile
            continue
    return found


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (torchrun's workers), from /proc."""
    return sorted(child for child, fields in process_stats() if int(fields[1]) == pid)


def load_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


@pytest.fixture
def tiny_args(tmp_path: Path) -> list[str]:
    """A small, quick tiny-model run on synthetic data."""
    return ["train.progress=false", "data.synthetic_samples=128", "data.image_size=16", "train.global_batch=16",
            "schedule.epochs=2", "schedule.warmup_steps=4", "train.warmup_exclude=2", "train.log_every=2"]
