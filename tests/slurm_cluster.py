"""Client side of the CI's real SLURM cluster (``scripts/ci/slurm-cluster.sh``): submit,
wait, signal, read accounting. The tests reach it through the ``slurm`` fixture."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STANDINS = REPO / "scripts" / "ci"  # the apptainer stand-in
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def unavailable_reason() -> str | None:
    """Why the cluster cannot be used here, or None."""
    if os.environ.get("XFERSCALE_SLURM_UNAVAILABLE"):
        return f"SLURM cluster could not start: {os.environ['XFERSCALE_SLURM_UNAVAILABLE']}"
    if not os.environ.get("SLURM_CONF"):
        return "no SLURM cluster: run the tests through scripts/ci/with-slurm.sh (`make test` does)"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"SLURM_CONF={os.environ['SLURM_CONF']} but the controller does not answer: {ping.stdout.strip()}"
    return None


def job_environment() -> dict[str, str]:
    """What a submitting user's shell holds: the suite's venv and the apptainer stand-in on
    PATH (the stand-in runs the "image" command in XFERSCALE_IMAGE_PATH, the venv's)."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "PYTEST_")) or k == "SLURM_CONF"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(PATH=f"{STANDINS}:{venv_bin}:{env['PATH']}", XFERSCALE_IMAGE_PATH=f"{venv_bin}:/usr/bin:/bin",
               PYTHONUNBUFFERED="1")
    return env


@dataclass
class Job:
    id: str
    log: Path

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


class Slurm:
    def __init__(self) -> None:
        self.env = job_environment()

    def run(self, *argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def submit(self, script: Path, log: Path) -> Job:
        proc = self.run("sbatch", "--parsable", f"--chdir={script.parent}", f"--output={log}", str(script))
        return Job(proc.stdout.strip().split(";")[0], log)

    def field(self, job: Job, name: str) -> str:
        """One field of `scontrol show job` (the job stays known for MinJobAge = 600 s)."""
        out = self.run("scontrol", "show", "job", job.id, "-o").stdout
        for word in out.split():
            key, _, value = word.partition("=")
            if key == name:
                return value
        raise AssertionError(f"job {job.id}: no field {name} in {out!r}")

    def accounting_state(self, job: Job) -> str:
        out = self.run("sacct", "-j", job.id, "-X", "-n", "-P", "-o", "State").stdout
        lines = [line.split() for line in out.splitlines() if line.strip()]
        return lines[-1][0] if lines else ""  # "CANCELLED by 0" -> CANCELLED

    def settled_accounting_state(self, job: Job, controller_state: str, timeout: float = 30) -> str:
        """sacct's final state: slurmdbd learns of the end after slurmctld (the first job of a new
        cluster lagged by seconds), so it may still say RUNNING when scontrol says COMPLETED."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.accounting_state(job)
            if state in FINAL_STATES:
                return state
            time.sleep(0.5)
        return controller_state

    def wait(self, job: Job, timeout: float = 300) -> str:
        """Wait until the job ends (through any requeues); its final state, from sacct."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.field(job, "JobState")
            if state in FINAL_STATES:
                return self.settled_accounting_state(job, state)
            time.sleep(1)
        self.run("scancel", job.id, check=False)
        raise AssertionError(f"job {job.id} did not end in {timeout} s; log:\n{job.text()[-3000:]}")

    def wait_for_text(self, job: Job, text: str, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while text not in job.text():
            state = self.field(job, "JobState")
            assert state not in FINAL_STATES, f"job {job.id} ended ({state}) before printing {text!r}:\n{job.text()[-3000:]}"
            assert time.time() < deadline, f"job {job.id}: no {text!r} in {timeout} s:\n{job.text()[-3000:]}"
            time.sleep(0.5)


def cluster_or_skip() -> Slurm:
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, so the SLURM cluster tests must run: {reason}")
        pytest.skip(reason)
    return Slurm()
