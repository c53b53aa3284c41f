"""A stop signal to the whole job step (SLURM signals every process of it): loader workers
outlive it, the main process saves its state and exits 0, whenever the signal lands."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _data_fixtures import write_tiny
from conftest import _env, process_stats, start_xferscale, xferscale_cmd
from test_reliability import _wait_until_catching

TRIES = 20
AT_ONCE = 3  # jobs in flight together: the loop stays short on a small machine


def _group_members(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` (the command, its fork server, its workers)."""
    return [pid for pid, fields in process_stats() if int(fields[2]) == pgid and fields[0] != "Z"]


def _catching(pid: int, sig: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (sig - 1)))


class _Job:
    """``xferscale pretrain`` in its own process group, signalled once a moment is reached."""

    def __init__(self, args: list[str], out: Path, moment: str, delay: float):
        self.out, self.moment, self.delay = out, moment, delay
        self.log = open(out.with_suffix(".log"), "w+")
        self.proc = subprocess.Popen(xferscale_cmd("pretrain", *args, f"output_dir={out}"), stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True, env=_env(), start_new_session=True)
        self.signalled_at: float | None = None

    def moment_reached(self) -> bool:
        pid = self.proc.pid
        if self.moment == "start-up":  # the stop handler is in; torch may still be importing
            return _catching(pid, signal.SIGTERM)
        if self.moment == "worker start":  # the fork server or the first workers are being started
            return len(_group_members(pid)) >= 2
        metrics = self.out / "metrics.jsonl"  # mid-epoch: training
        return metrics.is_file() and metrics.stat().st_size > 0

    def poll(self) -> bool:
        """Signal the group when due; True once the job has ended."""
        if self.proc.poll() is not None:
            return True
        if self.signalled_at is None and self.moment_reached():
            if self.delay:
                time.sleep(self.delay)
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.signalled_at = time.monotonic()
        return False

    def outcome(self) -> str:
        self.log.seek(0)
        return f"{self.moment} +{self.delay:.2f}s: exit {self.proc.returncode}\n{self.log.read()[-1500:]}"


@pytest.mark.slow
def test_a_stop_signal_to_the_whole_group_never_kills_a_loader_worker(tmp_path):
    """SIGTERM to the process group (command, fork server, two workers) at start-up, while the
    workers start and mid-epoch, each with a varied delay: every try checkpoints and exits 0."""
    data = write_tiny(tmp_path / "ds", tmp_path / "raw")
    args = ["train.progress=false", "data.source=prepared", f"data.path={data}", "model.num_classes=null",
            "data.image_size=16", "train.global_batch=4", "data.workers=2", "train.max_steps=100000",
            "train.log_every=2", "train.validate=false", "train.stop_check_seconds=0.05",
            "train.checkpoint_every=100000"]
    moments = ["start-up", "worker start", "mid-epoch"]
    rng = random.Random(0)
    plan = [(moments[i % 3], rng.choice([0.0, 0.0, 0.02, 0.1, 0.3])) for i in range(TRIES)]
    pending, running, failures = list(enumerate(plan)), [], []
    deadline = time.monotonic() + 600
    while (pending or running) and time.monotonic() < deadline:
        while pending and len(running) < AT_ONCE:
            i, (moment, delay) = pending.pop(0)
            running.append(_Job(args, tmp_path / f"run{i}", moment, delay))
        for job in [job for job in running if job.poll()]:
            running.remove(job)
            summary = job.out / "summary.json"
            stopped = summary.is_file() and json.loads(summary.read_text())
            if not (job.proc.returncode == 0 and job.signalled_at and stopped and stopped["stopped_by_signal"]
                    and stopped["steps"] >= 1 and (job.out / "checkpoint.pt").is_file()):
                failures.append(job.outcome())
            job.log.close()
        time.sleep(0.005)
    for job in running:
        os.killpg(job.proc.pid, signal.SIGKILL)
        job.proc.wait()
        failures.append("did not end: " + job.outcome())
    failures += [f"not started in time: try {i}" for i, _ in pending]
    assert not failures, f"{len(failures)} of {TRIES} tries failed:\n" + "\n".join(failures)


# A process started like a loader worker: from the loader's fork server, with the worker init.
WORKER_SCRIPT = """
import os, signal, sys, time
from xferscale.preemption import loader_context, obey_only_main_process


def worker(main_pid, born, ready):
    born.set()
    time.sleep(0.5)  # the group is signalled now, before the worker init
    obey_only_main_process(main_pid)
    ready.set()
    time.sleep(120)


def noop():
    pass


if __name__ == "__main__":
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):  # the main process outlives them too
        signal.signal(sig, lambda *_: None)
    ctx = loader_context()
    born, ready = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=worker, args=(os.getpid(), born, ready), daemon=True)
    proc.start()
    born.wait(60)
    print("born", flush=True)
    assert ready.wait(60)
    sys.stdin.readline()  # the group was signalled again, after the worker init
    second = ctx.Process(target=noop)  # the fork server is alive and forks
    second.start()
    second.join(60)
    print("alive", proc.is_alive(), "second", second.exitcode, flush=True)
    proc.terminate()  # the main process's SIGTERM ends it (the loader's shutdown, the exit)
    proc.join(10)
    print("terminated", proc.exitcode, flush=True)
"""


def test_loader_workers_and_their_fork_server_obey_only_the_main_process(tmp_path):
    script = tmp_path / "worker_signals.py"
    script.write_text(WORKER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "born"
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):  # before the worker init
            os.killpg(proc.pid, sig)
        time.sleep(0.8)
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):  # after it
            os.killpg(proc.pid, sig)
        time.sleep(0.2)
        stdout, stderr = proc.communicate("\n", timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    assert stdout.splitlines() == ["alive True second 0", "terminated 0"], stderr


def test_a_stop_signal_then_a_kill_leave_no_file_behind(tmp_path, tiny_args):
    """SLURM's SIGTERM, then its SIGKILL at the end of the grace period: nothing stale in the
    temporary folder (the stop is recorded in memory only)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = start_xferscale("pretrain", *tiny_args, f"output_dir={tmp_path / 'run'}", env={"TMPDIR": str(tmp)})
    try:
        _wait_until_catching(proc.pid, signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the handler ran
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("xferscale")]
