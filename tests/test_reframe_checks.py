"""The checks as ReFrame loads them (real `reframe -l`), and their reference files.

The real CPU-mode run of the checks is `checks/run_ci.sh` (make reframe-ci), not here.
"""
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from _data_fixtures import jpeg_bytes
from xferscale.cli import main
from xferscale.report.scaling import paper_efficiencies

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ROOT / "checks"
PAPER = yaml.safe_load((ROOT / "suite" / "xferscale" / "reference" / "paper.yaml").read_text())


def _list(tmp_path, *extra, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_")}
    env.update(env_extra or {})
    cmd = [sys.executable, "-c", "import sys; from reframe.frontend.cli import main; sys.argv[0] = 'reframe'; main()",
           "-c", str(CHECKS), "-l", "--nocolor", *extra]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if re.match(r"^- ", line)], proc.stdout


def test_builtin_generic_system_selects_only_the_cpu_checks(tmp_path):
    listed, out = _list(tmp_path)
    assert "selected system:   'generic'" in out
    names = {line.split(" /")[0][2:] for line in listed}
    assert names == {
        "TrainThroughput %num_workers=1 %model=tiny %precision=fp32 %loader=synthetic",
        "AllReduceSweep %num_workers=2 %framework=torch",
        "ScalingSweep %num_workers=2 %model=tiny %precision=fp32 %loader=synthetic %framework=torch",
        "PretrainExperiment %num_workers=2 %config=default",
        "TransferExperiment %num_workers=1 %case=tiny/default/default",
        "LoaderThroughput %num_workers=1 %gpu=cpu",
        "NodeAcceptance %num_workers=1 %gpu=cpu",
    }
    # The 2-process sweep point depends on the 1-process run it is measured against.
    assert "^ScalingSweep %num_workers=1 %model=tiny" in out


def _juwels_env(tmp_path, **extra):
    return {"RFM_CONFIG_FILES": str(CHECKS / "config" / "juwels_booster.py"), "XFERSCALE_MODULES_SYSTEM": "nomod",
            "SCRATCH": str(tmp_path / "scratch"), **extra}


def test_juwels_config_without_scratch_says_what_to_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_") and k != "SCRATCH"}
    env.update(_juwels_env(tmp_path))
    env.pop("SCRATCH")
    cmd = [sys.executable, "-c", "import sys; from reframe.frontend.cli import main; sys.argv[0] = 'reframe'; main()",
           "-c", str(CHECKS / "scaling.py"), "-l", "--nocolor", "--system", "juwels_booster"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "SCRATCH is not set; run `jutil env activate -p <project>` first" in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("${SCRATCH}*"))  # no literal ${SCRATCH} tree


def test_juwels_booster_config_selects_the_gpu_checks(tmp_path):
    listed, out = _list(tmp_path, "--system", "juwels_booster", env_extra=_juwels_env(tmp_path))
    assert not [line for line in listed if "model=tiny" in line or "config=default" in line]
    for framework in ("torch", "horovod"):  # the paper's Fig. 4 framework too: JUWELS declares horovod
        scaling = sorted({int(m) for m in re.findall(
            rf"ScalingSweep %num_workers=(\d+) %model=r152x4 %precision=fp32 %loader=synthetic %framework={framework}",
            out)})
        assert scaling == [1, 4, 8, 16, 32, 64, 128, 256, 512, 1024], framework
    # The sweep runs point after point: 1024 depends on 512 (and on 1).
    assert re.search(r"ScalingSweep %num_workers=512 %model=r152x4 \S+ \S+ %framework=torch", out)
    train = [line for line in listed if line.startswith("- TrainThroughput")]
    assert len(train) == 2 * 4 * 2  # models x precisions x loaders
    # Benchmark mode (default): every paper config on one node; the full runs only with -S mode=full.
    pretrain = [line for line in listed if line.startswith("- PretrainExperiment")]
    assert len(pretrain) == 12 and all("%num_workers=4 " in line for line in pretrain)
    full, _ = _list(tmp_path, "--system", "juwels_booster", "-S", "mode=full", "-n", "PretrainExperiment",
                    env_extra=_juwels_env(tmp_path))
    assert any("PretrainExperiment %num_workers=256 %config=r152x4_in21k" in line for line in full)
    assert not any("%num_workers=4 " in line for line in full)


def test_scaling_references_are_the_papers_fig4():
    refs = yaml.safe_load((CHECKS / "references" / "scaling.yaml").read_text())["ScalingSweep"]
    assert refs["$index"] == ["$system", "framework", "model", "num_workers"]
    ours = {n: v["efficiency"][0] for n, v in refs["juwels_booster"]["horovod"]["r152x4"].items()}
    paper = {n: e for n, e in paper_efficiencies().items() if n > 1}
    assert ours == paper
    assert all(v["efficiency"][3] == "%" for v in refs["juwels_booster"]["horovod"]["r152x4"].values())


@pytest.mark.parametrize("model", ["r50x1", "r152x4"])
def test_transfer_references_are_the_papers_tables(model):
    refs = yaml.safe_load((CHECKS / "references" / "transfer.yaml").read_text())["TransferExperiment"]
    assert refs["$index"] == ["model", "source", "target"]
    expected = {**PAPER["paper_table1"][model], **PAPER["paper_table2"][model]}
    assert set(refs[model]) == set(expected)
    for source, targets in expected.items():
        assert set(refs[model][source]) == set(targets)
        for target, (mean, std) in targets.items():
            value, lower, upper, unit = refs[model][source][target]["score"]
            assert value == mean and unit == "%"
            assert upper == -lower == pytest.approx(max(2 * std, 1.0) / mean, abs=1e-5)


def test_every_paper_transfer_cell_is_a_check_case():
    from xferscale.checklib.experiments import paper_transfer_cases

    cases = paper_transfer_cases()
    assert len(cases) == len(set(cases)) == 2 * (2 * 7 + 3 + 3 + 3 + 2)
    assert ("r152x4", "chexpert_mimic_nih_padchest", "tuberculosis") in cases


def test_every_check_file_points_at_an_existing_reference_file():
    for check in CHECKS.glob("*.py"):
        for ref in re.findall(r'"\$ref": "([^"]+)"', check.read_text()):
            data = yaml.safe_load((CHECKS / ref).read_text())
            assert data and all("$index" in v for v in data.values()), f"{check.name} -> {ref}"


def test_juwels_job_script_launches_one_task_per_gpu_in_the_container(tmp_path):
    """The GPU path as ReFrame writes it (--dry-run: job scripts, no submission)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_")}
    env.update(_juwels_env(tmp_path), XFERSCALE_IMAGE="/p/project/x/xferscale.sif", XFERSCALE_ACCOUNT="proj",
               XFERSCALE_RFM_STAGE=str(tmp_path / "stage"))
    cmd = [sys.executable, "-c", "import sys; from reframe.frontend.cli import main; sys.argv[0] = 'reframe'; main()",
           "-c", str(CHECKS / "scaling.py"), "--system", "juwels_booster:booster", "-n", "ScalingSweep",
           "-x", r"num_workers=(1|4|16|32|64|128|256|512|1024) ", "--dry-run", "--prefix", str(tmp_path), "--nocolor"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    scripts = [t for t in (p.read_text() for p in (tmp_path / "stage").rglob("rfm_job.sh")) if "--ntasks=8\n" in t]
    (text,) = [t for t in scripts if "--distributed auto" in t]
    assert any("--distributed horovod" in t for t in scripts)  # the paper's framework, where the image has it
    for line in ["#SBATCH --ntasks=8", "#SBATCH --ntasks-per-node=4", "#SBATCH --gres=gpu:4",
                 "#SBATCH --partition=booster", "#SBATCH --account=proj", "export NCCL_SOCKET_IFNAME=ib0"]:
        assert line in text
    assert 'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)i"' in text
    launch = text.strip().splitlines()[-1]
    assert launch.startswith("srun ") and "--cpu-bind=none" in launch
    assert "apptainer exec" in launch and "--nv" in launch and "/p/project/x/xferscale.sif xferscale bench train" in launch
    assert "--cleanenv" in launch and "xferscale-task-env apptainer exec" in launch and "SLURM_PROCID" in launch
    assert "--model r152x4 --precision fp32" in launch


def _dry_run(tmp_path, *args, check: str = "experiments.py", **env_extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_")}
    env.update(_juwels_env(tmp_path), XFERSCALE_IMAGE="/p/project/x/xferscale.sif", XFERSCALE_ACCOUNT="proj",
               XFERSCALE_RFM_STAGE=str(tmp_path / "stage"), **env_extra)
    cmd = [sys.executable, "-c", "import sys; from reframe.frontend.cli import main; sys.argv[0] = 'reframe'; main()",
           "-c", str(CHECKS / check), "--dry-run", "--prefix", str(tmp_path), "--nocolor", *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, {p.parent.name: p.read_text() for p in (tmp_path / "stage").rglob("rfm_job.sh")}


def test_experiment_job_scripts_fit_the_partition_and_chain_requeues(tmp_path):
    """The experiments as ReFrame writes them for JUWELS (--dry-run): limits, binds, requeue chain."""
    data, root = tmp_path / "prepared", tmp_path / "experiments"
    (data / "in1k").mkdir(parents=True)
    (data / "in1k" / "dataset.json").write_text("{}")
    common = ["-n", "PretrainExperiment", "-x", "config=default"]
    env = dict(XFERSCALE_DATA_ROOT=str(data), XFERSCALE_EXPERIMENT_ROOT=str(root))

    out, scripts = _dry_run(tmp_path / "bench", "--system", "juwels_booster:develbooster", *common, **env)
    (text,) = [t for t in scripts.values() if "r50x1_in1k" in t]
    assert "#SBATCH --time=1:0:0" in text or "#SBATCH --time=01:00:00" in text  # within develbooster's 2 h
    assert "--requeue" not in text and "train.max_steps=300" in text and "--resume" not in text
    launch = text.strip().splitlines()[-1]
    assert f'-B"{root}:{root}"' in launch and f'-B"{data}:{data}"' in launch and "--cleanenv" in launch
    assert f"--output-dir {root}/pretrain/benchmark/r50x1_in1k-4gpu" in launch
    # one node at the paper's 64 images per GPU (4096 on 64 GPUs): global batch 256
    assert "train.global_batch=256" in launch
    # the other sources have no dataset.json here: the message names a command that makes one
    assert (f"`xferscale prepare chexpert_mimic --raw chexpert=RAW_CHEXPERT_DIR --raw mimic_cxr=RAW_MIMIC_CXR_DIR "
            f"--out {data}/chexpert_mimic`") in out
    command = re.search(r"no prepared dataset at \S+/in21k \(make it with `([^`]+)`", out)[1]
    assert command == f"xferscale prepare in21k --raw RAW_DIR --out {data}/in21k"
    raw = tmp_path / "raw21k"  # run as printed, a raw folder filled in: two synset tars of JPEGs
    raw.mkdir()
    for s, wnid in enumerate(("n01440764", "n01443537")):
        with tarfile.open(raw / f"{wnid}.tar", "w") as tar:
            for i in range(3):
                image = jpeg_bytes(40 * s + i, (20, 16))
                info = tarfile.TarInfo(f"{wnid}_{i}.JPEG")
                info.size = len(image)
                tar.addfile(info, io.BytesIO(image))
    assert main([*command.replace("RAW_DIR", str(raw)).split()[1:], "--workers", "1", "--no-progress"]) == 0
    assert json.loads((data / "in21k" / "dataset.json").read_text())["name"] == "imagenet21k"

    _, scripts = _dry_run(tmp_path / "full", "--system", "juwels_booster:booster", "-S", "mode=full", *common, **env)
    (text,) = [t for t in scripts.values() if "r50x1_in1k" in t]
    run = root / "pretrain" / "full" / "r50x1_in1k"
    for line in ("#SBATCH --requeue", "#SBATCH --open-mode=append", "#SBATCH --signal=USR1@300",
                 f"export XFERSCALE_STOP_MARKER={run}/xferscale.stopped", f"rm -f {run}/xferscale.stopped",
                 f"if [ -e {run}/xferscale.stopped ]", 'scontrol requeue "$SLURM_JOB_ID"'):
        assert line in text, line
    assert "#SBATCH --time=24:0:0" in text or "#SBATCH --time=24:00:00" in text
    assert "#SBATCH --nodes=16" in text or "#SBATCH --ntasks=64" in text
    assert f"--output-dir {run} --resume" in text and "train.global_batch" not in text  # the paper's run as written


def test_full_run_on_fewer_gpus_keeps_the_papers_batch_per_gpu(tmp_path):
    """-S gpus=4: the chain on one develbooster node; -S extra_overrides is a list of overrides."""
    data, root = tmp_path / "prepared", tmp_path / "experiments"
    (data / "chexpert").mkdir(parents=True)
    (data / "chexpert" / "dataset.json").write_text("{}")
    env = dict(XFERSCALE_DATA_ROOT=str(data), XFERSCALE_EXPERIMENT_ROOT=str(root))
    out, scripts = _dry_run(tmp_path / "a", "--system", "juwels_booster:develbooster", "-S", "mode=full",
                            "-S", "gpus=4", "-S", "extra_overrides=train.log_every=10,train.precision=tf32",
                            "-S", "chain_job_time=00:30:00", "-n", "PretrainExperiment", **env)
    (text,) = [t for t in scripts.values() if "--config r152x4_chexpert " in t]
    assert "#SBATCH --ntasks=4\n" in text
    assert "#SBATCH --time=0:30:0" in text or "#SBATCH --time=00:30:00" in text
    (launch,) = [line for line in text.splitlines() if line.startswith("srun ")]
    # 16 per GPU on the paper's 64 (1024): 64 on 4 GPUs; the warm-up is in epochs and stays
    assert launch.endswith(f"train.global_batch=64 data.path={data}/chexpert train.log_every=10 train.precision=tf32")
    assert f"--output-dir {root}/pretrain/full/r152x4_chexpert-4gpu --resume" in launch
    assert "4 GPUs instead of the paper's 64: global batch 64 instead of 1024" in out

    out, _ = _dry_run(tmp_path / "b", "--system", "juwels_booster:develbooster", "-S", "mode=full", "-S", "gpus=12",
                      "-n", "PretrainExperiment", **env)
    assert "-S gpus=12: choose one of 1, 2, 4, 8, 16, 32, 64, 128, 256" in out


def test_transfer_experiment_starts_from_a_finished_pretraining_of_the_same_root(tmp_path):
    root = tmp_path / "experiments"
    args = ["--system", "juwels_booster:booster", "-S", "mode=full", "-n", "TransferExperiment",
            "-n", "r50x1/in1k/cifar10"]
    out, scripts = _dry_run(tmp_path / "a", *args, XFERSCALE_EXPERIMENT_ROOT=str(root))
    assert not scripts and "no finished pre-training of r50x1_in1k" in out
    run = root / "pretrain" / "full" / "r50x1_in1k"
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"")
    (run / "summary.json").write_text(json.dumps({"finished": False}))  # a chain still under way
    out, scripts = _dry_run(tmp_path / "b", *args, XFERSCALE_EXPERIMENT_ROOT=str(root))
    assert not scripts and "no finished pre-training" in out
    (run / "summary.json").write_text(json.dumps({"finished": True}))
    _, scripts = _dry_run(tmp_path / "c", *args, XFERSCALE_EXPERIMENT_ROOT=str(root))
    (text,) = [t for t in scripts.values() if "--target cifar10 " in t]
    assert f"--checkpoint {run}/checkpoint.pt" in text and f"--results {root}/transfer/full" in text
    assert "--seeds 0-4" in text and "#SBATCH --signal=USR1@300" in text and "--no-report" in text
    assert f"export XFERSCALE_STOP_MARKER={root}/transfer/full/in1k/r50x1/cifar10/xferscale.stopped" in text


def test_transfer_experiment_starts_from_a_published_checkpoint(tmp_path):
    root = tmp_path / "experiments"
    args = ["--system", "juwels_booster:booster", "-S", "mode=full", "-S", "pretrained=bit_m_r50x1",
            "-n", "TransferExperiment", "-n", "r50x1/in21k/cifar10"]
    out, scripts = _dry_run(tmp_path / "a", *args, XFERSCALE_EXPERIMENT_ROOT=str(root))
    weights = root / "weights" / "BiT-M-R50x1.npz"
    assert not scripts and f"wget -O {weights} https://storage.googleapis.com/bit_models/BiT-M-R50x1.npz" in out
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    out, scripts = _dry_run(tmp_path / "b", *args, XFERSCALE_EXPERIMENT_ROOT=str(root))
    (text,) = [t for t in scripts.values() if "--target cifar10 " in t]
    assert f"--checkpoint {weights} --source bit_m " in text  # no pre-training of the suite's needed
    # another model's or source's case is not this checkpoint's
    assert all("--source bit_m " in t for t in scripts.values())
    assert "stands beside the paper's in21k cases, not in1k" in out and "holds r50x1, this case is r152x4" in out


def test_node_acceptance_is_one_task_with_the_whole_node(tmp_path):
    out, scripts = _dry_run(tmp_path, "--system", "juwels_booster:develbooster", "--tag", "smoke", check="node.py")
    (text,) = scripts.values()
    for line in ["#SBATCH --ntasks=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --gres=gpu:4",
                 "#SBATCH --cpus-per-task=48", "#SBATCH --partition=develbooster"]:
        assert line in text, text
    assert text.strip().splitlines()[-1].endswith("/p/project/x/xferscale.sif xferscale bench node")
    refs = yaml.safe_load((CHECKS / "references" / "node.yaml").read_text())["NodeAcceptance"]["juwels_booster"]
    assert refs == {"amp_bf16_per_gpu": [2470, 0.0, None, "img/s"], "ours_over_plain": [1.25, 0.0, None, "x"],
                    "input_torch_kept": [97, 0.0, None, "%"]}  # the README's targets
