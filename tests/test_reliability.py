"""Nothing lost, nothing silent: non-finite states, signals at any moment, failed writes."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _transfer_fixtures import FAST, one_thread, tensor_target, write_checkpoint  # noqa: F401
from conftest import run_xferscale, start_xferscale
from xferscale.checkpoint import CheckpointWriteError, NonFiniteStateError, save_checkpoint
from xferscale.preemption import StopRequest
from xferscale.results import FULL, ResultStore
from xferscale.transfer.finetune import Preempted
from xferscale.transfer.grid import run_grid
from xferscale.transfer.pretrained import load_pretrained


def test_a_non_finite_state_is_never_checkpointed(tmp_path, tiny_args):
    proc = run_xferscale("pretrain", *tiny_args, "optim.base_lr=1e12", "optim.agc_clip=0", "train.checkpoint_every=1",
                         "train.log_every=1000", f"output_dir={tmp_path}", check=False)
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "nothing non-finite is checkpointed" in line
    if "loss became NaN/inf at step" in line:  # the loss went first
        assert 0 <= int(line.split("at step ")[1].split()[0]) < 16
    else:  # the weights went first: the save after that update refused them
        assert "the losses so far are finite" in line and "state holds NaN/inf after" in line
    if (tmp_path / "checkpoint.pt").exists():  # an earlier step's, finite
        state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
        assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
        assert "holds a finite state" in line


def test_save_refuses_nan_weights_and_keeps_the_previous_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "step": 1})
    before = path.read_bytes()
    with pytest.raises(NonFiniteStateError, match="the model state holds NaN/inf"):
        save_checkpoint(path, {"model": {"w": torch.tensor([1.0, float("nan")])}, "step": 2})
    with pytest.raises(NonFiniteStateError, match="the optimizer state holds NaN/inf"):
        save_checkpoint(path, {"model": {"w": torch.ones(2)},
                               "optimizer": {"state": {0: {"momentum_buffer": torch.tensor([float("inf")])}}}})
    assert path.read_bytes() == before


def test_a_failed_write_leaves_no_temporary_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "step": 1})
    before = path.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(CheckpointWriteError) as err:
        save_checkpoint(path, {"model": {"w": torch.zeros(1000)}, "step": 2})
    assert str(err.value) == f"could not write {path}: No space left on device; the previous checkpoint is kept"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.sha256"]  # no temporary


def _wait_until_catching(pid: int, sig: int, timeout: float = 60) -> None:
    """Until the process has a handler for ``sig`` (SigCgt in /proc): its stop handler is in."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":\t" in line)
        if int(fields["SigCgt"], 16) & (1 << (sig - 1)):
            return
        time.sleep(0.01)
    raise AssertionError("the process never installed its stop handler")


def test_a_signal_during_start_up_stops_cleanly_with_a_checkpoint(tmp_path, tiny_args):
    """SIGTERM while the command is still importing torch and building the trainer: exit 0."""
    proc = start_xferscale("pretrain", *tiny_args, f"output_dir={tmp_path}")
    _wait_until_catching(proc.pid, signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "stopped by signal" in stdout
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] >= 1


def test_a_signal_between_transfer_runs_stops_before_the_next_one(tmp_path):
    pretrained = load_pretrained(write_checkpoint(tmp_path / "ckpt.pt"))
    store = ResultStore(tmp_path / "results")
    with StopRequest() as stop:
        StopRequest._handle(signal.SIGUSR1, None)  # as if the signal came during the last evaluation
        assert stop.signum == signal.SIGUSR1
        with pytest.raises(Preempted, match="before run 1 of 2"):
            run_grid(pretrained, tensor_target(), [1, FULL], [0], FAST, store, torch.device("cpu"), log=lambda m: None)
    assert StopRequest().signum is None  # the record ends with the outermost block
    assert not list(store.root.rglob("seed-*.json"))  # no run started


def test_resume_of_a_finished_run_keeps_its_summary(tmp_path, tiny_args):
    run_xferscale("pretrain", *tiny_args, f"output_dir={tmp_path}")
    summary = (tmp_path / "summary.json").read_bytes()
    assert json.loads(summary)["finished"] is True
    again = run_xferscale("pretrain", *tiny_args, f"output_dir={tmp_path}", "--resume")
    assert "already finished (16 steps)" in again.stdout
    assert (tmp_path / "summary.json").read_bytes() == summary


def test_a_diverging_transfer_run_saves_no_non_finite_state(tmp_path):
    import dataclasses

    from xferscale.transfer.finetune import STATE_NAME, FineTuneError, finetune

    pretrained = load_pretrained(write_checkpoint(tmp_path / "ckpt.pt"))
    settings = dataclasses.replace(FAST, base_lr=1e12, agc_clip=0.0, checkpoint_every=1)
    with pytest.raises(FineTuneError, match="the state is not saved") as err:
        finetune(pretrained, tensor_target(), FULL, 0, settings, torch.device("cpu"), work_dir=tmp_path / "work")
    assert "became NaN/inf at step" in str(err.value) or "state holds NaN/inf" in str(err.value)
    state = tmp_path / "work" / STATE_NAME
    if state.exists():
        saved = torch.load(state, weights_only=False)
        assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())


def test_user_errors_are_one_line_not_a_traceback(tmp_path, tiny_args):
    ckpt_dir = tmp_path / "run"
    ckpt_dir.mkdir()
    (ckpt_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
    cases = [
        (("pretrain", *tiny_args, f"output_dir={ckpt_dir}", "--resume"), f"checkpoint {ckpt_dir / 'checkpoint.pt'} cannot be read"),
        (("pretrain", *tiny_args, "data.synthetic_samples=8", f"output_dir={tmp_path / 'b'}"),
         "data.synthetic_samples=8 is smaller than one global batch (16)"),
        (("pretrain", *tiny_args, "data.source=prepared", f"data.path={tmp_path}", "model.num_classes=null",
          f"output_dir={tmp_path / 'c'}"), "dataset.json"),
        (("transfer", "--checkpoint", str(tmp_path / "x.pt"), "--checkpoint-every", "0"), "--checkpoint-every must be"),
    ]
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the results folder should be")
    cases.append((("transfer", "--results", str(blocked / "sub")), f"cannot write results under {blocked / 'sub'}"))
    for args, message in cases:
        proc = run_xferscale(*args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert message in proc.stderr, (message, proc.stderr)


def test_a_checkpoint_whose_bytes_changed_is_refused(tmp_path):
    from xferscale.checkpoint import CheckpointReadError, digest_path, load_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(4096, dtype=torch.float32)}, "step": 3})
    assert load_checkpoint(path)["step"] == 3 and digest_path(path).is_file()
    data = bytearray(path.read_bytes())
    offset = data.find(torch.arange(4096, dtype=torch.float32).numpy().tobytes()[400:416])
    assert offset > 0
    data[offset] ^= 0x40  # one bit inside a tensor record: torch.load alone would not notice
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=False)["step"] == 3  # ... as this shows
    with pytest.raises(CheckpointReadError, match="is corrupt: its bytes changed after it was written"):
        load_checkpoint(path)


def test_a_crash_around_the_rename_leaves_a_loadable_checkpoint(tmp_path, monkeypatch):
    from xferscale.checkpoint import load_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1})

    def crash(src, dst):
        if str(dst) == str(path):
            raise SystemExit("killed before the rename")
        return real_replace(src, dst)

    real_replace = os.replace
    monkeypatch.setattr(os, "replace", crash)
    for _ in range(3):  # repeated crashes at the worst moment
        with pytest.raises(SystemExit):
            save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "step": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    assert load_checkpoint(path)["step"] == 1  # the previous checkpoint, still verified


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path, tiny_args):
    run_xferscale("pretrain", *tiny_args, "schedule.epochs=4", "train.max_steps=8", f"output_dir={tmp_path}")
    proc = run_xferscale("pretrain", *tiny_args, "schedule.epochs=4", "train.global_batch=32", "data.image_size=24",
                         f"output_dir={tmp_path}", "--resume", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{tmp_path / 'checkpoint.pt'} was written by another configuration" in proc.stderr
    assert "data.image_size (saved 16, now 24)" in proc.stderr and "train.global_batch (saved 16, now 32)" in proc.stderr
    # what does not change results may differ: more steps, another log interval
    ok = run_xferscale("pretrain", *tiny_args, "schedule.epochs=4", "train.log_every=4", f"output_dir={tmp_path}",
                       "--resume")
    assert "after 32 steps" in ok.stdout


def test_a_claimed_run_is_left_to_its_live_owner_and_a_dead_ones_is_taken_over(tmp_path):
    import socket

    from xferscale.results import RunKey

    store = ResultStore(tmp_path, stale_after_s=60)
    key = RunKey("synth", "tiny", "synth", 1, 0)
    claim = store.claim(key)
    assert claim is not None and store.claim(key) is None  # held by this live process
    claim.release()
    path = store.work_dir(key).with_suffix(".claim")
    path.write_text(json.dumps({"host": "jwb0042.juwels", "pid": 1, "job": "123"}))  # another node, fresh
    assert store.claim(key) is None
    old = time.time() - 120
    os.utime(path, (old, old))  # its heartbeat stopped two minutes ago
    taken = store.claim(key)
    assert taken is not None and json.loads(path.read_text())["pid"] == os.getpid()
    taken.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "job": None}))
    assert store.claim(key) is not None  # same host, process gone: taken over at once


GRID_JOB = """
import sys, torch
sys.path.insert(0, {tests!r})
from _transfer_fixtures import FAST, tensor_target, write_checkpoint
from xferscale.results import FULL, ResultStore
from xferscale.transfer.grid import run_grid
from xferscale.transfer.pretrained import load_pretrained
torch.set_num_threads(1)
out = run_grid(load_pretrained({ckpt!r}), tensor_target(), [1, 2, 3, FULL], [0, 1, 2], FAST, ResultStore({root!r}),
               torch.device("cpu"), log=lambda m: None)
print("RAN", " ".join(f"{{r.shots}}/{{r.seed}}" for r in out.ran))
"""


def test_two_jobs_on_one_results_folder_do_every_run_once(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt.pt")
    code = GRID_JOB.format(tests=str(Path(__file__).parent), ckpt=str(ckpt), root=str(tmp_path / "results"))
    jobs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [job.communicate(timeout=600) for job in jobs]
    assert all(job.returncode == 0 for job in jobs), [err for _, err in outputs]
    ran = [line.split()[1:] for out, _ in outputs for line in out.splitlines() if line.startswith("RAN")]
    done = [run for share in ran for run in share]
    assert len(done) == len(set(done)) == 12  # every run once, none twice
    assert len(list((tmp_path / "results").rglob("seed-*.json"))) == 12
    assert not list((tmp_path / "results").rglob("*.claim"))


def test_a_truncated_shard_is_named_before_training_starts(tmp_path, tiny_args):
    from _data_fixtures import write_tiny

    write_tiny(tmp_path / "ds", tmp_path / "raw", shard_size=7)
    shard = sorted((tmp_path / "ds").glob("train-*.tar"))[1]
    shard.write_bytes(shard.read_bytes()[:2000])  # a copy cut short
    proc = run_xferscale("pretrain", *tiny_args, "data.source=prepared", f"data.path={tmp_path / 'ds'}",
                         "model.num_classes=null", "train.global_batch=4", "data.workers=0",
                         f"output_dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{shard}: shard truncated (2000 bytes" in proc.stderr and f"dataset {tmp_path / 'ds'} is damaged" in proc.stderr
