"""Tuberculosis: the NLM Shenzhen and Montgomery County chest X-ray sets, binary.

The label is the last digit of the file name: ``CHNCXR_0001_0.png`` (Shenzhen) and
``MCUCXR_0001_0.png`` (Montgomery), ``_1`` = tuberculosis. PNGs are found anywhere below
the raw folder, linked folders included: the NLM layout (``ChinaSet_AllFiles/CXR_png/``,
``MontgomerySet/CXR_png/``), Kaggle's nested copy, or one flat folder. Montgomery's lung masks
(``ManualMask/leftMask/`` ...) reuse the radiograph file names and are skipped.

The split is the paper's code's (``transfer_learning/datasets/tuberculosis.py``, one dataset
per set's ``CXR_png`` folder): per set, the file names sorted, shuffled by
``numpy.random.RandomState(42)``, the first ``int(0.85 * n)`` train and the rest test; given
the same files, the same images are tested. Each image is its own patient (one radiograph per
file id), so this per-image split is patient-level too. There is no val split.
"""
from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample

from .common import NOT_ENTERED, walk_files
from .image_folders import image_problem, nonempty
from .raw_files import require_dir

NAME = "tuberculosis"
DESCRIPTION = ("folder holding the Shenzhen and Montgomery PNGs (CHNCXR_NNNN_L.png, MCUCXR_NNNN_L.png, "
               "L = 1 for TB) at any depth, e.g. ChinaSet_AllFiles/CXR_png/ and MontgomerySet/CXR_png/")
CLASSES = ("normal", "tuberculosis")
SPEC = DatasetSpec(NAME, "multiclass", CLASSES)
FILE_NAME = re.compile(r"^(?P<patient>(?P<set>CHNCXR|MCUCXR)_\d+)_(?P<label>[01])\.png$", re.IGNORECASE)
SET_NAMES = {"CHNCXR": "shenzhen", "MCUCXR": "montgomery"}
RATIO_TRAIN, SEED = 0.85, 42  # the paper's code's constants


def _is_mask(path: Path, raw: Path) -> bool:
    return any("mask" in part.lower() for part in path.relative_to(raw).parts[:-1])


@register_converter(NAME, DESCRIPTION)
def read(raw: Path, log: Reconciliation) -> tuple[DatasetSpec, Iterable[Sample]]:
    require_dir(raw, DESCRIPTION)
    files, not_entered = walk_files(raw, ".png")
    for folder in not_entered:
        log.row()
        log.skip(folder.relative_to(raw).as_posix(), NOT_ENTERED)
    if not any(FILE_NAME.match(p.name) for p in files):
        raise PrepareError(f"{raw}: no CHNCXR_NNNN_L.png or MCUCXR_NNNN_L.png files below it")
    samples: list[Sample] = []
    seen: set[str] = set()
    for path in files:
        log.row()
        ref = path.relative_to(raw).as_posix()
        match = FILE_NAME.match(path.name)
        if match is None:
            log.skip(ref, "file name is not CHNCXR_/MCUCXR_<id>_<0|1>.png")
        elif _is_mask(path, raw):
            log.skip(ref, "lung mask, not a radiograph")
        elif path.name.upper() in seen:
            log.skip(ref, "duplicate file name")
        elif problem := image_problem(path):
            log.skip(ref, problem)
        else:
            seen.add(path.name.upper())
            patient = match["patient"].upper()
            samples.append(Sample(ref, "", path, (int(match["label"]),), SET_NAMES[match["set"].upper()], patient))
    return SPEC, split_as_the_paper(list(nonempty(samples, raw)))


def split_as_the_paper(samples: list[Sample]) -> list[Sample]:
    """Per set: file names sorted, permuted by ``RandomState(SEED)``, the first 85 % train."""
    by_set: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_set[s.source].append(s)
    split_of: dict[str, str] = {}
    for members in by_set.values():
        members.sort(key=lambda s: s.image.name)
        order = np.random.RandomState(SEED).permutation(len(members))
        n_train = int(len(members) * RATIO_TRAIN)
        for rank, index in enumerate(order):
            split_of[members[index].key] = "train" if rank < n_train else "test"
    return [dataclasses.replace(s, split=split_of[s.key]) for s in samples]
