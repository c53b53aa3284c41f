"""At most one live job per experiment run directory.

A full-mode experiment is a chain of requeued jobs that outlives the ReFrame session that
submitted it: a session killed without cleanup (kill -9, a login-node reboot, OOM) leaves
its job queued or running, and a re-run must not start a second chain on the same
checkpoint. Two things keep the jobs of a run directory one after the other:

- a session holds ``<run dir>/chain.lock`` (``flock``) from before it submits until its
  job has ended; the kernel releases the lock when the session dies, so a killed session
  leaves no stale lock, and a second live session on the same directory is told which
  session runs it;
- every job carries the directory's tag as its SLURM comment (``--comment``), so a session
  that takes the lock finds the jobs an earlier, dead session left (``squeue``: queued,
  running or requeued) and submits its own with ``--dependency=afterany:<ids>``: SLURM
  starts it once they have ended for good, through any requeues, and its ``--resume``
  continues an unfinished run or confirms a finished one.

Each job writes its id to ``<run dir>/chain.job`` when it starts, for the people watching it.
"""
from __future__ import annotations

import fcntl
import getpass
import hashlib
import os
import shlex
import socket
import subprocess
import time
from pathlib import Path

CHAIN_JOB = "chain.job"
CHAIN_LOCK = "chain.lock"


class ChainError(RuntimeError):
    """The run directory's jobs cannot be checked, or another session runs them; the message says why."""


class RunChain:
    """The jobs of one run directory: the session's lock, the live jobs, their tag."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.dir = Path(run_dir)
        self._lock_fd: int | None = None

    @property
    def tag(self) -> str:
        """The SLURM comment of the directory's jobs (no spaces or quotes: a path may have them)."""
        return "xferscale-chain-" + hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:16]

    def lock(self) -> None:
        """Hold the directory for this session, or raise naming the session that holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / CHAIN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another session"
            os.close(fd)
            raise ChainError(f"{holder} runs this experiment ({self.dir / CHAIN_LOCK}); "
                             "re-run once it has ended") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"ReFrame pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def live_jobs(self) -> list[tuple[str, str]]:
        """(id, state) of the directory's jobs that are queued, running or requeued."""
        cmd = ["squeue", "-h", "-u", getpass.getuser(), "-o", "%i|%T|%k"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ChainError(f"{' '.join(cmd)}: {err}") from err
        if proc.returncode != 0:
            raise ChainError(f"{' '.join(cmd)}: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
        jobs = [line.split("|", 2) for line in proc.stdout.splitlines() if line.count("|") >= 2]
        return [(job, state) for job, state, comment in jobs if comment.strip() == self.tag]

    def record_command(self) -> str:
        """Shell line for the job's start: its id into ``chain.job`` (written whole, then renamed)."""
        final = shlex.quote(str(self.dir / CHAIN_JOB))
        tmp = shlex.quote(str(self.dir / f".{CHAIN_JOB}.")) + '"$SLURM_JOB_ID"'
        return f'echo "$SLURM_JOB_ID" > {tmp} && mv -f {tmp} {final}'
