"""The pre-training engine end to end, in real processes (gloo ranks under torchrun)."""
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from conftest import child_pids, load_weights, run_xferscale, start_xferscale
from xferscale.distributed import first_host, horovod_available, launch_env


def _assert_same_weights(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=atol, msg=f"weights differ at {key}")


def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(tmp_path, tiny_args):
    run_xferscale("pretrain", *tiny_args, f"output_dir={tmp_path / 'one'}")
    run_xferscale("pretrain", *tiny_args, f"output_dir={tmp_path / 'two'}", nproc=2)
    one, two = load_weights(tmp_path / "one"), load_weights(tmp_path / "two")
    _assert_same_weights(one, two)
    start = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)
    assert start["step"] == 16 and start["epoch"] == 2
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert len(summary["images_per_s_per_rank"]) == 2 and all(r > 0 for r in summary["images_per_s_per_rank"])
    assert summary["images_per_s_total"] == pytest.approx(sum(summary["images_per_s_per_rank"]))


def test_sigterm_checkpoint_and_resume_equal_an_uninterrupted_run(tmp_path, tiny_args):
    args = [*tiny_args, "schedule.epochs=6", "train.log_every=1"]
    run_xferscale("pretrain", *args, f"output_dir={tmp_path / 'full'}")

    out = tmp_path / "cut"
    proc = start_xferscale("pretrain", *args, f"output_dir={out}")
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "stopped by signal" in stdout
    cut = torch.load(out / "checkpoint.pt", weights_only=False)
    assert 5 <= cut["step"] < 48, "the run must stop mid-way, at a step boundary"

    resumed = run_xferscale("pretrain", *args, f"output_dir={out}", "--resume")
    assert "after 48 steps" in resumed.stdout
    _assert_same_weights(load_weights(tmp_path / "full"), load_weights(out), atol=0)


def _wait_for_steps(metrics: Path, lines: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= lines):
        time.sleep(0.05)


@pytest.mark.parametrize("nproc", [1, 2])
def test_a_stop_signal_is_acted_on_within_seconds_not_log_every_steps(tmp_path, tiny_args, nproc):
    """SIGUSR1 to one rank: every rank stops at the same step, long before the next log step
    (1000), the checkpoint is written, and the stop marker tells a job script to requeue."""
    out, marker = tmp_path / "run", tmp_path / "stopped"
    args = [*tiny_args, "schedule.epochs=400", "train.log_every=1000", "train.checkpoint_every=5",
            f"output_dir={out}"]
    proc = start_xferscale("pretrain", *args, nproc=nproc, env={"XFERSCALE_STOP_MARKER": str(marker)})
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.05)
    targets = child_pids(proc.pid) if nproc > 1 else [proc.pid]
    assert len(targets) == nproc
    os.kill(targets[-1], signal.SIGUSR1)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert 5 <= state["step"] < 1000 and "stopped by signal" in stdout
    assert marker.read_text().startswith("stopped by signal")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_signal"] and not summary["finished"] and summary["steps"] == state["step"]


def test_stop_poll_interval_follows_the_agreed_step_time():
    from xferscale.distributed import DistEnv
    from xferscale.trainer import _StopPoll

    poll = _StopPoll(DistEnv(rank=0, world_size=4), seconds=5.0)
    assert poll.interval == 1 and poll.due(7)
    poll.retune(images_per_s_total=640.0, local_batch=16)  # 64 images a step: 0.1 s
    assert poll.interval == 50 and poll.due(100) and not poll.due(101)
    poll.retune(images_per_s_total=32.0, local_batch=16)  # 2 s a step
    assert poll.interval == 2


def test_nan_loss_stops_with_the_step_named(tmp_path, tiny_args):
    proc = run_xferscale("pretrain", *tiny_args, "optim.base_lr=1e12", "optim.agc_clip=0", f"output_dir={tmp_path}", check=False)
    assert proc.returncode == 3
    assert "loss became NaN/inf at step" in proc.stderr
    step = int(proc.stderr.split("at step ")[1].split()[0])
    assert 0 <= step < 16


def test_default_run_writes_a_checkpoint_for_transfer(tmp_path, tiny_args):
    proc = run_xferscale("pretrain", *tiny_args, f"output_dir={tmp_path}")
    assert "images/s in total" in proc.stdout
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["model_name"] == "tiny" and state["num_classes"] == 128 and state["task"] == "multiclass"
    assert state["train_samples"] == 128  # the source's real size, for the report's power laws
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if row["kind"] == "train"] == list(range(2, 17, 2))


def test_multilabel_bce_run_with_unknown_labels(tmp_path, tiny_args):
    run_xferscale("pretrain", *tiny_args, "data.source=synthetic", "train.loss=sigmoid_bce", f"output_dir={tmp_path}")
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["task"] == "multilabel"


def test_bad_config_exits_2_with_the_key(tmp_path):
    proc = run_xferscale("pretrain", "train.global_batch=0", f"output_dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "train.global_batch: must be > 0" in proc.stderr


def test_srun_launch_variables():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "jwb[0012-0013]"}
    info = launch_env(env)
    assert (info["rank"], info["world_size"], info["local_rank"], info["master_addr"]) == (5, 8, 1, "jwb0012")
    assert launch_env({**env, "MASTER_ADDR": "jwb0012i"})["master_addr"] == "jwb0012i"
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3", **env}
    assert launch_env(torchrun)["rank"] == 3  # torchrun's own variables win over SLURM's
    assert launch_env({})["world_size"] == 1
    assert first_host("jwc00n001") == "jwc00n001"
    assert first_host("jwb[0100,0007-0009],jwc01") == "jwb0100"


@pytest.mark.skipif(not horovod_available(), reason="Horovod is not installed (scripts/install_horovod.sh builds it)")
def test_horovod_backend_runs_two_processes(tmp_path, tiny_args):
    import shutil
    import subprocess
    import sys

    # horovodrun is installed beside the interpreter that imports horovod, which may not be on PATH
    horovodrun = shutil.which("horovodrun", path=str(Path(sys.executable).parent)) or shutil.which("horovodrun")
    assert horovodrun, "horovod is importable but horovodrun is neither beside the interpreter nor on PATH"
    cmd = [horovodrun, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-m", "xferscale.cli", "pretrain",
           *tiny_args, "distributed.backend=horovod", f"output_dir={tmp_path / 'hvd'}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    run_xferscale("pretrain", *tiny_args, f"output_dir={tmp_path / 'one'}")
    _assert_same_weights(load_weights(tmp_path / "one"), load_weights(tmp_path / "hvd"))
