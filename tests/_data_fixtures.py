"""Small prepared datasets for the data tests: real JPEG and 16-bit PNG files whose grey
level encodes their class, so label alignment can be checked from the pixels."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from xferscale.data.records import DatasetSpec, Reconciliation, Sample
from xferscale.data.writer import write_dataset

CLASSES = ("low", "mid", "high")
LEVELS = (30, 128, 225)  # 8-bit grey level per class


def jpeg_bytes(level: int, size: tuple[int, int], rgb: bool = True) -> bytes:
    array = np.full((size[1], size[0], 3) if rgb else (size[1], size[0]), level, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def png16_bytes(level: int, size: tuple[int, int]) -> bytes:
    array = np.full((size[1], size[0]), level * 257, np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def tiny_samples(folder: Path, n_jpeg: int = 24, n_png: int = 6, split: str = "train") -> list[Sample]:
    """JPEG files on disk (grey and RGB, varied sizes) and 16-bit PNG bytes in memory."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n_jpeg):
        c = i % len(CLASSES)
        path = folder / f"img{i:03d}.jpg"
        path.write_bytes(jpeg_bytes(LEVELS[c], (40 + 4 * (i % 5), 36 + 6 * (i % 3)), rgb=i % 4 != 0))
        samples.append(Sample(f"{split}/img{i:03d}.jpg", split, path, (c,), "tiny", patient=f"p{i // 2}"))
    for i in range(n_png):
        c = i % len(CLASSES)
        samples.append(Sample(f"{split}/xray{i:03d}.png", split, png16_bytes(LEVELS[c], (48, 40)), (c,), "tiny16"))
    return samples


def write_tiny(out: Path, raw: Path, shard_size: int = 7, **kwargs) -> Path:
    spec = DatasetSpec("tiny", "multiclass", CLASSES)
    write_dataset(spec, tiny_samples(raw, **kwargs), out, Reconciliation(), shard_size=shard_size, progress=False)
    return out


def class_from_pixels(images) -> list[int]:
    """Nearest class level from the mean of each normalised image."""
    levels = (np.asarray(LEVELS) / 255 - 0.5) / 0.5
    means = images.float().mean(dim=(1, 2, 3)).numpy()
    return [int(np.argmin(np.abs(levels - m))) for m in means]


def unique_samples(folder: Path, n: int = 30) -> list[Sample]:
    """Flat JPEGs with one grey level per sample (10, 18, 26, ...): identity from pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        path = folder / f"u{i:03d}.jpg"
        path.write_bytes(jpeg_bytes(10 + 8 * i, (24 + i % 7, 20 + i % 5)))
        samples.append(Sample(f"u{i:03d}", "train", path, (i % len(CLASSES),), "unique"))
    return samples


def identity_from_pixels(images) -> list[int]:
    """Sample number of :func:`unique_samples` images (eval pipeline output)."""
    means = images.float().mean(dim=(1, 2, 3)).numpy()
    return [int(round(((m * 0.5 + 0.5) * 255 - 10) / 8)) for m in means]


def write_unique(out: Path, raw: Path, n: int = 30, shard_size: int = 8) -> Path:
    spec = DatasetSpec("unique", "multiclass", CLASSES)
    write_dataset(spec, unique_samples(raw, n), out, Reconciliation(), shard_size=shard_size, progress=False)
    return out


def write_cifar10_release(folder: Path, per_batch: int, seed: int = 0) -> Path:
    """CIFAR-10's python release in ``folder``: five training batches and a test batch of
    ``per_batch`` random 32x32 images each, pickled at protocol 2 with bytes keys, as shipped."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": b"b", b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(x) for x in rng.integers(0, 10, per_batch)], b"filenames": [b"f.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}, protocol=2))
    return folder
