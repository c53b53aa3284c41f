"""Oxford-IIIT Pets (Parkhi et al. 2012): 37 cat and dog breeds, 3680 trainval / 3669 test.

Annotation lines are ``Image CLASS-ID SPECIES BREED-ID`` (``#`` starts a comment); the
class name is the image name without its trailing ``_<n>`` (``american_bulldog_10`` ->
``american_bulldog``), classes ordered by CLASS-ID. trainval.txt becomes split ``train``.

Known quirks of the release: a dozen ``.jpg`` files are really PNG, greyscale or CMYK
images (TFDS lists them, e.g. ``Egyptian_Mau_14``). JPEG and PNG content of any colour
mode is kept as is (the decoders sniff the format and convert to RGB); files that are
missing, empty, unreadable or in another format (GIF, ...) are skipped with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample
from xferscale.data_prep.image_folders import image_sample, nonempty
from xferscale.data_prep.raw_files import require_dir, require_file

NAME = "pets"
DESCRIPTION = ("images/<Breed>_<n>.jpg, annotations/trainval.txt and annotations/test.txt "
               "(lines 'Image CLASS-ID SPECIES BREED-ID', '#' comments)")

LISTS = (("trainval.txt", "train"), ("test.txt", "test"))


@dataclass(frozen=True)
class _Entry:
    image: str
    class_id: int
    split: str
    where: str  # "file:line", for skip references


@register_converter(NAME, DESCRIPTION, markers=("annotations/trainval.txt",))
def read(raw: Path, log: Reconciliation) -> tuple[DatasetSpec, Iterable[Sample]]:
    raw = Path(raw)
    images = require_dir(raw / "images", "the pet images <Breed>_<n>.jpg")
    annotations = require_dir(raw / "annotations", "trainval.txt and test.txt")
    entries = [entry for file, split in LISTS
               for entry in _parse_list(require_file(annotations / file, f"the {split} list"), split)]
    if not entries:
        raise PrepareError(f"{annotations}: trainval.txt and test.txt list no images")
    spec = DatasetSpec(NAME, "multiclass", _class_names(entries))
    return spec, nonempty(_samples(images, entries, log), raw)


def _parse_list(path: Path, split: str) -> list[_Entry]:
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 4 or not all(f.isdigit() for f in fields[1:]):
            raise PrepareError(f"{path}:{number}: expected 'Image CLASS-ID SPECIES BREED-ID' "
                               f"with integer ids, got {line.strip()!r}")
        entries.append(_Entry(fields[0], int(fields[1]), split, f"{path.name}:{number}"))
    return entries


def breed_of(image: str) -> str:
    """``Egyptian_Mau_14`` -> ``Egyptian_Mau``: the class name is the name minus ``_<n>``."""
    return image.rsplit("_", 1)[0]


def _class_names(entries: list[_Entry]) -> tuple[str, ...]:
    """Class names ordered by CLASS-ID; ids must run 1..K and each name one breed."""
    names: dict[int, str] = {}
    for e in entries:
        if names.setdefault(e.class_id, breed_of(e.image)) != breed_of(e.image):
            raise PrepareError(f"{e.where}: CLASS-ID {e.class_id} is {breed_of(e.image)!r} here "
                               f"but {names[e.class_id]!r} elsewhere")
    found, expected = set(names), set(range(1, max(names) + 1))
    if found != expected:
        raise PrepareError(f"annotations: CLASS-IDs must run 1..{max(names)}; missing "
                           f"{sorted(expected - found)}, unexpected {sorted(found - expected)}")
    return tuple(names[k] for k in range(1, max(names) + 1))


def _samples(images: Path, entries: list[_Entry], log: Reconciliation) -> Iterator[Sample]:
    first_seen: dict[str, str] = {}
    for split in (split for _, split in LISTS):
        for e in sorted((e for e in entries if e.split == split), key=lambda e: e.image):
            log.row()
            if e.image in first_seen:
                log.skip(e.where, f"image listed again (first at {first_seen[e.image]})")
                continue
            first_seen[e.image] = e.where
            sample = image_sample(images / f"{e.image}.jpg", e.image, split, e.class_id - 1, NAME, log)
            if sample is not None:
                yield sample
