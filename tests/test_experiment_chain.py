"""The full-mode experiment chain as it runs on JUWELS Booster: real ReFrame with
``checks/config/juwels_booster.py`` unchanged, on the CI's two-node SLURM cluster
(``scripts/ci/slurm-cluster.sh``), the image run by the apptainer stand-in, the tiny model on
stroke glyphs, one GPU's worth of ranks on a develbooster node (``-S gpus=1``).

One chain serves every assertion (it is the CI's slowest test, about 2.5 minutes): its first
attempt is signalled as at a time limit (``scancel --signal=USR1``, what ``--signal=USR1@lead``
sends) and requeues; during the second the ReFrame session that submitted it is killed with
SIGKILL and the job is signalled again. A second session, started while the chain is live,
must not start another chain: its job waits for the chain to end and then runs the re-run
of a finished experiment (``pretrain --resume`` finds it finished), which must pass, sanity
and performance, from the kept summary. Skipped where the cluster cannot start (under
``CI=true``, a failure).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import REPO, Job, Slurm, cluster_or_skip

CONFIG = "r50x1_in1k"
EPOCHS, STEPS_PER_EPOCH = 20, 8  # 128 glyphs per epoch at batch 16: 160 steps, ~15 s on the CI machine
TINY = ["model.name=tiny", "data.source=strokes", "data.image_size=16", "data.synthetic_samples=128",
        "train.global_batch=16", f"schedule.epochs={EPOCHS}", "schedule.warmup_steps=null", "schedule.warmup_epochs=1",
        "train.warmup_exclude=2", "train.log_every=2", "train.progress=false", "train.precision=fp32",
        "data.backend=torch", "data.workers=0"]


@pytest.fixture(scope="module")
def slurm() -> Slurm:
    return cluster_or_skip()


class Sessions:
    """ReFrame sessions of one experiment root, each writing its output to a file."""

    def __init__(self, slurm: Slurm, tmp: Path):
        self.tmp, self.count = tmp, 0
        image = tmp / "xferscale.sif"
        image.write_text("stand-in image: scripts/ci/apptainer runs its commands on the host\n")
        self.env = {k: v for k, v in slurm.env.items() if not k.startswith("RFM_")}
        self.env.update(RFM_CONFIG_FILES=str(REPO / "checks" / "config" / "juwels_booster.py"),
                        XFERSCALE_MODULES_SYSTEM="nomod", SCRATCH=str(tmp / "scratch"), XFERSCALE_IMAGE=str(image),
                        XFERSCALE_EXPERIMENT_ROOT=str(tmp / "experiments"), XFERSCALE_PERFLOGS=str(tmp / "perflogs"),
                        RFM_POLL_RATE_MIN="0.5")  # sacct at least every 2 s, not every 10
        self.run_dir = tmp / "experiments" / "pretrain" / "full" / f"{CONFIG}-1gpu"

    def start(self) -> tuple[subprocess.Popen, Path]:
        self.count += 1
        out = self.tmp / f"reframe-{self.count}.out"
        reframe = "import sys; from reframe.frontend.cli import main; sys.argv[0] = 'reframe'; main()"
        cmd = [sys.executable, "-c", reframe, "-c", str(REPO / "checks" / "experiments.py"),
               "--system", "juwels_booster:develbooster", "-r", "-n", f"PretrainExperiment.*%config={CONFIG}$",
               "-S", "mode=full", "-S", "gpus=1", "-S", "extra_overrides=" + ",".join(TINY),
               "-S", "chain_job_time=00:15:00", "-S", "signal_lead_s=60", "--prefix", str(self.tmp / "rfm"),
               "--nocolor"]
        with open(out, "w") as log:
            return subprocess.Popen(cmd, cwd=self.tmp, env=self.env, stdout=log, stderr=subprocess.STDOUT), out

    def finish(self, proc: subprocess.Popen, out: Path, timeout: float = 300) -> str:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"ReFrame did not end in {timeout} s:\n{out.read_text()[-3000:]}") from None
        text = out.read_text()
        assert proc.returncode == 0, text[-4000:]
        return text

    def chain_job(self) -> Job | None:
        path = self.run_dir / "chain.job"
        return Job(path.read_text().strip(), Path(os.devnull)) if path.is_file() else None


def train_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [r["step"] for r in rows if r.get("kind", "train") == "train"]


def wait_until(what: str, condition, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.3)


def restarts(slurm: Slurm, job: Job) -> int:
    return int(slurm.field(job, "Restarts"))


def sacct_times(slurm: Slurm, job: Job) -> tuple[str, str]:
    out = slurm.run("sacct", "-j", job.id, "-X", "-n", "-P", "-o", "Start,End").stdout.splitlines()
    start, end = out[-1].split("|")  # the last attempt
    return start, end


def test_chain_requeues_survives_a_killed_session_and_its_rerun_passes(slurm, tmp_path):
    sessions = Sessions(slurm, tmp_path)
    started = time.time()
    first, first_out = sessions.start()
    jobs: list[Job] = []
    try:
        def submitted() -> bool:
            assert first.poll() is None, f"ReFrame ended before submitting:\n{first_out.read_text()[-4000:]}"
            return sessions.chain_job() is not None

        wait_until("chain.job", submitted)
        chain = sessions.chain_job()
        jobs.append(chain)
        # attempt 0: well into training, then the time-limit signal -> checkpoint -> requeue
        wait_until("training", lambda: len(train_steps(sessions.run_dir)) >= 1)
        slurm.run("scancel", "--signal=USR1", chain.id)
        wait_until("the first requeue", lambda: restarts(slurm, chain) == 1)
        cut = max(train_steps(sessions.run_dir))
        wait_until("training after the first requeue", lambda: max(train_steps(sessions.run_dir)) > cut)
        # the session dies without cleanup; the chain goes on and is signalled again
        first.send_signal(signal.SIGKILL)
        first.wait()
        slurm.run("scancel", "--signal=USR1", chain.id)
        wait_until("the second requeue", lambda: restarts(slurm, chain) == 2)

        second, second_out = sessions.start()  # while the chain is live
        text = sessions.finish(second, second_out, timeout=400)
        waiter = sessions.chain_job()
        jobs.append(waiter)
        assert waiter.id != chain.id
        assert re.search(rf"job {chain.id} \((PENDING|RUNNING)\) of {re.escape(str(sessions.run_dir))} is still live",
                         text), text[-3000:]
        assert slurm.wait(chain) == "COMPLETED" and restarts(slurm, chain) == 2
        # one chain: the waiting job started once the chain had ended, and only confirmed it
        assert sacct_times(slurm, waiter)[0] >= sacct_times(slurm, chain)[1]
        stage_out = next((tmp_path / "rfm" / "output").rglob("rfm_job.out")).read_text()
        assert f"{CONFIG}: already finished ({EPOCHS * STEPS_PER_EPOCH} steps)" in stage_out
        steps = train_steps(sessions.run_dir)
        assert steps == sorted(set(steps)) and max(steps) == EPOCHS * STEPS_PER_EPOCH, steps  # every step once
        summary = json.loads((sessions.run_dir / "summary.json").read_text())
        assert summary["finished"] and summary["world_size"] == 1
        record = json.loads((sessions.run_dir / "experiment.json").read_text())
        assert record["gpus"] == 1 and record["paper_gpus"] == 64
        assert record["deviation"].startswith("1 GPU instead of the paper's 64: global batch 16 instead of")
        assert not (sessions.run_dir / "xferscale.stopped").exists()
        perflog = "".join(p.read_text() for p in (tmp_path / "perflogs").rglob("*.log"))
        assert "[  PASSED  ]" in text and "throughput_total" in perflog and "projected_gpu_hours" in perflog
    finally:
        for job in jobs:
            slurm.run("scancel", job.id, check=False)
        if first.poll() is None:
            first.kill()
        print(f"chain test: {time.time() - started:.0f} s")


# -- the run directory's lock, without a cluster ------------------------------------------------

def test_a_second_session_is_told_who_holds_the_run_and_a_killed_holder_leaves_no_lock(tmp_path):
    from xferscale.checklib.chain import ChainError, RunChain

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from xferscale.checklib.chain import RunChain; "
                               f"RunChain({str(tmp_path)!r}).lock(); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ChainError, match=rf"ReFrame pid {holder.pid} on \S+ since .* runs this experiment"):
            RunChain(tmp_path).lock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    chain = RunChain(tmp_path)
    chain.lock()  # the kernel released the dead session's lock
    chain.unlock()
    assert RunChain(tmp_path).tag == RunChain(tmp_path / ".").tag != RunChain(tmp_path / "other").tag
