"""``scripts/gpu/acceptance.sh`` in its CPU mode, end to end: wheels (one plain, one reassembled
from split parts), the node check, the ReFrame checks, pre-training stopped by SIGTERM and
resumed, transfer; every item has a status, the summary and the JSON say the same."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu" / "acceptance.sh"


def _wheel(folder: Path, name: str) -> Path:
    """A real, minimal pure-Python wheel of a module ``name`` (pip installs it like any other)."""
    dist = f"{name}-1.0"
    files = {f"{name}.py": f"WHO = {name!r}\n",
             f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{dist}.dist-info/WHEEL": ("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                         "Tag: py3-none-any\n")}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(text.encode())}" for path, text in files.items()]
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record + [f"{dist}.dist-info/RECORD,,"]) + "\n"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in files.items():
            zf.writestr(member, text)
    return path


def _wheels_folder(tmp_path: Path) -> Path:
    """base/ with one wheel, and a bundle of another split over dali-1/ and dali-2/ as
    fetch-wheels.sh leaves them, with its manifest."""
    wheels = tmp_path / "wheels"
    (wheels / "base").mkdir(parents=True)
    _wheel(wheels / "base", "xfs_probe_base")
    staging = tmp_path / "staging" / "whl"
    staging.mkdir(parents=True)
    _wheel(staging, "xfs_probe_bundle")
    bundle = tmp_path / "dali.tar"
    with tarfile.open(bundle, "w") as tar:
        tar.add(staging, arcname="whl")
    data = bundle.read_bytes()
    half = len(data) // 2
    for k, part in enumerate((data[:half], data[half:]), start=1):
        (wheels / f"dali-{k}").mkdir()
        (wheels / f"dali-{k}" / f"dali.part-{k - 1:02d}").write_bytes(part)
    (wheels / "base" / "dali.manifest").write_text(f"dali.tar 2 {hashlib.sha256(data).hexdigest()}\n")
    return wheels


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), "--cpu", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_cpu_mode_runs_every_item_and_writes_summary_and_json(tmp_path):
    out = tmp_path / "out"
    proc = _run(tmp_path, "--budget", "480", "--out", str(out), "--wheels", str(_wheels_folder(tmp_path)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["acceptance.json", "logs.tar.gz", "summary.md"]
    result = json.loads((out / "acceptance.json").read_text())
    items = {i["name"]: i for i in result["items"]}
    have_reframe = subprocess.run([sys.executable, "-c", "import reframe"]).returncode == 0
    expected = ["wheels", "node/cpu", "reframe", "pretrain", "resume", "transfer"]
    assert list(items) == expected
    assert all(i["status"] in ("ok", "skipped", "failed", "timed out") for i in items.values())
    assert all(i["note"] for i in items.values() if i["status"] == "skipped")  # a reason for every skip
    assert items["wheels"]["status"] == "ok" and "DALI from 2 parts" in items["wheels"]["note"]
    for name in ("node/cpu", "pretrain", "resume", "transfer"):
        assert items[name]["status"] == "ok", (name, items[name])
    assert items["reframe"]["status"] == ("ok" if have_reframe else "skipped"), items["reframe"]
    if have_reframe:
        assert result["perflog_lines"], "ReFrame wrote no perflog"
    node = items["node/cpu"]["node"]
    assert node["train/fp32"]["status"] == "ok" and node["resume"]["status"] == "ok"
    assert node["train/fp32"]["energy_counter"].startswith("no counter: ")
    assert node["train/fp32"]["watts"] is None and node["train/fp32"]["images_per_joule"] is None
    assert result["pretrain_summary"]["finished"] is True and result["pretrain_summary"]["steps"] == 30
    summary = (out / "summary.md").read_text()
    assert "# GPU acceptance (cpu mode)" in summary
    for name, item in items.items():
        assert f"| {name} | {item['status']} |" in summary
    assert "no counter" in summary
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert "logs/pretrain.log" in names and "logs/node-cpu.json" in names and "logs/wheels.log" in names
    assert "## Transfer from it" in summary and "| 5 |" in summary


def test_a_missing_part_leaves_dali_out_and_says_so(tmp_path):
    wheels = _wheels_folder(tmp_path)
    for part in (wheels / "dali-2").iterdir():
        part.unlink()
    out = tmp_path / "out"
    # A budget too small for any item: the wheels still install, every other item is skipped
    # with the reason, and the summary is written.
    proc = _run(tmp_path, "--budget", "1", "--out", str(out), "--wheels", str(wheels))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    items = {i["name"]: i for i in json.loads((out / "acceptance.json").read_text())["items"]}
    assert items["wheels"]["status"] == "ok"
    assert "DALI left out: 1 of its 2 parts are here" in items["wheels"]["note"]
    assert all(i["status"] == "skipped" and i["note"] for n, i in items.items() if n != "wheels")


def test_no_wheels_folder_is_a_skip_with_the_reason(tmp_path):
    out = tmp_path / "out"
    proc = _run(tmp_path, "--budget", "1", "--out", str(out), "--wheels", str(tmp_path / "absent"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    items = {i["name"]: i for i in json.loads((out / "acceptance.json").read_text())["items"]}
    assert items["wheels"]["status"] == "skipped" and "no wheels folder" in items["wheels"]["note"]


def test_a_bad_budget_is_one_line():
    proc = subprocess.run(["bash", str(SCRIPT), "--budget", "ten"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr == "acceptance.sh: --budget: whole seconds, got 'ten'\n"


def _reframe(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    pytest.importorskip("reframe")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_")}
    env["RFM_CONFIG_FILES"] = str(ROOT / "checks" / "config" / "single_gpu.py")
    cmd = [sys.executable, "-c", "import sys; from reframe.frontend.cli import main; sys.argv[0] = 'reframe'; main()",
           "-c", str(ROOT / "checks"), "--nocolor", "--prefix", str(tmp_path), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_single_gpu_config_runs_the_gpu_mode_on_its_gpu_partition(tmp_path):
    listed = _reframe(tmp_path, "--system", "single_gpu:gpu", "-l", "-n", "TrainThroughput|LoaderThroughput|"
                      "NodeAcceptance").stdout
    names = {line.split(" /")[0][2:] for line in listed.splitlines() if line.startswith("- ")}
    assert "NodeAcceptance %num_workers=1 %gpu=gpu" in names and "LoaderThroughput %num_workers=1 %gpu=gpu" in names
    assert "TrainThroughput %num_workers=1 %model=r50x1 %precision=amp_bf16 %loader=synthetic" in names
    assert not [n for n in names if "model=tiny" in n or "gpu=cpu" in n]
    # The job script the acceptance run gets: one local task on the one GPU, no SLURM.
    _reframe(tmp_path, "--system", "single_gpu:gpu", "--dry-run", "-n", "NodeAcceptance",
             "-S", "NodeAcceptance.only=train/amp_bf16,input/torch", "-S", "NodeAcceptance.steps=20")
    (script,) = [p.read_text() for p in tmp_path.rglob("rfm_job.sh")]
    assert "export MASTER_ADDR=127.0.0.1" in script and "scontrol" not in script
    assert script.strip().splitlines()[-1] == "xferscale bench node --only train/amp_bf16,input/torch --steps 20"
