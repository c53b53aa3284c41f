"""Webdataset tar shards and their DALI index files.

On-disk format of one prepared sample (member names inside ``{split}-{NNNNN}.tar``):

- ``{NNNNNNNNN}.jpg`` / ``.png``: the image bytes exactly as the converter gave them
  (JPEG, 8- or 16-bit PNG; grey or RGB);
- ``{NNNNNNNNN}.cls``: multiclass label, one little-endian int32 (class index);
- ``{NNNNNNNNN}.lbl``: multilabel target, one int8 per class: 1 positive, 0 negative,
  -1 unknown.

``NNNNNNNNN`` is the sample's position in its split (the original key is in the manifest):
webdataset groups members by the name up to the first dot, so keys with dots or slashes
cannot be member names. Both label forms are read by DALI's webdataset reader through its
``dtypes`` argument (INT32 / INT8) without Python code.

Tars are plain ustar with mtime, uid, gid and owner names zeroed, so the same input gives
byte-identical shards. Next to each tar, ``{split}-{NNNNN}.idx`` is DALI's webdataset index
(format ``v1.2``, the one ``wds2idx`` writes): a header line ``v1.2 <samples>`` and one
line per sample listing ``<ext> <data offset> <size> <member name>`` for each component.
The writer records offsets while writing the tar, so no second pass over the data is
needed; the loaders always pass the index (DALI would otherwise scan every tar on start).
The torch loader reads members through the same index (seek + read).
"""
from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np

from xferscale.data.records import PrepareError

INDEX_VERSION = "v1.2"
MULTICLASS_EXT, MULTILABEL_EXT = "cls", "lbl"
IMAGE_EXTS = ("jpg", "png")
_TAR_BLOCK = tarfile.BLOCKSIZE


def image_extension(data: bytes) -> str | None:
    """The member extension for encoded image bytes, or None for an unsupported format."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


def label_extension(task: str) -> str:
    return MULTICLASS_EXT if task == "multiclass" else MULTILABEL_EXT


def encode_labels(task: str, labels: tuple[int, ...]) -> bytes:
    dtype = "<i4" if task == "multiclass" else "i1"
    return np.asarray(labels, dtype=dtype).tobytes()


def decode_labels(task: str, data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i4" if task == "multiclass" else "i1")


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:05d}.tar"


def index_path(tar_path: Path) -> Path:
    return tar_path.with_suffix(".idx")


@dataclass(frozen=True)
class Component:
    ext: str
    offset: int  # of the member's data (not its header) in the tar
    size: int
    name: str


IndexEntry = tuple[Component, ...]  # one sample: its components in tar order


class ShardWriter:
    """Writes one tar shard and its index atomically (``*.tmp`` then ``os.replace``)."""

    def __init__(self, path: Path):
        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self.entries: list[IndexEntry] = []

    def add_sample(self, member_base: str, components: Iterable[tuple[str, bytes]]) -> None:
        entry = []
        for ext, data in components:
            name = f"{member_base}.{ext}"
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
            padded = -(-len(data) // _TAR_BLOCK) * _TAR_BLOCK
            entry.append(Component(ext, self._tar.offset - padded, len(data), name))
        self.entries.append(tuple(entry))

    def close(self) -> None:
        """Finish the tar, write the index, then move both into place."""
        self._tar.close()
        idx = index_path(self.path)
        write_index(idx.with_name(idx.name + ".tmp"), self.entries)
        os.replace(idx.with_name(idx.name + ".tmp"), idx)
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            self._tar.close()  # on a full disk the close's flush fails too
        except OSError:
            pass
        finally:
            self._tmp.unlink(missing_ok=True)


def write_index(path: Path, entries: Iterable[IndexEntry]) -> None:
    """Write a DALI webdataset index (``v1.2``) listing ``entries`` in the given order.

    Entries may be a subset of a tar's samples, repeat a sample or be reordered: DALI
    reads exactly the listed samples, which is how few-shot subsets and oversampled epochs
    are read without copying images.
    """
    entries = list(entries)
    with open(path, "w") as f:
        f.write(f"{INDEX_VERSION} {len(entries)}\n")
        for entry in entries:
            f.write(" ".join(f"{c.ext} {c.offset} {c.size} {c.name}" for c in entry) + "\n")


def read_index(path: Path) -> list[IndexEntry]:
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise PrepareError(f"{path}: cannot read shard index ({err})") from err
    header = lines[0].split() if lines else []
    if len(header) != 2 or header[0] != INDEX_VERSION or int(header[1]) != len(lines) - 1:
        raise PrepareError(f"{path}: not a {INDEX_VERSION} webdataset index with a matching sample count")
    entries = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields or len(fields) % 4:
            raise PrepareError(f"{path}:{number}: expected groups of 'ext offset size name'")
        entry = tuple(
            Component(fields[i], int(fields[i + 1]), int(fields[i + 2]), fields[i + 3])
            for i in range(0, len(fields), 4)
        )
        entries.append(entry)
    return entries


def read_component(handle: BinaryIO, component: Component) -> bytes:
    handle.seek(component.offset)
    data = handle.read(component.size)
    if len(data) != component.size:
        raise OSError(f"member {component.name}: truncated ({len(data)} of {component.size} bytes)")
    return data


def remove_stale_tmp(folder: Path) -> list[Path]:
    """Delete ``*.tmp`` files left by an interrupted run; returns what was removed."""
    stale = sorted(folder.glob("*.tmp"))
    for path in stale:
        path.unlink()
    return stale
