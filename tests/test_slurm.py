"""`xferscale slurm`: generated sbatch scripts, their requeue logic, and bad requests.

The scripts are checked as text (`bash -n`, #SBATCH options, exports) and run under bash
with stand-ins for the cluster's commands on PATH: `scontrol` (host list, requeue), `srun`
(runs its command and passes signals on, as srun does), `apptainer run` (drops its options and
the image) and a trainer in place of `xferscale` that checkpoints and exits 0 on SIGUSR1.
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
import torch

from xferscale.cli import main
from xferscale.cluster import JUWELS_BOOSTER, SiteError, slurm_seconds
from xferscale.sbatch import JobSpec, render_sbatch


def generate(capsys, *argv: str) -> str:
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)  # after `--`, words go to the command
    assert main(["slurm", *argv[:cut], "--dry-run", *argv[cut:]]) == 0
    return capsys.readouterr().out


def sbatch_options(script: str) -> dict[str, str]:
    options = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = line[len("#SBATCH "):].partition("=")
            options[key] = value
    return options


@pytest.mark.parametrize("nodes", [1, 16, 256])
def test_pretrain_script_layout(capsys, tmp_path, nodes):
    script = generate(capsys, "pretrain", "--nodes", str(nodes), "--account", "jscbench",
                      "--", "--config", "r152x4_in21k", "train.precision=tf32")
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)

    options = sbatch_options(script)
    assert options["--nodes"] == str(nodes)
    assert options["--ntasks-per-node"] == "4"
    assert options["--gres"] == "gpu:4"
    assert options["--cpus-per-task"] == "12"
    assert options["--partition"] == "booster"
    assert options["--account"] == "jscbench"
    assert options["--time"] == "24:00:00"
    assert options["--signal"] == "B:USR1@300"
    assert "--requeue" in options and "--open-mode" in options
    assert f"{4 * nodes} ranks" in script.splitlines()[1]

    for line in ("export NCCL_SOCKET_IFNAME=ib0", "export GLOO_SOCKET_IFNAME=ib0", "export MASTER_PORT=29500",
                 "export PYTHONNOUSERSITE=1", 'export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"',
                 'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)i"'):
        assert line in script.splitlines(), line
    step = re.search(r"^srun .*?&$", script, re.M | re.S).group(0)
    assert "--cpu-bind=none" in step
    assert 'apptainer run --nv --cleanenv "$IMAGE"' in step
    assert """bash -c 'trap "" USR1; for v in SLURM_PROCID SLURM_LOCALID""" in step and "NCCL_SOCKET_IFNAME" in step
    assert step.endswith("pretrain --resume --config r152x4_in21k train.precision=tf32 &")
    assert 'scontrol requeue "$SLURM_JOB_ID"' in script


def test_header_uses_the_site_launch_settings(capsys):
    # The ReFrame site config reads the same JUWELS_BOOSTER object.
    script = generate(capsys, "pretrain", "--nodes", "2")
    for option in JUWELS_BOOSTER.job_options():
        assert f"#SBATCH {option}" in script
    for option in JUWELS_BOOSTER.launcher_options():
        assert option in re.search(r"^srun .*$", script, re.M).group(0)
    for key, value in JUWELS_BOOSTER.launch_env().items():
        assert f"export {key}={value}" in script


def test_bench_job_runs_once_without_requeue(capsys):
    script = generate(capsys, "bench", "--nodes", "2", "--partition", "develbooster", "--time", "00:30:00",
                      "--bind", "/p/scratch", "--", "train", "--model", "r50x1")
    options = sbatch_options(script)
    assert "--no-requeue" in options and "--signal" not in options and "--requeue" not in options
    assert "forward USR1" not in script and "--resume" not in script
    assert options["--time"] == "00:30:00"
    assert 'apptainer run --nv --cleanenv --bind /p/scratch "$IMAGE"' in script
    assert "# No --account given" in script


def test_transfer_job_requeues_and_resumes_by_itself(capsys):
    script = generate(capsys, "transfer", "--nodes", "1", "--env", "NCCL_DEBUG=INFO", "--",
                      "--target", "cifar10", "--checkpoint", "/p/scratch/x/checkpoint.pt")
    options = sbatch_options(script)
    assert options["--signal"] == "B:USR1@300" and "--requeue" in options
    assert "--resume" not in script  # a transfer grid skips finished runs and resumes the rest itself
    assert "trap 'forward USR1' USR1" in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
    step = re.search(r"^srun .*?&$", script, re.M | re.S).group(0)
    assert " NCCL_DEBUG;" in step  # an extra variable is passed into the clean container too


def test_task_env_wrapper_exports_each_tasks_own_variables():
    """What --cleanenv lets through: APPTAINERENV_<name> of the variables set in the task."""
    import subprocess

    from xferscale.cluster import pass_env_wrapper

    words = pass_env_wrapper(("SLURM_PROCID", "MASTER_ADDR", "NOT_SET_HERE"))
    env = {"PATH": os.environ["PATH"], "SLURM_PROCID": "3", "MASTER_ADDR": "jwb0001i"}
    out = subprocess.run([*words, "env"], env=env, capture_output=True, text=True, check=True).stdout
    assert "APPTAINERENV_SLURM_PROCID=3" in out.splitlines() and "APPTAINERENV_MASTER_ADDR=jwb0001i" in out
    assert "NOT_SET_HERE" not in out


def test_arguments_are_quoted_for_the_shell(capsys):
    script = generate(capsys, "pretrain", "--nodes", "1", "--image", "/p/images/xfer scale.sif",
                      "--env", "NCCL_DEBUG=INFO", "--", "name=a b; rm -rf /", "$IMAGE")
    assert "IMAGE='/p/images/xfer scale.sif'" in script
    assert "'name=a b; rm -rf /' '$IMAGE' &" in script
    assert "export NCCL_DEBUG=INFO" in script


def test_writes_the_script_file(tmp_path, capsys):
    out = tmp_path / "jobs" / "r50.sbatch"
    assert main(["slurm", "pretrain", "--nodes", "4", "--output", str(out)]) == 0
    assert sbatch_options(out.read_text())["--nodes"] == "4"
    assert os.access(out, os.X_OK)
    assert f"sbatch {out}" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["r50.sbatch"]  # no temporary left


# --- bad requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pretrain", "--nodes", "0"], "--nodes must be at least 1, got 0"),
        (["pretrain", "--nodes", "2", "--partition", "gpus"],
         "unknown partition 'gpus' on juwels_booster; choose one of: booster, develbooster"),
        (["pretrain", "--nodes", "5", "--partition", "develbooster"],
         "--nodes 5 exceeds the 4-node limit of partition 'develbooster'"),
        (["pretrain", "--nodes", "1", "--time", "25:00:00"], "--time 25:00:00 exceeds the 24:00:00 limit"),
        (["pretrain", "--nodes", "1", "--time", "1h"], "time limit '1h' is not a SLURM time"),
        (["pretrain", "--nodes", "1", "--account", "my project"], "--account 'my project' is not a SLURM account"),
        (["bench", "--nodes", "1", "--requeue"], "`xferscale bench` cannot resume from a checkpoint"),
        (["pretrain", "--nodes", "1", "--time", "00:04:00"], "--signal-lead 300 s must be above 0 and below"),
        # SLURM may signal up to 60 s early: a 300 s lead needs more than 6 minutes
        (["pretrain", "--nodes", "1", "--time", "00:06:00"], "up to 60 s before the lead"),
        (["pretrain", "--nodes", "1", "--job-name", "my run"], "--job-name 'my run': use letters"),
        (["pretrain", "--nodes", "1", "--env", "NCCL_DEBUG"], "--env 'NCCL_DEBUG': expected KEY=VALUE"),
        (["pretrain", "--nodes", "1", "--env", "1X=2"], "--env '1X' is not an environment variable name"),
    ],
)
def test_bad_requests_name_the_problem(capsys, argv, message):
    assert main(["slurm", *argv, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_missing_nodes_and_unknown_command_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["slurm", "pretrain", "--dry-run"])
    assert exit_info.value.code == 2
    assert "--nodes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["slurm", "prepare", "--nodes", "1"])
    assert "invalid choice: 'prepare'" in capsys.readouterr().err


@pytest.mark.parametrize("text, seconds", [("30", 1800), ("10:30", 630), ("02:00:00", 7200),
                                           ("1-00:00:00", 86400), ("1-2", 93600)])
def test_slurm_time_formats(text, seconds):
    assert slurm_seconds(text) == seconds


def test_render_refuses_unknown_command():
    with pytest.raises(SiteError, match="unknown command 'report'"):
        render_sbatch(JUWELS_BOOSTER, JobSpec(command="report", nodes=1))


# --- running the script: signal forwarding, checkpoint, requeue --------------------------------------

SRUN = """#!/usr/bin/env bash
# srun: drop its options, run the command, pass USR1/TERM on to it (as srun does to its tasks)
while [[ "$1" == --* ]]; do shift; done
"$@" &
child=$!
trap 'kill -USR1 $child' USR1
trap 'kill -TERM $child' TERM
wait $child; status=$?
while kill -0 $child 2>/dev/null; do wait $child; status=$?; done
exit $status
"""
APPTAINER = """#!/usr/bin/env bash
# apptainer run [--nv] [--bind X]... IMAGE ARGS: what %runscript does, minus the container
[[ "$1" == run ]] || exit 97
shift
while [[ "$1" == --* ]]; do [[ "$1" == --bind ]] && shift; shift; done
[[ -r "$1" ]] || exit 98
shift
exec xferscale "$@"
"""
SCONTROL = """#!/usr/bin/env bash
case "$1" in
    show) printf 'jwb0001\\n'; for i in $(seq 2 4000); do printf 'jwb%04d\\n' "$i"; done ;;
    requeue) echo "$2" >> "$STUB_OUT/requeued" ;;
    *) exit 99 ;;
esac
"""
TRAINER = """#!{python}
import json, os, pathlib, signal, sys, time
out = pathlib.Path(os.environ["STUB_OUT"])
def checkpoint(signum, frame):
    (out / "checkpoint.pt").write_text(str(signum))
    sys.exit(int(os.environ.get("STUB_EXIT_AFTER_SIGNAL", "0")))
signal.signal(signal.SIGUSR1, checkpoint)
keys = ("MASTER_ADDR", "MASTER_PORT", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "SRUN_CPUS_PER_TASK")
(out / "run.json").write_text(json.dumps({{"argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in keys}}}}))
(out / "started").touch()
deadline = time.time() + float(os.environ.get("STUB_RUN_S", "0"))
while time.time() < deadline:
    time.sleep(0.02)
sys.exit(int(os.environ.get("STUB_EXIT", "0")))
"""


REAL_TRAINER = """#!/bin/sh
exec {python} -m xferscale.cli "$@"
"""


def _cluster(tmp_path: Path, capsys, trainer: str, job_args: list[str]) -> tuple[Path, dict[str, str], Path]:
    """A generated 1-node pretrain script and an environment that runs it like sbatch would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"srun": SRUN, "apptainer": APPTAINER, "scontrol": SCONTROL,
                       "xferscale": trainer.format(python=sys.executable)}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    image = tmp_path / "xferscale.sif"
    image.write_bytes(b"SIF")
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "job.sbatch"
    script.write_text(generate(capsys, "pretrain", "--nodes", "2", "--image", str(image),
                               "--max-restarts", "3", "--", *job_args))
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID")}
    env.update({
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_OUT": str(out),
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "jwb[0001-0002]", "SLURM_CPUS_PER_TASK": "12",
        "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "4",
    })
    return script, env, out


@pytest.fixture
def cluster(tmp_path, capsys):
    return _cluster(tmp_path, capsys, TRAINER, ["--config", "r50x1_in21k"])


def run_job(script: Path, env: dict[str, str], out: Path, send: int | None = None,
            ready=lambda out: (out / "started").exists(), timeout: float = 30) -> subprocess.CompletedProcess:
    job = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if send is not None:
        deadline = time.time() + timeout
        while not ready(out):
            assert job.poll() is None and time.time() < deadline, "the trainer never started"
            time.sleep(0.02)
        job.send_signal(send)  # what --signal=B:USR1@300 or pre-emption does to the batch shell
    stdout, stderr = job.communicate(timeout=timeout)
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


def test_finished_run_exits_without_requeue(cluster):
    script, env, out = cluster
    result = run_job(script, env, out)
    assert result.returncode == 0, result.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["argv"] == ["pretrain", "--resume", "--config", "r50x1_in21k"]
    assert run["env"] == {"MASTER_ADDR": "jwb0001i", "MASTER_PORT": "29500", "NCCL_SOCKET_IFNAME": "ib0",
                          "GLOO_SOCKET_IFNAME": "ib0", "SRUN_CPUS_PER_TASK": "12"}
    assert not (out / "requeued").exists()


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_time_limit_signal_checkpoints_and_requeues(cluster, sig):
    script, env, out = cluster
    result = run_job(script, {**env, "STUB_RUN_S": "20"}, out, send=sig)
    assert result.returncode == 0, result.stderr
    assert (out / "checkpoint.pt").read_text() == str(int(signal.SIGUSR1))  # the trainer got USR1
    assert (out / "requeued").read_text() == "4242\n"
    assert "requeueing (restart 1 of 3)" in result.stdout


def test_requeue_stops_after_max_restarts(cluster):
    script, env, out = cluster
    result = run_job(script, {**env, "STUB_RUN_S": "20", "SLURM_RESTART_COUNT": "3"}, out, send=signal.SIGUSR1)
    assert result.returncode == 1
    assert (out / "checkpoint.pt").exists()
    assert not (out / "requeued").exists()
    assert "3 restarts used up" in result.stderr


def test_failed_checkpoint_is_not_requeued(cluster):
    script, env, out = cluster
    result = run_job(script, {**env, "STUB_RUN_S": "20", "STUB_EXIT_AFTER_SIGNAL": "3"}, out, send=signal.SIGUSR1)
    assert result.returncode == 3
    assert not (out / "requeued").exists()
    assert "exited with 3 after SIGUSR1" in result.stderr


def test_failing_run_keeps_its_exit_status(cluster):
    script, env, out = cluster
    result = run_job(script, {**env, "STUB_EXIT": "5"}, out)
    assert result.returncode == 5
    assert not (out / "requeued").exists()


def test_missing_image_stops_before_srun(cluster, tmp_path):
    script, env, out = cluster
    (tmp_path / "xferscale.sif").unlink()
    result = run_job(script, env, out)
    assert result.returncode == 2
    assert "container image" in result.stderr and "not found" in result.stderr
    assert not (out / "started").exists()


@pytest.mark.slow
def test_real_pretrain_is_checkpointed_requeued_and_resumed(tmp_path, capsys):
    """The generated script around the real trainer: time-limit signal, requeue, resume to the end."""
    run_dir = tmp_path / "out" / "run"
    tiny = ["train.progress=false", "data.synthetic_samples=128", "data.image_size=16", "train.global_batch=16",
            "schedule.epochs=4", "schedule.warmup_steps=4", "train.warmup_exclude=2", "train.log_every=1",
            f"output_dir={run_dir}"]
    script, env, out = _cluster(tmp_path, capsys, REAL_TRAINER, tiny)
    metrics = run_dir / "metrics.jsonl"

    def training(_out: Path) -> bool:  # metrics are written inside the trainer's signal handling
        return metrics.exists() and len(metrics.read_text().splitlines()) >= 3

    first = run_job(script, env, out, send=signal.SIGUSR1, ready=training, timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "stopped by signal" in first.stdout
    assert (out / "requeued").read_text() == "4242\n"
    cut = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]
    assert 3 <= cut < 32

    # SLURM starts the requeued job from the top of the same script
    second = run_job(script, {**env, "SLURM_RESTART_COUNT": "1"}, out, timeout=240)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "after 32 steps" in second.stdout
    assert (out / "requeued").read_text() == "4242\n"  # finished: no second requeue
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 32
