"""`bench loader` kernel: both backends timed on its own synthetic JPEG dataset."""
from __future__ import annotations

from xferscale.kernels import loader as kernel
from xferscale.kernels.output import parse_result


def test_loader_kernel_reports_both_backends(capsys):
    result = kernel.main([
        "--synthetic-images", "12", "--image-size", "32", "--batch-size", "4",
        "--batches", "4", "--warmup", "1", "--workers", "1",
    ])
    out = capsys.readouterr().out
    last = parse_result(out, "loader")
    assert out.strip().splitlines()[-1].startswith("{")  # the JSON line comes last
    assert {k: last[k] for k in result} == result and last["pipeline"] == "natural"
    assert "[loader] dali images/s" in out and "[loader] torch images/s" in out
    for backend in ("dali", "torch"):
        r = last["results"][backend]
        assert r["images"] == 16 and r["images_per_s"] > 0  # 4 timed batches of 4, across epochs
