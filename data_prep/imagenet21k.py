"""ImageNet-21k, winter-21 release (``winter21_whole``): one ``<wnid>.tar`` per synset,
each holding that synset's images as ``<wnid>_<n>.JPEG`` (19,167 synsets, ~13 M images;
fall11 had 21,841 synsets and the same layout).

How the multi-label case arises. The release has no label files and its base tagging is
single-label: a tar holds the images verified for its one synset, named ``<wnid>_<n>``.
The same photo can, however, have been collected and verified for several synsets; it is
then stored once in each of their tars (identical content, under each tar's own name or,
also handled here, the same base name). The BiT/ViT authors report that merging such
duplicates brings fall11's ~14.2 M files down to ~12.4 M images
(google-research/vision_transformer#28). Labels implied by the WordNet hierarchy
(ancestors) are not in the release and are not added here.

Rule (the paper's "one (image, label) pair per label", softmax cross-entropy): every copy
is one (image, label) pair with its tar's synset; copies are not merged, so an image under
k synsets gives k pairs, and no index of all 13 M images is held in memory. Keys are the
member's base name, prefixed with the tar's wnid when the name does not already start with
it, so copies under different synsets never share a key. A second member with the same
base name inside one tar is skipped as a duplicate.

Listing reads the tar headers only: each member is handed to the writer as a reference
(tar, offset, size), which its worker processes read and decode once, so the release is read
once and needs no spool space. Members in sorted name order. A tar that cannot be read
is an error naming it (a truncated download would otherwise silently drop a class);
re-download it, or remove it from RAW to prepare without that synset. Everything is the
``train`` split: the release defines no held-out set.
"""
from __future__ import annotations

import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from tqdm import tqdm

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample, TarMember
from xferscale.data_prep.image_folders import name_problem, nonempty
from xferscale.data_prep.raw_files import require_dir

NAME = "imagenet21k"
DESCRIPTION = "<wnid>.tar per synset (winter21_whole / fall11_whole), members <wnid>_<n>.JPEG"

WNID = re.compile(r"n\d{8}")
SPLIT = "train"


@register_converter(NAME, DESCRIPTION)
def read(raw: Path, log: Reconciliation) -> tuple[DatasetSpec, Iterable[Sample]]:
    raw = require_dir(Path(raw), "one <wnid>.tar per synset")
    tars = []
    for path in sorted(raw.iterdir()):
        if path.is_file() and path.suffix == ".tar" and WNID.fullmatch(path.stem):
            tars.append(path)
        else:
            log.row()
            log.skip(str(path), "not a <wnid>.tar synset archive")
    if not tars:
        raise PrepareError(f"{raw}: no <wnid>.tar synset archives (e.g. n01440764.tar)")
    for path in tqdm(tars, desc="check synset tars", unit="tar", disable=None):
        if not tarfile.is_tarfile(path):
            raise PrepareError(f"{path}: not a readable tar archive; re-download it")
    classes = tuple(p.stem for p in tars)
    return DatasetSpec(NAME, "multiclass", classes), nonempty(_samples(tars, log), raw)


def sample_key(wnid: str, member: str) -> str:
    """Key of a member: its base name, prefixed with the tar's wnid unless it already is."""
    stem = PurePosixPath(member).stem
    return stem if stem.startswith(f"{wnid}_") else f"{wnid}_{stem}"


def _samples(tars: list[Path], log: Reconciliation) -> Iterator[Sample]:
    for label, path in enumerate(tars):
        yield from _synset_samples(path, label, log)


def _complete_members(path: Path, tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """All members, or an error if the archive stops before its end-of-archive marker.

    ``tarfile`` stops listing silently when a file is cut at a header boundary (only a cut
    inside a member's data raises), so check that a zero block follows the last member.
    """
    members = tar.getmembers()
    with open(path, "rb") as f:
        f.seek(tar.offset)
        marker = f.read(tarfile.BLOCKSIZE)
    if len(marker) < tarfile.BLOCKSIZE or marker.count(0) != tarfile.BLOCKSIZE:
        last = members[-1].name if members else "the start"
        raise tarfile.ReadError(f"no valid header or end-of-archive marker after {last}")
    return members


def _member_problem(member: tarfile.TarInfo, seen_before: bool) -> str | None:
    """Why a tar member is not read as an image (before extracting it), or None."""
    if not member.isfile():
        return "tar member is not a regular file"
    if seen_before:
        return "duplicate member name in the same synset tar"
    return name_problem(member.name)


def _synset_samples(path: Path, label: int, log: Reconciliation) -> Iterator[Sample]:
    wnid = path.stem
    try:
        with tarfile.open(path, "r:") as tar:
            seen: set[str] = set()
            for member in sorted(_complete_members(path, tar), key=lambda m: m.name):
                if member.isdir():
                    continue
                log.row()
                ref = f"{path.name}:{member.name}"
                key = sample_key(wnid, member.name)
                problem = _member_problem(member, key in seen)
                if problem is not None:
                    log.skip(ref, problem)
                    continue
                seen.add(key)
                image = TarMember(path, member.offset_data, member.size)  # read (and decoded) by the writer
                yield Sample(key=key, split=SPLIT, image=image, labels=(label,), source=NAME)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise PrepareError(f"{path}: corrupt or truncated tar ({type(e).__name__}: {e}); "
                           "re-download it") from e
