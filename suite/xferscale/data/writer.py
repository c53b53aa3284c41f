"""Pack a converter's samples into webdataset shards, manifests and a reconciliation report.

Output folder (format in :mod:`xferscale.data.shards` and :mod:`xferscale.data.manifest`)::

    {split}-{NNNNN}.tar   {split}-{NNNNN}.idx   {split}.csv   report.json   dataset.json

Order: within a split, samples are sorted by the SHA-256 of their key. The order is
therefore independent of the order the converter yields them in (directory listings differ
between file systems) and classes are mixed within and across shards, which DALI's
shuffle buffer and its per-rank shard ranges rely on (class-sorted shards would give
single-class batches and class-skewed ranks).

Shards are planned before any image is read: shard ``NNNNN`` of a split holds the samples
at positions ``NNNNN * shard_size ...`` of that order, less those whose image fails to
decode, and a member's name is its sample's position. A shard thus depends on its own
samples only, which is what lets tasks write disjoint shards in parallel
(:mod:`xferscale.data.slices`, ``srun -n K`` or a job array) and a re-run redo only the
shards that are not done (:mod:`xferscale.data.merge`); the result is byte-identical to a
one-process run whatever the number of tasks and worker processes.

Cost of that order: all samples are known before the first shard is written. Samples
given as file paths or tar members are kept as references; samples given as bytes (arrays
from pickles) are appended to a spool file in ``out`` and read back in order (each task
keeps its own). A sample costs under 300 bytes of memory (``xferscale bench prepare``
measures it): ImageNet-21k's 14 M, about 4 GB per task.

Every image is decoded in full once here (JPEG, 8- and 16-bit PNG, grey and CMYK): one whose
header is intact but whose body is cut or corrupt is a counted skip with the decoder's reason
in ``report.json``, never a crash hours into a training run. Reading and decoding run in
``workers`` processes; each shard is written by one process, in order. The manifest records
the SHA-256 of each stored image (computed as the shard is written, so the plan's per-sample
records do not grow).

Crash safety: every file is written as ``*.tmp`` and moved into place; an existing
``dataset.json`` is removed before anything else is rewritten, and the new ``dataset.json``
is written last, by the merge.
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
from collections import OrderedDict, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from xferscale.data.manifest import ManifestRow
from xferscale.data.merge import (
    PARTS, Part, Plan, PlannedShard, merge_when_complete, read_part, write_part, write_plan,
)
from xferscale.data.records import (
    NEGATIVE, POSITIVE, UNKNOWN, DatasetSpec, PrepareError, Reconciliation, Sample, Skip, TarMember,
)
from xferscale.data.shards import (
    ShardWriter, encode_labels, image_extension, label_extension, remove_stale_tmp, shard_name,
)
from xferscale.data.slices import WHOLE, Slice

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")

ImageRef = tuple[str | None, int | None, int | None]  # (path, offset, size), see _Pending


@dataclass(frozen=True, slots=True)
class _Pending:
    """A sample waiting to be written. Slots, shared folder names and label tuples, and flat
    image fields keep it small: ImageNet-21k holds 14 M of these until its shards are written."""

    key: str
    folder: str | None  # the image file's folder, or the uncompressed tar holding it; None: the spool
    name: str | None  # the image file's name in ``folder``; None: ``folder`` is a tar
    offset: int | None  # of the image bytes in the tar or the spool; None: a whole file
    size: int | None
    labels: tuple[int, ...]
    source: str
    patient: str | None

    @property
    def path(self) -> str | None:
        return self.folder if self.name is None else os.path.join(self.folder, self.name)

    @property
    def image(self) -> ImageRef:
        return self.path, self.offset, self.size

    @property
    def ref(self) -> str:
        """How a skip names the sample."""
        return self.key if self.folder is None else f"{self.key} ({self.path})"

    def describe(self) -> bytes:
        return f"{self.key}\0{self.path}\0{self.offset}\0{self.size}\0{self.labels}\0{self.source}\0{self.patient}\n".encode()


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
    shared: dict = {}  # one object per distinct label tuple, tar path, source name
    for s in tqdm(samples, desc=f"{spec.name}: reading", unit=" samples", disable=not progress):
        _check_sample(spec, s)
        if s.key in seen:
            raise PrepareError(f"dataset {spec.name!r}: duplicate sample key {s.key!r}")
        seen.add(s.key)
        if isinstance(s.image, (bytes, bytearray)):
            folder, name, offset, size = None, None, spool.tell(), len(s.image)
            spool.write(s.image)
        elif isinstance(s.image, TarMember):
            folder, name, offset, size = str(s.image.path), None, s.image.offset, s.image.size
        else:
            (folder, name), offset, size = os.path.split(s.image), None, None
        by_split.setdefault(s.split, []).append(_Pending(
            s.key, folder if folder is None else shared.setdefault(folder, folder), name, offset, size,
            shared.setdefault(tuple(s.labels), tuple(s.labels)), shared.setdefault(s.source, s.source), s.patient))
    return by_split


def _hash_order(items: list[_Pending]) -> list[_Pending]:
    """``items`` sorted by the SHA-256 of their keys (the first 128 bits: two flat uint64
    columns, not a Python object per sample)."""
    prefixes = bytearray(16 * len(items))
    for i, item in enumerate(items):
        prefixes[16 * i:16 * i + 16] = hashlib.sha256(item.key.encode()).digest()[:16]
    columns = np.frombuffer(prefixes, dtype=">u8").reshape(-1, 2)
    order = np.lexsort((columns[:, 1], columns[:, 0]))
    return [items[i] for i in order]  # not order.tolist(): a Python int per sample


@dataclass(frozen=True)
class ShardWork:
    """One planned shard and the samples it will hold (less the images that fail to decode)."""

    planned: PlannedShard
    number: int  # across all splits: what a slice is assigned by
    start: int  # position of the first sample in its split's order
    items: list[_Pending]


def plan_shards(spec: DatasetSpec, samples: Iterable[Sample], spool: BinaryIO, shard_size: int,
                progress: bool = False) -> list[ShardWork]:
    """Check and collect ``samples`` (spooling their bytes to ``spool``) and plan the shards
    of every split; what a prepare task holds in memory until its shards are written."""
    by_split = _collect(spec, samples, spool, progress)
    work: list[ShardWork] = []
    for split in sorted(by_split):
        ordered = _hash_order(by_split[split])
        by_split[split] = ordered  # drop the converter-order list
        for number, start in enumerate(range(0, len(ordered), shard_size)):
            items = ordered[start:start + shard_size]
            digest = hashlib.sha256(f"{spec}\0{split}\0{number}\0{start}\n".encode())
            for item in items:
                digest.update(item.describe())
            planned = PlannedShard(split, shard_name(split, number), digest.hexdigest())
            work.append(ShardWork(planned, len(work), start, items))
    return work


def decode_problem(data: bytes) -> str | None:
    """Why encoded image bytes do not decode in full (a cut or corrupt body), or None."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # the whole body: Image.open alone reads the header only
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        return f"image does not decode ({type(err).__name__}: {str(err)[:80]})"
    return None


class _ImageReader:
    """Reads and fully decodes one image: ``(ext, bytes)`` or the skip reason.

    Picklable, so worker processes run it: each opens the spool and the tars itself (a few
    kept open) and reads by (offset, size), so no image bytes travel to the workers.
    """

    _OPEN_FILES = 32

    def __init__(self, spool_path: Path):
        self.spool_path = spool_path
        self._files: OrderedDict[str, BinaryIO] = OrderedDict()

    def __getstate__(self) -> dict:
        return {"spool_path": self.spool_path, "_files": OrderedDict()}

    def close(self) -> None:
        while self._files:
            self._files.popitem()[1].close()

    def _handle(self, path: str) -> BinaryIO:
        if path in self._files:
            self._files.move_to_end(path)
        else:
            if len(self._files) >= self._OPEN_FILES:
                self._files.popitem(last=False)[1].close()
            self._files[path] = open(path, "rb")
        return self._files[path]

    def _read(self, image: ImageRef) -> bytes:
        path, offset, size = image
        if offset is None:
            return Path(path).read_bytes()
        handle = self._handle(str(self.spool_path) if path is None else path)
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise EOFError(f"cut short ({len(data)} of {size} bytes)")
        return data

    def __call__(self, image: ImageRef) -> tuple[str, bytes] | str:
        try:
            data = self._read(image)
        except FileNotFoundError:
            return "missing image file"
        except EOFError as err:
            return f"image bytes {err}"
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


def _read_chunk(reader: _ImageReader, images: list[ImageRef]) -> list[tuple[str, bytes] | str]:
    return [reader(image) for image in images]


def _read_all(items: Iterable[_Pending], reader: _ImageReader, workers: int) -> Iterator[tuple[str, bytes] | str]:
    """``reader`` over ``items`` in order, in ``workers`` processes (1: here).

    Chunks are submitted a bounded window ahead and collected in submission order, so the
    output order (and the shards) never depend on which worker finishes first.
    """
    if workers <= 1:
        yield from (reader(item.image) for item in items)
        return
    items = iter(items)
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            pending: deque = deque()
            while chunk := [item.image for _, item in zip(range(_CHUNK), items)]:
                pending.append(pool.submit(_read_chunk, reader, chunk))
                if len(pending) >= _AHEAD * workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
    except BrokenProcessPool as err:
        raise PrepareError(f"a decoding worker died ({err}); out of memory? try fewer --workers") from None


def _write_shards(
    spec: DatasetSpec, work: list[ShardWork], out: Path, reader: _ImageReader, progress: bool, workers: int,
) -> None:
    """Write each shard of ``work`` (tar and index, then its part record), in order."""
    read = _read_all((item for shard in work for item in shard.items), reader, workers)
    bar = tqdm(total=sum(len(s.items) for s in work), desc=f"{spec.name}: writing", unit=" images",
               disable=not progress)
    with bar:
        for shard in work:
            rows: list[ManifestRow] = []
            skips: list[Skip] = []
            writer: ShardWriter | None = None
            try:
                for position, item in enumerate(shard.items, start=shard.start):
                    image = next(read)
                    bar.update()
                    if isinstance(image, str):
                        skips.append(Skip(item.ref, image))
                        continue
                    if writer is None:
                        writer = ShardWriter(out / shard.planned.name)
                    ext, data = image
                    base = f"{position:09d}"
                    writer.add_sample(base, [(ext, data), (label_extension(spec.task), encode_labels(spec.task, item.labels))])
                    rows.append(ManifestRow(item.key, shard.planned.name, f"{base}.{ext}", item.labels, item.patient,
                                            item.source, hashlib.sha256(data).hexdigest()))
                if writer is not None:
                    writer.close()
            except BaseException:
                if writer is not None:
                    writer.abort()
                raise
            write_part(out, shard.planned, Part(shard.planned.digest, tuple(rows), tuple(skips)))


def _start(out: Path, spec: DatasetSpec, task: Slice) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if task.whole:
        remove_stale_tmp(out)  # with several tasks, another one's files may be in progress
    marker = out / "dataset.json"
    if marker.exists():
        previous = json.loads(marker.read_text()).get("name")
        if previous != spec.name:
            raise PrepareError(f"{out} holds dataset {previous!r}, not {spec.name!r}: choose another --out")
        marker.unlink()  # the folder is incomplete from here until the new marker is written


def write_dataset(
    spec: DatasetSpec,
    samples: Iterable[Sample],
    out: Path,
    log: Reconciliation,
    *,
    shard_size: int = 1000,
    progress: bool = True,
    workers: int = 1,
    task: Slice = WHOLE,
) -> Path | None:
    """Write ``samples`` as a prepared dataset in ``out``; returns the path of ``dataset.json``,
    or None when this task wrote its slice and other tasks' shards are still missing (the
    last task to finish merges).

    ``workers`` processes read and decode the images; ``task`` says which shards this
    process writes. The output depends on neither. Shards done by an earlier, interrupted
    run of the same plan are kept.

    Raises :class:`PrepareError` for bad samples (duplicate key, labels that do not fit the
    spec), for an empty result and for a split whose images were all skipped.
    """
    if shard_size <= 0:
        raise PrepareError(f"shard_size must be > 0, got {shard_size}")
    if workers <= 0:
        raise PrepareError(f"--workers must be > 0, got {workers}")
    _check_spec(spec)
    out = Path(out)
    _start(out, spec, task)
    spool_path = out / f".spool-{task.index}-of-{task.count}.tmp"
    try:
        with open(spool_path, "w+b") as spool:
            work = plan_shards(spec, samples, spool, shard_size, progress)
            if not work:
                raise PrepareError(
                    f"dataset {spec.name!r}: the converter produced no samples "
                    f"({log.rows_read} rows read, {len(log.skips)} skipped: {dict(log.skip_reasons())})"
                )
            spool.flush()
            write_plan(out, Plan(spec, log.rows_read, tuple(log.skips), tuple(s.planned for s in work)))
            mine = [s for s in work if task.owns(s.number) and read_part(out, s.planned) is None]
            kept = sum(task.owns(s.number) for s in work) - len(mine)
            if kept:
                print(f"{spec.name}: slice {task}: {kept} shard(s) already written by an earlier run, kept")
            reader = _ImageReader(spool_path)
            try:
                _write_shards(spec, mine, out, reader, progress, workers)
            finally:
                reader.close()
            del work, mine  # the merge streams the parts: free the plan first
    finally:
        spool_path.unlink(missing_ok=True)
    marker = merge_when_complete(out, log)
    if marker is None:
        print(f"{spec.name}: slice {task} written; shards of other slices are still missing: the last task to "
              f"finish merges them, or run `xferscale prepare {spec.name} --merge --out {out}` "
              f"(state in {out / PARTS})")
    return marker
