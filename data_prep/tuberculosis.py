"""Tuberculosis: the NLM Shenzhen and Montgomery County chest X-ray sets, binary.

The label is the last digit of the file name: ``CHNCXR_0001_0.png`` (Shenzhen) and
``MCUCXR_0001_0.png`` (Montgomery), ``_1`` = tuberculosis. PNGs are found anywhere below
the raw folder: the NLM layout (``ChinaSet_AllFiles/CXR_png/``, ``MontgomerySet/CXR_png/``),
Kaggle's nested copy, or one flat folder as the paper used. Montgomery's lung masks
(``ManualMask/leftMask/`` ...) reuse the radiograph file names and are skipped.
Each file name id is one patient; the split is 85 % train / 15 % test, as the paper's code
(``transfer_learning/datasets/tuberculosis.py``: ``RATIO_TRAIN = 0.85`` of each set, shuffled
per image), here patient-level, seeded and stratified by set and label; there is no val split.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample

from .common import assign_splits, split_by_patient
from .image_folders import image_problem, nonempty
from .raw_files import require_dir

NAME = "tuberculosis"
DESCRIPTION = ("folder holding the Shenzhen and Montgomery PNGs (CHNCXR_NNNN_L.png, MCUCXR_NNNN_L.png, "
               "L = 1 for TB) at any depth, e.g. ChinaSet_AllFiles/CXR_png/ and MontgomerySet/CXR_png/")
CLASSES = ("normal", "tuberculosis")
SPEC = DatasetSpec(NAME, "multiclass", CLASSES)
FILE_NAME = re.compile(r"^(?P<patient>(?P<set>CHNCXR|MCUCXR)_\d+)_(?P<label>[01])\.png$", re.IGNORECASE)
SET_NAMES = {"CHNCXR": "shenzhen", "MCUCXR": "montgomery"}
TRAIN_TEST = {"train": 0.85, "test": 0.15}


def _is_mask(path: Path, raw: Path) -> bool:
    return any("mask" in part.lower() for part in path.relative_to(raw).parts[:-1])


@register_converter(NAME, DESCRIPTION)
def read(raw: Path, log: Reconciliation) -> tuple[DatasetSpec, Iterable[Sample]]:
    require_dir(raw, DESCRIPTION)
    files = sorted(raw.rglob("*.png"), key=lambda p: p.relative_to(raw).as_posix())
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
    samples = list(nonempty(samples, raw))
    stratum = {s.patient: (s.source, s.labels[0]) for s in samples}
    return SPEC, assign_splits(samples, split_by_patient(stratum, TRAIN_TEST, strata=stratum))
