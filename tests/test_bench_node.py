"""``xferscale bench node``: the CPU path end to end, a bare node's source-tree run, item outcomes."""
from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import run_xferscale
from xferscale.kernels import node
from xferscale.kernels.output import parse_result

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cpu_path_runs_every_item_and_says_why_it_skips_one(tmp_path):
    proc = run_xferscale("bench", "node", "--json-out", str(tmp_path / "node.json"), timeout=600)
    result = parse_result(proc.stdout, "node")
    items = result["items"]
    assert list(items) == list(node.ITEMS) and result["failed"] == 0
    assert {n for n, i in items.items() if i["status"] == "skipped"} == {"train/tf32", "train/amp_fp16", "train/r152x4"}
    assert all(i["reason"] for i in items.values() if i["status"] == "skipped")
    for name in ("train/fp32", "train/amp_bf16"):
        assert items[name]["images_per_s_total"] > 0 and items[name]["loss"] > 0
    assert items["baseline"]["ratio_median"] > 0 and 0 < items["input/torch"]["fraction"]
    assert "gloo over 2 CPU processes" in items["allreduce"]["figure"] and items["allreduce"]["busbw_gbps"] > 0
    assert items["resume"]["identical"] is True and items["resume"]["max_abs_diff"] == 0.0
    assert "| item | status | result | s |" in proc.stdout  # the one table
    full = json.loads((tmp_path / "node.json").read_text())
    assert full["items"]["train/fp32"]["detail"]["step_time_ms_p90"] > 0


def test_a_bare_node_runs_it_from_the_source_tree_without_dali_or_reframe(tmp_path):
    """Its own torch and timm on the path, the suite not installed, no DALI, no ReFrame."""
    site = sysconfig.get_paths()["purelib"]
    code = ("import sys, runpy; sys.path[:0] = [sys.argv[1], sys.argv[2]]; "
            "sys.modules['nvidia.dali'] = None; sys.modules['reframe'] = None; "
            "import xferscale; print('from', xferscale.__file__); sys.argv[1:] = sys.argv[3:]; "
            "runpy.run_module('xferscale.kernels.node', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-S", "-c", code, str(ROOT / "suite"), site,
                           "--only", "train/fp32,input/dali", "--steps", "2", "--warmup", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"from {ROOT / 'suite' / 'xferscale' / '__init__.py'}" in proc.stdout
    items = parse_result(proc.stdout, "node")["items"]
    assert items["train/fp32"]["status"] == "ok"
    assert items["input/dali"] == {"status": "skipped", "figure": "", "reason": items["input/dali"]["reason"]}
    assert items["input/dali"]["reason"].startswith("DALI is not installed")


def test_a_failing_item_is_reported_and_fails_the_command(monkeypatch, capsys):
    def broken(plan):
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setitem(node.ITEMS, "resume", broken)
    with pytest.raises(SystemExit) as stop:
        node.main(["--only", "resume"])
    assert stop.value.code == 1
    out = capsys.readouterr().out
    result = parse_result(out, "node")
    assert result["failed"] == 1
    assert result["items"]["resume"]["reason"] == "RuntimeError: CUDA error: an illegal memory access"
    assert "| resume | failed | RuntimeError: CUDA error" in out


def test_unknown_items_are_named():
    with pytest.raises(SystemExit, match="unknown item\\(s\\) trian; items: train/fp32"):
        node.select("trian,resume")
    assert node.select("train") == ["train/fp32", "train/tf32", "train/amp_fp16", "train/amp_bf16", "train/r152x4"]
