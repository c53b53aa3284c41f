"""Per-split manifests (CSV) and ``dataset.json``, the description of a prepared dataset.

``{split}.csv`` has one row per written sample, in shard order, with the columns
``key, shard, member, labels, patient, source, sha256``. ``labels`` is human readable: the
class name for a multiclass task, ``Name=1;Name=0;Name=-1`` (every class, 1 positive,
0 negative, -1 unknown) for a multilabel task. ``sha256`` is the hex SHA-256 of the image
bytes as stored in the shard: the same image file prepared into two datasets has the same
digest, which is how a transfer run finds target test images its source trained on
(:mod:`xferscale.transfer.leakage`). Manifests written before the column existed are read
with no digests.

``dataset.json`` is written last by the writer: its presence marks a complete dataset.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from xferscale.data.records import DatasetSpec, PrepareError

FORMAT = "xferscale-webdataset"
FORMAT_VERSION = 1
MANIFEST_COLUMNS = ("key", "shard", "member", "labels", "patient", "source", "sha256")
LEGACY_COLUMNS = MANIFEST_COLUMNS[:-1]  # no digests


@dataclass(frozen=True)
class ManifestRow:
    key: str
    shard: str
    member: str
    labels: tuple[int, ...]
    patient: str | None
    source: str
    sha256: str | None = None  # of the stored image bytes, hex; None in a manifest without digests


def format_labels(spec: DatasetSpec, labels: tuple[int, ...]) -> str:
    if spec.task == "multiclass":
        return spec.classes[labels[0]]
    return ";".join(f"{name}={value}" for name, value in zip(spec.classes, labels))


def parse_labels(spec: DatasetSpec, text: str, where: str) -> tuple[int, ...]:
    if spec.task == "multiclass":
        try:
            return (spec.classes.index(text),)
        except ValueError:
            raise PrepareError(f"{where}: unknown class {text!r}") from None
    values = dict(item.rsplit("=", 1) for item in text.split(";") if item)
    if sorted(values) != sorted(spec.classes):
        raise PrepareError(f"{where}: labels {text!r} do not list exactly the dataset's classes")
    return tuple(int(values[name]) for name in spec.classes)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_manifest(path: Path, spec: DatasetSpec, rows: Iterable[ManifestRow]) -> int:
    """Write the rows (streamed) as ``path``, atomically, unless there are none; returns their count."""
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(MANIFEST_COLUMNS)
        for count, r in enumerate(rows, start=1):
            out.writerow([r.key, r.shard, r.member, format_labels(spec, r.labels), r.patient or "", r.source,
                          r.sha256 or ""])
    if count:
        os.replace(tmp, path)
    else:
        tmp.unlink()
    return count


def _check_columns(path: Path, header: Iterable[str] | None) -> tuple[str, ...]:
    """The manifest's header, if it is one this version reads (with or without digests)."""
    columns = tuple(header or ())
    if columns not in (MANIFEST_COLUMNS, LEGACY_COLUMNS):
        raise PrepareError(f"{path}: expected columns {', '.join(MANIFEST_COLUMNS)}")
    return columns


def read_manifest(path: Path, spec: DatasetSpec) -> list[ManifestRow]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            _check_columns(path, reader.fieldnames)
            return [
                ManifestRow(
                    row["key"], row["shard"], row["member"],
                    parse_labels(spec, row["labels"], f"{path}:{line}"),
                    row["patient"] or None, row["source"], row.get("sha256") or None,
                )
                for line, row in enumerate(reader, start=2)
            ]
    except OSError as err:
        raise PrepareError(f"{path}: cannot read manifest ({err})") from err


def iter_digests(path: Path) -> Iterator[tuple[str, str | None]]:
    """``(key, sha256)`` of each row, streamed: a 14 M-row manifest is never held in memory.
    The digest is None for a row (or a whole manifest) written without one."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            if _check_columns(path, next(reader, None)) == LEGACY_COLUMNS:
                yield from ((row[0], None) for row in reader)
                return
            column = MANIFEST_COLUMNS.index("sha256")
            yield from ((row[0], row[column] or None) for row in reader)
    except OSError as err:
        raise PrepareError(f"{path}: cannot read manifest ({err})") from err


@dataclass(frozen=True)
class SplitInfo:
    count: int
    shards: tuple[str, ...]
    manifest: str


@dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.json`` says about a prepared dataset folder."""

    root: Path
    spec: DatasetSpec
    splits: dict[str, SplitInfo]

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise PrepareError(
                f"{self.root}: dataset {self.spec.name!r} has no split {name!r}; splits: {', '.join(self.splits)}"
            )
        return self.splits[name]

    def manifest(self, split: str) -> list[ManifestRow]:
        return read_manifest(self.root / self.split(split).manifest, self.spec)

    def shard_paths(self, split: str) -> list[Path]:
        return [self.root / name for name in self.split(split).shards]


def dataset_json(spec: DatasetSpec, splits: dict[str, SplitInfo]) -> str:
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "task": spec.task,
        "classes": list(spec.classes),
        "splits": {
            name: {"count": s.count, "shards": list(s.shards), "manifest": s.manifest}
            for name, s in sorted(splits.items())
        },
    }
    return json.dumps(doc, indent=2) + "\n"


def load_dataset_info(root: Path | str) -> DatasetInfo:
    """Read ``root/dataset.json``; a missing file means the dataset is absent or incomplete."""
    root = Path(root)
    path = root / "dataset.json"
    if not path.is_file():
        raise PrepareError(
            f"{path} not found: {root} is not a prepared dataset, or its `xferscale prepare` run did not finish"
        )
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PrepareError(f"{path}: not valid JSON ({err})") from err
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise PrepareError(
            f"{path}: format {doc.get('format')!r} v{doc.get('format_version')} is not "
            f"{FORMAT} v{FORMAT_VERSION}; re-run `xferscale prepare`"
        )
    spec = DatasetSpec(doc["name"], doc["task"], tuple(doc["classes"]))
    splits = {
        name: SplitInfo(s["count"], tuple(s["shards"]), s["manifest"]) for name, s in doc["splits"].items()
    }
    return DatasetInfo(root, spec, splits)
