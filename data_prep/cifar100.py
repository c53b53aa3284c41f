"""CIFAR-100, python version (``cifar-100-python.tar.gz``), 50k train / 10k test, 100 fine classes."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, Reconciliation, Sample
from xferscale.data_prep.cifar_batches import CifarRelease, read_release

NAME = "cifar100"
DESCRIPTION = ("cifar-100-python/{train,test,meta} (python pickles, fine labels; "
               "RAW may be that folder or its parent)")

RELEASE = CifarRelease(
    name=NAME,
    folder="cifar-100-python",
    splits=(("train", ("train",)), ("test", ("test",))),
    meta="meta",
    names_key="fine_label_names",
    labels_key="fine_labels",
)


@register_converter(NAME, DESCRIPTION)
def read(raw: Path, log: Reconciliation) -> tuple[DatasetSpec, Iterable[Sample]]:
    return read_release(Path(raw), log, RELEASE)
