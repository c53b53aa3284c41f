"""``xferscale bench prepare``: images/s and MB/s of ``xferscale prepare``'s writer (read,
full decode check, shard packing) for 1 ... N worker processes, on a synthetic set of real
JPEG and 16-bit PNG files written first.

Each count runs the same set into a fresh folder; the output of every count is checked
byte-identical to the one-worker output, so the figures are of the same work. ``--tasks``
adds runs of K concurrent prepare tasks (slices, as ``srun -n K`` starts them), each with
the given workers, so the packing is split too. A projection
line scales the best rate to a dataset size (``--project-images``, default ImageNet-21k's
14 M images) at a core count (``--project-cores``).

Memory: a prepare task holds its shard plan (one record per sample of the whole dataset)
until its shards are written. ``--memory-samples`` plans that many synthetic samples of each
kind (ImageNet-21k tar members, ImageNet-1k file paths) under ``tracemalloc`` and reports the
bytes per sample held after planning and at the peak of planning.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from xferscale.data.records import DatasetSpec, Reconciliation, Sample, TarMember
from xferscale.data.slices import WHOLE, Slice
from xferscale.data.writer import default_workers, plan_shards, write_dataset
from xferscale.kernels.output import emit_result

IN21K_IMAGES = 14_197_122  # ImageNet-21k fall11, the paper's source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=400, help="synthetic images (default %(default)s)")
    parser.add_argument("--png-fraction", type=float, default=0.25, help="share of 16-bit PNGs (X-ray-like)")
    parser.add_argument("--size", type=int, nargs=2, default=(500, 375), metavar=("W", "H"),
                        help="image size (default: ImageNet's typical 500 x 375)")
    parser.add_argument("--workers", default=None,
                        help="worker counts to measure, e.g. 1,2,4 (default: 1 up to the cores available, doubling)")
    parser.add_argument("--tasks", default="1",
                        help="concurrent prepare tasks (slices) to measure, e.g. 1,2 (default 1)")
    parser.add_argument("--memory-samples", type=int, default=200_000,
                        help="samples to plan for the memory figure (default %(default)s; 0: skip)")
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


_SYNSETS = 19_167


def _tar_member(i: int) -> Sample:  # ImageNet-21k: key <wnid>_<n>, a reference into the synset's tar
    wnid = f"n{1_000_000 + i % _SYNSETS:08d}"
    tar = Path(f"/p/scratch/project/imagenet21k/winter21_whole/{wnid}.tar")
    return Sample(f"{wnid}_{i}", "train", TarMember(tar, 512 + 110_000 * (i // _SYNSETS), 109_000), (i % _SYNSETS,),
                  "imagenet21k")


def _file_path(i: int) -> Sample:  # ImageNet-1k: key <wnid>/<file>, the file's path
    wnid = f"n{1_000_000 + i % 1000:08d}"
    name = f"{wnid}/{wnid}_{i}.JPEG"
    return Sample(name, "train", Path(f"/p/scratch/project/imagenet1k/train/{name}"), (i % 1000,), "imagenet1k")


def plan_bytes_per_sample(make: Callable[[int], Sample], count: int) -> tuple[float, float]:
    """(held after planning, peak while planning) bytes per sample, for ``count`` samples made
    on the fly (so only the plan's own records are counted)."""
    spec = DatasetSpec("memory", "multiclass", tuple(f"c{i}" for i in range(_SYNSETS)))

    def samples() -> Iterator[Sample]:
        return (make(i) for i in range(count))

    with open(os.devnull, "wb") as spool:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            plan = plan_shards(spec, samples(), spool, shard_size=1000)
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert sum(len(s.items) for s in plan) == count
    return (held - base) / count, (peak - base) / count


def _one_task(spec: DatasetSpec, samples: list[Sample], out: Path, task: Slice, workers: int) -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # the writer's reconciliation lines
        write_dataset(spec, samples, out, Reconciliation(), progress=False, workers=workers, task=task)


def _prepare(spec: DatasetSpec, samples: list[Sample], out: Path, tasks: int, workers: int) -> None:
    """One prepare run as ``tasks`` concurrent processes (one: this one)."""
    if tasks == 1:
        return _one_task(spec, samples, out, WHOLE, workers)
    context = multiprocessing.get_context("forkserver")
    processes = [context.Process(target=_one_task, args=(spec, samples, out, Slice(i, tasks), workers))
                 for i in range(tasks)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} of {tasks} prepare tasks failed (exit codes {failed})")


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
        for tasks in _counts(args.tasks):
            for workers in _counts(args.workers):
                out = root / f"out-{tasks}x{workers}"
                started = time.perf_counter()
                _prepare(spec, samples, out, tasks, workers)
                seconds = time.perf_counter() - started
                files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
                reference = reference or files
                rows.append({"tasks": tasks, "workers": workers, "seconds": seconds,
                             "images_per_s": len(samples) / seconds, "mb_per_s": megabytes / seconds,
                             "identical_to_one_worker": files == reference})
                shutil.rmtree(out)
    best = max(rows, key=lambda r: r["images_per_s"])
    # Linear in cores at the best per-worker rate measured: an upper bound a shared file system may not reach.
    per_core = max(r["images_per_s"] / (r["tasks"] * r["workers"]) for r in rows)
    projections = {str(c): args.project_images / (per_core * c) / 3600 for c in args.project_cores}
    human = [("images", len(samples)), ("MB", round(megabytes, 1))]
    for r in rows:
        human.append((f"{r['tasks']} task(s) x {r['workers']} worker(s)", f"{r['images_per_s']:.0f} img/s, {r['mb_per_s']:.1f} MB/s"
                      + ("" if r["identical_to_one_worker"] else "  OUTPUT DIFFERS")))
    human += [(f"projected h, {args.project_images} images, {c} cores (linear)", round(h, 2))
              for c, h in projections.items()]
    memory = {}
    if args.memory_samples:
        for kind, make in (("tar_member", _tar_member), ("file_path", _file_path)):
            held, peak = plan_bytes_per_sample(make, args.memory_samples)
            memory[kind] = {"bytes_per_sample": held, "peak_bytes_per_sample": peak,
                            "projected_gb_held": held * args.project_images / 1e9}
            human.append((f"plan memory, {kind.replace('_', ' ')}s",
                          f"{held:.0f} B/sample held, {peak:.0f} peak; {args.project_images} samples: "
                          f"{held * args.project_images / 1e9:.1f} GB"))
    result = {"images": len(samples), "megabytes": megabytes, "runs": rows, "best_images_per_s": best["images_per_s"],
              "images_per_s_per_core": per_core, "projected_hours": projections, "plan_memory": memory,
              "identical": all(r["identical_to_one_worker"] for r in rows)}
    emit_result("prepare", result, human)
    return result
