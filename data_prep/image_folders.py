"""Shared pieces of the natural-image converters.

- :func:`image_problem` opens an image's header (path or bytes) and says why it cannot be
  used, so converters skip it with that reason instead of failing later in the decoder;
- :func:`class_folder_samples` walks a ``<root>/<class>/<image>`` tree (ImageNet train, val);
- :func:`png_bytes` encodes an ``H x W x 3`` uint8 array (CIFAR) as PNG;
- :func:`nonempty` turns "the conversion produced nothing" into a named error.

Only the header is read here (``Image.open`` is lazy), to skip the plainly unusable early;
every image is then decoded in full once, in parallel, when the shards are written
(:func:`xferscale.data.writer.decode_problem`), which catches truncated bodies.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
from PIL import Image

from xferscale.data.records import PrepareError, Reconciliation, Sample

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})
# What the loaders' decoders (PIL, DALI) read. MPO is a JPEG with extra frames (some
# camera photos); it decodes as its first JPEG frame.
DECODABLE_FORMATS = frozenset({"JPEG", "MPO", "PNG"})


def name_problem(name: str) -> str | None:
    """Why a file name is not an image's (its suffix), or None for .jpg/.jpeg/.png."""
    suffix = Path(name).suffix
    return None if suffix.lower() in IMAGE_SUFFIXES else f"not an image file name (suffix {suffix!r})"


def image_problem(image: Path | bytes) -> str | None:
    """Why ``image`` cannot be used (missing, empty, not an image, not JPEG/PNG), or None.

    Greyscale, CMYK and RGBA JPEG/PNG pass: the loaders convert them to RGB. A file whose
    suffix lies about its format (a PNG named ``.jpg``) passes too, since decoders sniff
    the content rather than trust the name.
    """
    if isinstance(image, Path):
        try:
            if image.stat().st_size == 0:
                return "image file empty"
        except FileNotFoundError:
            return "image file missing"
        source = image
    else:
        if not image:
            return "image bytes empty"
        source = io.BytesIO(image)
    try:
        with Image.open(source) as im:
            fmt = im.format
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"not a readable image ({type(e).__name__})"
    if fmt not in DECODABLE_FORMATS:
        return f"{fmt} image, not JPEG/PNG"
    return None


def png_bytes(array: np.ndarray) -> bytes:
    """Encode an ``H x W x 3`` (or ``H x W``) uint8 array as PNG bytes (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def class_folders(root: Path) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (one per class)."""
    return sorted(name for name, is_dir in _listing(root) if is_dir)


def _listing(folder: Path) -> list[tuple[str, bool]]:
    """Sorted (name, is_dir) of a folder; scandir's d_type saves a stat per entry, which
    matters for 1.3 M ImageNet files on a parallel file system."""
    with os.scandir(folder) as entries:
        return sorted((e.name, e.is_dir()) for e in entries)


def class_folder_samples(root: Path, class_index: Mapping[str, int], split: str, source: str,
                         log: Reconciliation) -> Iterator[Sample]:
    """Samples of a ``<root>/<class>/<image>`` tree, classes and files in sorted order.

    Every entry is counted; a file that is not an image, a file in a folder whose class is
    not in ``class_index`` (e.g. a val class with no train images), a loose file directly
    under ``root`` and a nested folder are skipped with the reason.
    """
    for name, is_dir in _listing(root):
        if not is_dir:
            log.row()
            log.skip(str(root / name), "file outside any class folder")
            continue
        index = class_index.get(name)
        for file, nested in _listing(root / name):
            path = root / name / file
            log.row()
            if nested:
                log.skip(str(path), "folder inside a class folder (not read)")
            elif index is None:
                log.skip(str(path), f"class folder {name!r} is not a known class")
            else:
                sample = image_sample(path, path.stem, split, index, source, log)
                if sample is not None:
                    yield sample


def image_sample(path: Path, key: str, split: str, index: int, source: str,
                 log: Reconciliation) -> Sample | None:
    """A Sample for an image file, or None after logging why the file is unusable."""
    problem = name_problem(path.name) or image_problem(path)
    if problem is not None:
        log.skip(str(path), problem)
        return None
    return Sample(key=key, split=split, image=path, labels=(index,), source=source)


def nonempty(samples: Iterable[Sample], where: Path) -> Iterator[Sample]:
    """Pass ``samples`` through; raise if there were none (every item skipped, or none found)."""
    produced = False
    for sample in samples:
        produced = True
        yield sample
    if not produced:
        raise PrepareError(f"{where}: no usable images found (see the skip reasons)")
