"""``xferscale bench prepare`` on a small synthetic set: every worker count writes the same bytes."""
from __future__ import annotations

from xferscale.cli import main
from xferscale.kernels.output import parse_result


def test_prepare_kernel_measures_each_worker_count_on_identical_output(capsys):
    assert main(["bench", "prepare", "--images", "24", "--size", "40", "30", "--workers", "1,2",
                 "--project-images", "1000", "--project-cores", "4", "--memory-samples", "3000"]) == 0
    result = parse_result(capsys.readouterr().out, "prepare")
    assert [r["workers"] for r in result["runs"]] == [1, 2] and result["identical"] is True
    assert all(r["images_per_s"] > 0 and r["mb_per_s"] > 0 for r in result["runs"])
    per_core = result["images_per_s_per_core"]
    assert abs(result["projected_hours"]["4"] - 1000 / (per_core * 4) / 3600) < 1e-9
    for kind in ("tar_member", "file_path"):  # a figure, not a target: targets are read off the kernel's output
        memory = result["plan_memory"][kind]
        assert 0 < memory["bytes_per_sample"] <= memory["peak_bytes_per_sample"]
