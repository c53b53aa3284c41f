"""What a dataset converter hands to the shard writer.

A converter (``xferscale.data_prep.<dataset>``) reads a dataset's public raw layout and
yields :class:`Sample` records; everything it does not keep is reported as a :class:`Skip`
on the :class:`Reconciliation`, so that no row disappears silently.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Task = Literal["multiclass", "multilabel"]

POSITIVE, NEGATIVE, UNKNOWN = 1, 0, -1


@dataclass(frozen=True)
class DatasetSpec:
    """Name, task type and class names of a prepared dataset."""

    name: str
    task: Task
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True, slots=True)
class TarMember:
    """An image stored as a member of an uncompressed tar: ``size`` bytes at ``offset``.

    Converters of tar-packed releases (ImageNet-21k's synset tars) hand these over instead
    of the bytes, so listing a release reads only its tar headers and the writer reads each
    image once, in its worker processes, straight from the archive.
    """

    path: Path
    offset: int
    size: int

    def read_bytes(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.path}: member at byte {self.offset} cut short ({len(data)} of {self.size} bytes)")
        return data


@dataclass(frozen=True)
class Sample:
    """One training/evaluation example.

    ``labels`` is ``(class_index,)`` for a multiclass task and one value per class
    (POSITIVE, NEGATIVE or UNKNOWN) for a multilabel task.
    ``image`` is the path of an image file, a :class:`TarMember`, or the encoded image
    bytes (arrays from pickles re-encoded as PNG).
    """

    key: str
    split: str
    image: Path | TarMember | bytes
    labels: tuple[int, ...]
    source: str
    patient: str | None = None


@dataclass(frozen=True)
class Skip:
    ref: str
    reason: str


@dataclass
class Reconciliation:
    """Counts of a conversion: rows read, samples written, skips with their reasons."""

    rows_read: int = 0
    written: Counter = field(default_factory=Counter)  # per split
    skips: list[Skip] = field(default_factory=list)

    def row(self, n: int = 1) -> None:
        self.rows_read += n

    def skip(self, ref: str, reason: str) -> None:
        self.skips.append(Skip(ref, reason))

    def skip_reasons(self) -> Counter:
        return Counter(s.reason for s in self.skips)


class PrepareError(ValueError):
    """Input a converter cannot use; the message names the file and what is wrong."""
