"""Pieces every chest X-ray converter shares: finding and reading tables, checking their
columns, walking image folders, building label vectors and patient-level splits.
"""
from __future__ import annotations

import csv
import gzip
import io
import os
import random
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from xferscale.data.records import NEGATIVE, POSITIVE, PrepareError, Sample

from .raw_files import first_existing

SPLIT_SEED = 0
# The skip reason of a folder that :func:`walk_files` did not enter.
NOT_ENTERED = "folder not entered: already walked (a link loop or a second link to it)"


def find_file(raw: Path, *names: str) -> Path:
    """The first of ``names`` that exists under ``raw`` (e.g. ``x.csv.gz`` or ``x.csv``)."""
    found = first_existing(raw / name for name in names)
    if found is None or not found.is_file():
        raise PrepareError(f"{raw}: none of {', '.join(names)} found")
    return found


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    # utf-8-sig: some exports start with a byte-order mark that would rename the first column.
    return open(path, newline="", encoding="utf-8-sig")


def read_csv(path: Path, columns: Sequence[str], *, progress: str | None = None) -> Iterator[dict[str, str]]:
    """Rows of a (possibly gzipped) CSV as dicts, after checking that ``columns`` exist.

    The header is checked when the generator is created, so a missing or renamed column
    fails before any row is read; ``progress`` names a tqdm bar for long tables.
    """
    handle = _open_text(path)
    reader = csv.DictReader(handle)
    try:
        header = reader.fieldnames or []
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        handle.close()
        raise PrepareError(f"{path}: cannot read the CSV header ({err})") from err
    missing = [c for c in columns if c not in header]
    if missing:
        handle.close()
        raise PrepareError(f"{path}: missing column(s) {missing}; the header has {header}")
    return _rows(handle, reader, path, progress)


def _rows(handle: io.TextIOBase, reader: csv.DictReader, path: Path, progress: str | None) -> Iterator[dict[str, str]]:
    with handle:
        try:
            yield from tqdm(reader, desc=progress, unit="row", disable=None if progress else True)
        except (OSError, csv.Error, UnicodeDecodeError) as err:
            raise PrepareError(f"{path}: unreadable at line {reader.line_num} ({err})") from err


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-empty lines of a text file (split lists, COVIDx)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PrepareError(f"{path}: cannot read ({err})") from err
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def relative_parts(text: str, field: str) -> tuple[str, ...]:
    """The parts of a path that a table gives relative to the raw folder (``field`` names the
    column in the error); an absolute path or a ``..`` part would leave the folder: an error."""
    path = PurePosixPath(text.strip())
    if path.is_absolute() or ".." in path.parts:
        problem = "is absolute" if path.is_absolute() else "has a '..' part"
        raise PrepareError(f"{field} {text!r} {problem}; it must name a file inside the raw folder")
    return path.parts


def walk_files(root: Path, suffix: str) -> tuple[list[Path], list[Path]]:
    """Files below ``root`` whose name ends in ``suffix`` (any case), sorted by their path
    below ``root``, and the folders that were not entered.

    Links to folders are followed (``Path.rglob`` does not follow them), each real folder
    once: a link to a folder already entered (a loop, or a second link to it) is not entered
    again and is returned for the caller to count. A broken link with a matching name is
    returned as a file, so that the caller reports it missing.
    """
    files: list[Path] = []
    not_entered: list[Path] = []
    entered: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in entered:
                not_entered.append(folder)
                continue
            entered.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            raise PrepareError(f"{folder}: cannot list the folder ({err.strerror or err})") from None
        folders = []
        for entry in entries:
            if entry.is_dir():
                folders.append(Path(entry.path))
            elif entry.name.lower().endswith(suffix):
                files.append(Path(entry.path))
        stack.extend(reversed(folders))  # depth first, in name order: the same walk every time
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    return files, not_entered


def multi_hot(classes: Sequence[str], positives: Iterable[str]) -> tuple[int, ...]:
    """A fully known label vector: POSITIVE for the named classes, NEGATIVE elsewhere."""
    present = set(positives)
    return tuple(POSITIVE if c in present else NEGATIVE for c in classes)


def split_by_patient(
    patients: Iterable[str],
    fractions: Mapping[str, float],
    seed: int = SPLIT_SEED,
    strata: Mapping[str, Hashable] | None = None,
) -> dict[str, str]:
    """Assign every patient to one split, so that no patient's images straddle two splits.

    Patients are de-duplicated and sorted before a seeded shuffle, so the result depends
    only on the set of patients, the fractions and the seed (not on row order).
    ``strata`` (patient -> class) shuffles each class separately so that every split
    keeps the class balance; split sizes are rounded per stratum.
    """
    total = sum(fractions.values())
    if not fractions or total <= 0 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be non-negative and sum to > 0, got {dict(fractions)}")
    groups: dict[str, list[str]] = defaultdict(list)
    for patient in sorted(set(patients)):
        groups[repr(strata[patient]) if strata is not None else ""].append(patient)
    rng = random.Random(seed)
    assignment: dict[str, str] = {}
    for stratum in sorted(groups):
        members = groups[stratum]
        rng.shuffle(members)
        start, cumulative = 0, 0.0
        for name, fraction in fractions.items():
            cumulative += fraction
            end = round(cumulative / total * len(members))
            for patient in members[start:end]:
                assignment[patient] = name
            start = end
    return assignment


def assign_splits(samples: list[Sample], splits: Mapping[str, str]) -> list[Sample]:
    """Set each sample's split from its patient's assignment."""
    return [_with_split(s, splits[s.patient]) for s in samples]


def _with_split(sample: Sample, split: str) -> Sample:
    return Sample(sample.key, split, sample.image, sample.labels, sample.source, sample.patient)
