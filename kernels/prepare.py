"""``xferscale bench prepare``: images/s and MB/s of ``xferscale prepare``'s writer (read,
full decode check, shard packing) for 1 ... N worker processes, on a synthetic set of real
JPEG and 16-bit PNG files written first.

Each count runs the same set into a fresh folder; the output of every count is checked
byte-identical to the one-worker output, so the figures are of the same work. A projection
line scales the best rate to a dataset size (``--project-images``, default ImageNet-21k's
14 M images) at a core count (``--project-cores``).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from xferscale.data.records import DatasetSpec, Reconciliation, Sample
from xferscale.data.writer import default_workers, write_dataset
from xferscale.kernels.output import emit_result

IN21K_IMAGES = 14_197_122  # ImageNet-21k fall11, the paper's source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=400, help="synthetic images (default %(default)s)")
    parser.add_argument("--png-fraction", type=float, default=0.25, help="share of 16-bit PNGs (X-ray-like)")
    parser.add_argument("--size", type=int, nargs=2, default=(500, 375), metavar=("W", "H"),
                        help="image size (default: ImageNet's typical 500 x 375)")
    parser.add_argument("--workers", default=None,
                        help="worker counts to measure, e.g. 1,2,4 (default: 1 up to the cores available, doubling)")
    parser.add_argument("--project-images", type=int, default=IN21K_IMAGES)
    parser.add_argument("--project-cores", type=int, nargs="*", default=[48, 16 * 48],
                        help="core counts to project to (default: one JUWELS Booster node, 16 nodes)")


def _synthetic_set(root: Path, count: int, png_fraction: float, size: tuple[int, int]) -> list[Sample]:
    rng = np.random.default_rng(0)
    width, height = size
    samples = []
    for i in range(count):
        path = root / f"img{i:06d}"
        if i < count * png_fraction:
            pixels = rng.integers(0, 65535, (height, width), dtype=np.uint16)
            path = path.with_suffix(".png")
            Image.fromarray(pixels).save(path, "PNG")
        else:
            base = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
            noise = rng.normal(0, 24, (height, width, 3))
            path = path.with_suffix(".jpg")
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
        samples.append(Sample(path.stem, "train", path, (i % 10,), "synthetic"))
    return samples


def _counts(text: str | None) -> list[int]:
    if text:
        return sorted({int(x) for x in text.split(",")})
    top, out, n = default_workers(), [], 1
    while n < top:
        out.append(n)
        n *= 2
    return out + [top]


def run(args: argparse.Namespace) -> dict:
    spec = DatasetSpec("bench", "multiclass", tuple(f"c{i}" for i in range(10)))
    with tempfile.TemporaryDirectory(prefix="xferscale-bench-prepare-") as tmp:
        root = Path(tmp)
        (root / "raw").mkdir()
        samples = _synthetic_set(root / "raw", args.images, args.png_fraction, tuple(args.size))
        megabytes = sum(s.image.stat().st_size for s in samples) / 1e6
        rows, reference = [], None
        for workers in _counts(args.workers):
            out = root / f"out{workers}"
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # the writer's reconciliation lines
                write_dataset(spec, samples, out, Reconciliation(), progress=False, workers=workers)
            seconds = time.perf_counter() - started
            files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
            reference = reference or files
            rows.append({"workers": workers, "seconds": seconds, "images_per_s": len(samples) / seconds,
                         "mb_per_s": megabytes / seconds, "identical_to_one_worker": files == reference})
            shutil.rmtree(out)
    best = max(rows, key=lambda r: r["images_per_s"])
    # Linear in cores at the best per-worker rate measured: an upper bound a shared file system may not reach.
    per_core = max(r["images_per_s"] / r["workers"] for r in rows)
    projections = {str(c): args.project_images / (per_core * c) / 3600 for c in args.project_cores}
    human = [("images", len(samples)), ("MB", round(megabytes, 1))]
    for r in rows:
        human.append((f"{r['workers']} worker(s)", f"{r['images_per_s']:.0f} img/s, {r['mb_per_s']:.1f} MB/s"
                      + ("" if r["identical_to_one_worker"] else "  OUTPUT DIFFERS")))
    human += [(f"projected h, {args.project_images} images, {c} cores (linear)", round(h, 2))
              for c, h in projections.items()]
    result = {"images": len(samples), "megabytes": megabytes, "runs": rows, "best_images_per_s": best["images_per_s"],
              "images_per_s_per_core": per_core, "projected_hours": projections,
              "identical": all(r["identical_to_one_worker"] for r in rows)}
    emit_result("prepare", result, human)
    return result
