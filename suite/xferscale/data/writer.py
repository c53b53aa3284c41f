"""Pack a converter's samples into webdataset shards, manifests and a reconciliation report.

Output folder (format in :mod:`xferscale.data.shards` and :mod:`xferscale.data.manifest`)::

    {split}-{NNNNN}.tar   {split}-{NNNNN}.idx   {split}.csv   report.json   dataset.json

Order: within a split, samples are sorted by the SHA-256 of their key. The order is
therefore independent of the order the converter yields them in (directory listings differ
between file systems) and classes are mixed within and across shards, which DALI's
shuffle buffer and its per-rank shard ranges rely on (class-sorted shards would give
single-class batches and class-skewed ranks).

Cost of that order: all samples are known before the first shard is written. Samples
given as file paths are kept as paths; samples given as bytes (pickled arrays, tar
members) are appended to one spool file in ``out`` and read back in order, so preparing,
e.g., ImageNet-21k (images streamed from its synset tars) needs its size again in free
space until the run ends, and about 250 bytes of memory per sample (13 M: ~3 GB).

Every image is decoded in full once here (JPEG, 8- and 16-bit PNG, grey and CMYK): one whose
header is intact but whose body is cut or corrupt is a counted skip with the decoder's reason
in ``report.json``, never a crash hours into a training run. Reading and decoding run in
``workers`` processes (the shards are still written by this one process, in the same order),
so the output is byte-identical whatever the number of workers.

Crash safety: every file is written as ``*.tmp`` and moved into place; ``*.tmp`` files of an
interrupted run are removed at the start of the next one, an existing ``dataset.json`` is
removed before anything else is rewritten, and the new ``dataset.json`` is written last.
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from PIL import Image
from tqdm import tqdm

from xferscale.data.manifest import (
    ManifestRow, SplitInfo, atomic_write_text, dataset_json, write_manifest,
)
from xferscale.data.records import (
    NEGATIVE, POSITIVE, UNKNOWN, DatasetSpec, PrepareError, Reconciliation, Sample,
)
from xferscale.data.shards import (
    ShardWriter, encode_labels, image_extension, index_path, label_extension, remove_stale_tmp, shard_name,
)

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_SPOOL = ".spool.tmp"


@dataclass(frozen=True, slots=True)
class _Pending:
    """A sample waiting to be written; in-memory image bytes are spooled to disk. Slots keep
    it small: ImageNet-21k holds 14 M of these until its shards are written."""

    key: str
    image: Path | tuple[int, int]  # file path, or (offset, size) in the spool file
    labels: tuple[int, ...]
    source: str
    patient: str | None


def _check_spec(spec: DatasetSpec) -> None:
    if not spec.classes:
        raise PrepareError(f"dataset {spec.name!r}: no classes")
    if len(set(spec.classes)) != len(spec.classes):
        raise PrepareError(f"dataset {spec.name!r}: duplicate class names")
    if spec.task == "multilabel" and any(set(c) & set(";=") for c in spec.classes):
        raise PrepareError(f"dataset {spec.name!r}: multilabel class names may not contain ';' or '='")


def _check_sample(spec: DatasetSpec, s: Sample) -> None:
    where = f"dataset {spec.name!r}, sample {s.key!r}"
    if not _SPLIT_NAME.match(s.split):
        raise PrepareError(f"{where}: split {s.split!r} must be letters, digits or '_'")
    if spec.task == "multiclass":
        if len(s.labels) != 1 or not 0 <= s.labels[0] < spec.num_classes:
            raise PrepareError(f"{where}: multiclass labels must be (index,) with 0 <= index < {spec.num_classes}, got {s.labels}")
    elif len(s.labels) != spec.num_classes or not set(s.labels) <= {POSITIVE, NEGATIVE, UNKNOWN}:
        raise PrepareError(f"{where}: multilabel labels must be {spec.num_classes} values of 1/0/-1, got {s.labels}")


def _collect(spec: DatasetSpec, samples: Iterable[Sample], spool: BinaryIO, progress: bool) -> dict[str, list[_Pending]]:
    by_split: dict[str, list[_Pending]] = {}
    seen: set[str] = set()
    for s in tqdm(samples, desc=f"{spec.name}: reading", unit=" samples", disable=not progress):
        _check_sample(spec, s)
        if s.key in seen:
            raise PrepareError(f"dataset {spec.name!r}: duplicate sample key {s.key!r}")
        seen.add(s.key)
        if isinstance(s.image, (bytes, bytearray)):
            image: Path | tuple[int, int] = (spool.tell(), len(s.image))
            spool.write(s.image)
        else:
            image = Path(s.image)
        by_split.setdefault(s.split, []).append(_Pending(s.key, image, tuple(s.labels), s.source, s.patient))
    return by_split


def decode_problem(data: bytes) -> str | None:
    """Why encoded image bytes do not decode in full (a cut or corrupt body), or None."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # the whole body: Image.open alone reads the header only
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        return f"image does not decode ({type(err).__name__}: {str(err)[:80]})"
    return None


class _ImageReader:
    """Reads and fully decodes one pending image: ``(ext, bytes)`` or the skip reason.

    Picklable, so worker processes run it: each opens the spool file itself and reads its
    items by (offset, size), so no image bytes travel to the workers.
    """

    def __init__(self, spool_path: Path):
        self.spool_path = spool_path
        self._spool: BinaryIO | None = None

    def __getstate__(self) -> dict:
        return {"spool_path": self.spool_path, "_spool": None}

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __call__(self, image: Path | tuple[int, int]) -> tuple[str, bytes] | str:
        if isinstance(image, tuple):
            if self._spool is None:
                self._spool = open(self.spool_path, "rb")
            offset, size = image
            self._spool.seek(offset)
            data = self._spool.read(size)
        else:
            try:
                data = image.read_bytes()
            except FileNotFoundError:
                return "missing image file"
            except OSError as err:
                return f"unreadable image file ({type(err).__name__})"
        if not data:
            return "empty image"
        ext = image_extension(data)
        if ext is None:
            return "unsupported image format (not JPEG or PNG)"
        return decode_problem(data) or (ext, data)


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_CHUNK = 16  # images per task sent to a worker
_AHEAD = 4  # chunks in flight per worker: bounds memory, keeps the workers busy


def _read_chunk(reader: _ImageReader, images: list[Path | tuple[int, int]]) -> list[tuple[str, bytes] | str]:
    return [reader(image) for image in images]


def _read_all(items: list[_Pending], reader: _ImageReader, workers: int) -> Iterator[tuple[str, bytes] | str]:
    """``reader`` over ``items`` in order, in ``workers`` processes (1: here).

    Chunks are submitted a bounded window ahead and collected in submission order, so the
    output order (and the shards) never depend on which worker finishes first.
    """
    if workers <= 1:
        yield from (reader(item.image) for item in items)
        return
    chunks = (items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK))
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            pending: deque = deque()
            for chunk in chunks:
                pending.append(pool.submit(_read_chunk, reader, [item.image for item in chunk]))
                if len(pending) >= _AHEAD * workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
    except BrokenProcessPool as err:
        raise PrepareError(f"a decoding worker died ({err}); out of memory? try fewer --workers") from None


def _write_split(
    spec: DatasetSpec, split: str, items: list[_Pending], out: Path, reader: _ImageReader,
    log: Reconciliation, shard_size: int, progress: bool, workers: int,
) -> tuple[SplitInfo, list[ManifestRow]]:
    items = sorted(items, key=lambda p: (hashlib.sha256(p.key.encode()).digest(), p.key))
    rows: list[ManifestRow] = []
    shards: list[str] = []
    writer: ShardWriter | None = None
    try:
        read = _read_all(items, reader, workers)
        for item, image in tqdm(zip(items, read), total=len(items), desc=f"{spec.name}: writing {split}",
                                unit=" images", disable=not progress):
            if isinstance(image, str):
                log.skip(item.key if isinstance(item.image, tuple) else f"{item.key} ({item.image})", image)
                continue
            if writer is None or len(writer.entries) == shard_size:
                if writer is not None:
                    writer.close()
                shards.append(shard_name(split, len(shards)))
                writer = ShardWriter(out / shards[-1])
            ext, data = image
            base = f"{len(rows):09d}"
            writer.add_sample(base, [(ext, data), (label_extension(spec.task), encode_labels(spec.task, item.labels))])
            rows.append(ManifestRow(item.key, shards[-1], f"{base}.{ext}", item.labels, item.patient, item.source))
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    log.written[split] = len(rows)
    return SplitInfo(len(rows), tuple(shards), f"{split}.csv"), rows


def _remove_stale_outputs(out: Path, keep: set[str]) -> None:
    """Delete shards, indexes and manifests of an earlier run that this run did not write."""
    for pattern in ("*-[0-9][0-9][0-9][0-9][0-9].tar", "*-[0-9][0-9][0-9][0-9][0-9].idx", "*.csv"):
        for path in out.glob(pattern):
            if path.name not in keep:
                path.unlink()


def report_dict(spec: DatasetSpec, log: Reconciliation) -> dict:
    return {
        "dataset": spec.name,
        "rows_read": log.rows_read,
        "written": dict(sorted(log.written.items())),
        "written_total": sum(log.written.values()),
        "skipped": len(log.skips),
        "skip_reasons": dict(log.skip_reasons().most_common()),
        "skips": [{"ref": s.ref, "reason": s.reason} for s in log.skips],
    }


def summary_lines(spec: DatasetSpec, log: Reconciliation) -> Iterator[str]:
    yield f"{spec.name}: {log.rows_read} rows read, {sum(log.written.values())} images written, {len(log.skips)} skipped"
    for split, n in sorted(log.written.items()):
        yield f"  {split:<12} {n:>9} images"
    for reason, n in log.skip_reasons().most_common():
        yield f"  skipped {n:>7}  {reason}"


def write_dataset(
    spec: DatasetSpec,
    samples: Iterable[Sample],
    out: Path,
    log: Reconciliation,
    *,
    shard_size: int = 1000,
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Write ``samples`` as a prepared dataset in ``out``; returns the path of ``dataset.json``.

    ``workers`` processes read and decode the images (the output does not depend on it).

    Raises :class:`PrepareError` for bad samples (duplicate key, labels that do not fit the
    spec), for an empty result and for a split whose images were all skipped.
    """
    if shard_size <= 0:
        raise PrepareError(f"shard_size must be > 0, got {shard_size}")
    if workers <= 0:
        raise PrepareError(f"--workers must be > 0, got {workers}")
    _check_spec(spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out)
    marker = out / "dataset.json"
    if marker.exists():
        previous = json.loads(marker.read_text()).get("name")
        if previous != spec.name:
            raise PrepareError(f"{out} holds dataset {previous!r}, not {spec.name!r}: choose another --out")
        marker.unlink()  # the folder is incomplete from here until the new marker is written

    spool_path = out / _SPOOL
    try:
        with open(spool_path, "w+b") as spool:
            by_split = _collect(spec, samples, spool, progress)
            if not by_split:
                raise PrepareError(
                    f"dataset {spec.name!r}: the converter produced no samples "
                    f"({log.rows_read} rows read, {len(log.skips)} skipped: {dict(log.skip_reasons())})"
                )
            spool.flush()
            reader = _ImageReader(spool_path)
            splits: dict[str, SplitInfo] = {}
            try:
                for split in sorted(by_split):
                    info, rows = _write_split(spec, split, by_split[split], out, reader, log, shard_size, progress,
                                              workers)
                    splits[split] = info
                    if rows:
                        write_manifest(out / info.manifest, spec, rows)
            finally:
                reader.close()
    finally:
        spool_path.unlink(missing_ok=True)

    atomic_write_text(out / "report.json", json.dumps(report_dict(spec, log), indent=2) + "\n")
    for line in summary_lines(spec, log):
        print(line)
    empty = [name for name, info in splits.items() if info.count == 0]
    if empty:
        raise PrepareError(
            f"dataset {spec.name!r}: split(s) {', '.join(empty)} have no images left after skips "
            f"(see {out / 'report.json'})"
        )
    keep = {info.manifest for info in splits.values()}
    for info in splits.values():
        keep.update(info.shards)
        keep.update(index_path(Path(s)).name for s in info.shards)
    _remove_stale_outputs(out, keep)
    atomic_write_text(marker, dataset_json(spec, splits))
    return marker
