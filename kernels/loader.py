"""``bench loader``: input-pipeline throughput of DALI and the torch DataLoader on the same
prepared shards with the same transforms.

Each backend reads ``--warmup`` batches (not timed: worker start-up, page cache, pipeline
build), then ``--batches`` timed batches, across epoch boundaries if needed (as training
would). Images/s = timed images / timed seconds, measured where the batch lands on the
training device (GPU batches are synchronised before the clock stops).

Without ``--data`` a synthetic JPEG dataset (ImageNet-like sizes around 500x375, smooth
content plus noise so the files compress like photographs) is written to a temporary folder.
Prints one line per backend and a final JSON line ``{"kernel": "loader", ...}``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from xferscale.config import DataConfig
from xferscale.data.prepared import build_prepared_loader
from xferscale.data.records import DatasetSpec, Reconciliation, Sample
from xferscale.data.transforms import PIPELINES
from xferscale.data.writer import write_dataset
from xferscale.kernels.output import emit_result

BACKENDS = ("dali", "torch")
SYNTHETIC_CLASSES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="prepared dataset folder (default: synthetic JPEGs)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--pipeline", choices=PIPELINES, default="natural")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per backend")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches per backend")
    parser.add_argument("--workers", type=int, default=2, help="DALI threads / DataLoader workers")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: dali,torch")
    parser.add_argument("--synthetic-images", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)


def synthetic_jpegs(out: Path, count: int, seed: int) -> Path:
    """A prepared dataset of ``count`` photo-like JPEGs in ``out``."""
    rng = np.random.default_rng(seed)

    def samples():
        for i in range(count):
            w, h = int(rng.integers(400, 640)), int(rng.integers(300, 480))
            coarse = rng.integers(0, 256, (h // 32 + 2, w // 32 + 2, 3), dtype=np.uint8)
            smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.int16)
            pixels = np.clip(smooth + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
            yield Sample(f"synthetic/{i:06d}", "train", buffer.getvalue(), (i % SYNTHETIC_CLASSES,), "synthetic")

    spec = DatasetSpec("synthetic-jpeg", "multiclass", tuple(f"class{c}" for c in range(SYNTHETIC_CLASSES)))
    write_dataset(spec, samples(), out, Reconciliation(), shard_size=256, progress=False)
    return out


def measure(cfg: DataConfig, args: argparse.Namespace, num_classes: int, device: torch.device) -> dict:
    batches = build_prepared_loader(
        cfg, batch_size=args.batch_size, rank=0, world_size=1, device=device, train=True,
        seed=args.seed, num_classes=num_classes,
    )
    if len(batches) == 0:
        raise SystemExit(f"{cfg.path}: fewer than {args.batch_size} images, no full batch to time")
    seen = images = epoch = 0
    start = time.perf_counter()  # reset after the warm-up batches
    while seen < args.warmup + args.batches:
        for x, _ in batches.epoch(epoch):
            seen += 1
            if seen == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
            elif seen > args.warmup:
                images += len(x)
            if seen == args.warmup + args.batches:
                break
        epoch += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {"images": images, "seconds": round(seconds, 4), "images_per_s": round(images / seconds, 1)}


def run(args: argparse.Namespace) -> dict:
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise SystemExit(f"--backends: unknown {', '.join(sorted(unknown))}; choose from {', '.join(BACKENDS)}")
    with tempfile.TemporaryDirectory(prefix="xferscale-bench-loader-") as tmp:
        data = args.data
        if data is None:
            started = time.perf_counter()
            data = synthetic_jpegs(Path(tmp) / "synthetic", args.synthetic_images, args.seed)
            print(f"synthetic dataset: {args.synthetic_images} JPEGs in {time.perf_counter() - started:.1f} s")
        info = json.loads((Path(data) / "dataset.json").read_text())
        results = {}
        for backend in backends:
            cfg = DataConfig(
                source="prepared", path=str(data), split=args.split, backend=backend, pipeline=args.pipeline,
                image_size=args.image_size, workers=args.workers,
            )
            results[backend] = measure(cfg, args, len(info["classes"]), device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {
        "dataset": str(args.data) if args.data else f"synthetic:{args.synthetic_images}",
        "pipeline": args.pipeline,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "warmup_batches": args.warmup,
        "timed_batches": args.batches,
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "load_average_1m": load,
        "results": results,
    }
    emit_result("loader", result, [
        (f"{backend} images/s", f"{r['images_per_s']:.1f} ({r['images']} images in {r['seconds']:.2f} s)")
        for backend, r in results.items()
    ])
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="xferscale bench loader", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
