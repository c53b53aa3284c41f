"""Files from elsewhere are read, never run: a pickle whose ``__reduce__`` runs a command is refused
with one line wherever the suite reads one (checkpoints, resume states, weight files, CIFAR
batches), and a YAML config of nested aliases is refused before it expands."""
from __future__ import annotations

import hashlib
import os
import pickle
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from _transfer_fixtures import one_thread, write_checkpoint  # noqa: F401
from conftest import run_xferscale
from test_one_line_errors import one_line
from test_prep_natural import cifar10_raw  # noqa: F401
from xferscale.checkpoint import CheckpointReadError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from xferscale.cli import main
from xferscale.config import ConfigError, load_config


class RunsCommand:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile_checkpoint(path: Path, marker: Path, sidecar: bool = False) -> Path:
    """A file in torch's checkpoint format whose pickle runs a command; with the SHA-256 sidecar
    its author can write as well."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": RunsCommand(marker), "step": 1}, path)
    if sidecar:
        path.with_name(path.name + ".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "\n")
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "ran"
    yield path
    assert not path.exists(), "the file's pickle ran a command"


def test_load_checkpoint_refuses_a_pickle_that_runs_a_command(tmp_path, marker):
    path = hostile_checkpoint(tmp_path / "checkpoint.pt", marker, sidecar=True)
    with pytest.raises(CheckpointReadError, match=f"^checkpoint {path} is refused: it names posix.system, "):
        load_checkpoint(path)


def test_a_bare_pickle_of_a_newer_protocol_is_not_run_either(tmp_path, marker):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(pickle.dumps(RunsCommand(marker), protocol=4))
    with pytest.raises(CheckpointReadError, match=rf"^checkpoint {path} cannot be read \(Unsupported operand"):
        load_checkpoint(path)


def test_checkpoints_hold_only_tensors_and_plain_values_and_resume_the_generators(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "rng": [rng_state()], "step": 3})
    drawn = (random.random(), float(np.random.rand()), float(torch.rand(())))
    state = torch.load(path, weights_only=True)  # plain torch, no allow-list
    set_rng_state(state["rng"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == drawn


def test_a_checkpoint_of_the_earlier_format_still_loads(tmp_path):
    """Earlier checkpoints held numpy's generator state as an array: it is rebuilt, not unpickled."""
    path = tmp_path / "checkpoint.pt"
    torch.save({"rng": [{"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}],
                "step": 3}, path)
    drawn = float(np.random.rand())
    set_rng_state(load_checkpoint(path)["rng"][0])
    assert float(np.random.rand()) == drawn


def test_transfer_refuses_a_hostile_checkpoint(tmp_path, marker, capsys):
    ckpt = hostile_checkpoint(tmp_path / "ckpt.pt", marker, sidecar=True)
    assert main(["transfer", "--checkpoint", str(ckpt), "--results", str(tmp_path / "res"), "--no-progress"]) != 0
    assert f"{ckpt} is refused: it names posix.system" in one_line(capsys.readouterr().err)


def test_a_hostile_resume_state_in_a_shared_results_folder_is_refused(tmp_path, marker, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", name="tiny_synthetic")
    results = tmp_path / "res"
    state = hostile_checkpoint(results / ".work/synthetic/tiny/digits/shots-2/seed-0/state.pt", marker, sidecar=True)
    args = ["transfer", "--checkpoint", str(ckpt), "--results", str(results), "--shots", "2", "--seeds", "0",
            "--schedule-scale", "0.01", "--crop", "8", "--baselines", "none", "--no-progress", "--no-report"]
    assert main(args) != 0
    assert f"{state} is refused: it names posix.system" in one_line(capsys.readouterr().err)


def test_pretrain_resume_refuses_a_hostile_checkpoint_with_its_sidecar(tmp_path, marker, tiny_args):
    out = tmp_path / "run"
    ckpt = hostile_checkpoint(out / "checkpoint.pt", marker, sidecar=True)
    proc = run_xferscale("pretrain", *tiny_args, f"output_dir={out}", "--resume", check=False)
    assert proc.returncode != 0
    assert f"{ckpt} is refused: it names posix.system" in one_line(proc.stderr)


@pytest.mark.parametrize("suffix", [".pth", ".bin"])
def test_weights_verify_refuses_a_hostile_weight_file(tmp_path, marker, capsys, suffix):
    path = hostile_checkpoint(tmp_path / f"BiT-M-R50x1{suffix}", marker)
    assert main(["weights", "verify", str(path)]) == 2
    assert f"{path}: refused: it names posix.system" in one_line(capsys.readouterr().err)


def test_prepare_refuses_a_cifar_batch_whose_pickle_runs_a_command(cifar10_raw, tmp_path, marker, capsys):
    batch = cifar10_raw / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({b"data": RunsCommand(marker), b"labels": [0]}, protocol=2))
    assert main(["prepare", "cifar10", "--raw", str(cifar10_raw), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{batch}: refused: the pickle names posix.system" in line
    assert not (tmp_path / "out" / "dataset.json").exists()


BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefghij", "bcdefghijk")]
) + "\n"


def test_a_config_of_nested_aliases_is_refused_at_once(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS.splitlines()) == 11
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"^{path}: not valid YAML: line 2, column \d+: alias \*a refused") as err:
        load_config(str(path))
    assert time.perf_counter() - started < 0.5 and "\n" not in str(err.value)


def test_an_override_with_an_alias_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"override 'train.seed=\*x': not valid YAML: .*alias \*x refused"):
        load_config(None, ["train.seed=*x"])


def test_a_config_larger_than_the_bound_is_not_read(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: x\n" + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match=rf"^{path}: larger than 1 MiB"):
        load_config(str(path))


def test_a_config_file_without_aliases_still_loads(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text("name: plain\ntrain:\n  seed: 3\n")
    assert load_config(str(path)).train.seed == 3
