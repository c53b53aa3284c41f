"""`bench loader` kernel: both backends timed on its own synthetic JPEG dataset."""
from __future__ import annotations

import json

from xferscale.kernels import loader as kernel


def test_loader_kernel_reports_both_backends(capsys):
    result = kernel.main([
        "--synthetic-images", "12", "--image-size", "32", "--batch-size", "4",
        "--batches", "4", "--warmup", "1", "--workers", "1",
    ])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == result and last["kernel"] == "loader" and last["pipeline"] == "natural"
    for backend in ("dali", "torch"):
        r = last["results"][backend]
        assert r["images"] == 16 and r["images_per_s"] > 0  # 4 timed batches of 4, across epochs
