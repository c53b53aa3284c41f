"""The checks as ReFrame loads them (real `reframe -l`), and their reference files.

The real CPU-mode run of the checks is `checks/run_ci.sh` (make reframe-ci), not here.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
        "ScalingSweep %num_workers=2 %model=tiny %precision=fp32 %loader=synthetic",
        "PretrainExperiment %num_workers=2 %config=default",
        "TransferExperiment %num_workers=1 %case=tiny/default/default",
        "LoaderThroughput %num_workers=1 %gpu=cpu",
    }
    # The 2-process sweep point depends on the 1-process run it is measured against.
    assert "^ScalingSweep %num_workers=1 %model=tiny" in out


def test_juwels_booster_config_selects_the_gpu_checks(tmp_path):
    listed, out = _list(tmp_path, "--system", "juwels_booster", env_extra={
        "RFM_CONFIG_FILES": str(CHECKS / "config" / "juwels_booster.py"), "XFERSCALE_MODULES_SYSTEM": "nomod"})
    assert not [line for line in listed if "model=tiny" in line or "config=default" in line]
    scaling = sorted(int(m) for m in re.findall(r"ScalingSweep %num_workers=(\d+) %model=r152x4", out))
    assert scaling == [1, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    train = [line for line in listed if line.startswith("- TrainThroughput")]
    assert len(train) == 2 * 4 * 2  # models x precisions x loaders
    assert any("PretrainExperiment %num_workers=256 %config=r152x4_in21k" in line for line in listed)


def test_scaling_references_are_the_papers_fig4():
    refs = yaml.safe_load((CHECKS / "references" / "scaling.yaml").read_text())["ScalingSweep"]
    assert refs["$index"] == ["$system", "model", "num_workers"]
    ours = {n: v["efficiency"][0] for n, v in refs["juwels_booster"]["r152x4"].items()}
    paper = {n: e for n, e in paper_efficiencies().items() if n > 1}
    assert ours == paper
    assert all(v["efficiency"][3] == "%" for v in refs["juwels_booster"]["r152x4"].values())


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
    env.update(RFM_CONFIG_FILES=str(CHECKS / "config" / "juwels_booster.py"), XFERSCALE_MODULES_SYSTEM="nomod",
               XFERSCALE_IMAGE="/p/project/x/xferscale.sif", XFERSCALE_ACCOUNT="proj",
               XFERSCALE_RFM_STAGE=str(tmp_path / "stage"))
    cmd = [sys.executable, "-c", "import sys; from reframe.frontend.cli import main; sys.argv[0] = 'reframe'; main()",
           "-c", str(CHECKS / "scaling.py"), "--system", "juwels_booster:booster", "-n", "ScalingSweep",
           "-x", r"num_workers=(1|4|16|32|64|128|256|512|1024) ", "--dry-run", "--prefix", str(tmp_path), "--nocolor"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (text,) = [t for t in (p.read_text() for p in (tmp_path / "stage").rglob("rfm_job.sh")) if "--ntasks=8\n" in t]
    for line in ["#SBATCH --ntasks=8", "#SBATCH --ntasks-per-node=4", "#SBATCH --gres=gpu:4",
                 "#SBATCH --partition=booster", "#SBATCH --account=proj", "export NCCL_SOCKET_IFNAME=ib0"]:
        assert line in text
    assert 'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)i"' in text
    launch = text.strip().splitlines()[-1]
    assert launch.startswith("srun ") and "--cpu-bind=none" in launch
    assert "apptainer exec" in launch and "--nv" in launch and "/p/project/x/xferscale.sif xferscale bench train" in launch
    assert "--model r152x4 --precision fp32" in launch
