"""The CIFAR "python version" pickles, shared by the CIFAR-10 and CIFAR-100 converters.

Each batch file is a pickled dict written by Python 2: ``data`` is an ``N x 3072`` uint8
array (row-major 32x32 red plane, then green, then blue) and the labels key holds ``N``
ints. The images are re-encoded losslessly as PNG bytes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample
from xferscale.data_prep.image_folders import nonempty, png_bytes
from xferscale.data_prep.raw_files import load_pickle


@dataclass(frozen=True)
class CifarRelease:
    name: str
    folder: str                                    # what the release tarball unpacks to
    splits: tuple[tuple[str, tuple[str, ...]], ...]  # (split, batch files in order)
    meta: str                                      # file with the class names
    names_key: str
    labels_key: str


@dataclass(frozen=True)
class _Batch:
    path: Path
    split: str
    data: np.ndarray
    labels: np.ndarray


def read_release(raw: Path, log: Reconciliation, release: CifarRelease
                 ) -> tuple[DatasetSpec, Iterable[Sample]]:
    """Validate every batch up front (keys, shapes, lengths), then stream PNG samples."""
    # RAW may be the unpacked release folder itself or its parent
    root = raw if (raw / release.meta).is_file() else raw / release.folder
    meta_path = root / release.meta
    names = load_pickle(meta_path, [release.names_key])[release.names_key]
    classes = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    if not classes:
        raise PrepareError(f"{meta_path}: {release.names_key!r} is empty")
    batches = [_load_batch(root / file, split, release.labels_key)
               for split, files in release.splits for file in files]
    spec = DatasetSpec(release.name, "multiclass", classes)
    return spec, nonempty(_samples(batches, len(classes), release.name, log), root)


def _load_batch(path: Path, split: str, labels_key: str) -> _Batch:
    batch = load_pickle(path, ["data", labels_key])
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[labels_key])
    side = math.isqrt(data.shape[1] // 3) if data.ndim == 2 else 0
    if data.ndim != 2 or data.dtype != np.uint8 or side == 0 or 3 * side * side != data.shape[1]:
        raise PrepareError(f"{path}: 'data' should be an N x (3*S*S) uint8 array, got shape "
                           f"{data.shape} dtype {data.dtype}")
    if labels.ndim != 1 or len(labels) != len(data):
        raise PrepareError(f"{path}: {len(data)} images but {labels.size} entries in {labels_key!r}")
    return _Batch(path, split, data.reshape(len(data), 3, side, side), labels)


def _samples(batches: list[_Batch], num_classes: int, source: str,
             log: Reconciliation) -> Iterator[Sample]:
    counters: dict[str, int] = {}
    for batch in batches:
        for chw, label in zip(batch.data, batch.labels):
            log.row()
            counters[batch.split] = number = counters.get(batch.split, 0) + 1
            key = f"{batch.split}_{number:05d}"
            if not 0 <= int(label) < num_classes:
                log.skip(f"{batch.path}:{key}", f"label {int(label)} outside 0..{num_classes - 1}")
                continue
            yield Sample(key=key, split=batch.split, image=png_bytes(chw.transpose(1, 2, 0)),
                         labels=(int(label),), source=source)
