"""CIFAR-10, python version (``cifar-10-python.tar.gz``), 50k train / 10k test, 10 classes."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, Reconciliation, Sample
from xferscale.data_prep.cifar_batches import CifarRelease, read_release

NAME = "cifar10"
DESCRIPTION = ("cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} "
               "(python pickles; RAW may be that folder or its parent)")

RELEASE = CifarRelease(
    name=NAME,
    folder="cifar-10-batches-py",
    splits=(("train", tuple(f"data_batch_{i}" for i in range(1, 6))), ("test", ("test_batch",))),
    meta="batches.meta",
    names_key="label_names",
    labels_key="labels",
)


@register_converter(NAME, DESCRIPTION)
def read(raw: Path, log: Reconciliation) -> tuple[DatasetSpec, Iterable[Sample]]:
    return read_release(Path(raw), log, RELEASE)
