"""MIMIC-CXR-JPG 2.0.0 (PhysioNet).

Three tables, plain or gzipped: ``mimic-cxr-2.0.0-metadata.csv`` (one row per image:
dicom_id, subject_id, study_id, ViewPosition, ...), ``mimic-cxr-2.0.0-chexpert.csv`` (one
row per study: subject_id, study_id and the 14 CheXpert-labeler columns) and
``mimic-cxr-2.0.0-split.csv`` (dicom_id, study_id, subject_id, split = train / validate /
test, the official patient-level split). Images live at
``files/p<first 2 digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.
A row read is an image of the metadata table. As the paper's code (``transfer_learning/
datasets/mimic.py``, split ``train`` to train on and ``validate`` to validate on): PA and AP
views, images of labelled studies only, and an image with no known label is kept (masked from
the loss). The official ``test`` split is written too; nothing trains or validates on it.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample

from .chexpert_labels import LABEL_COLUMNS, PATHOLOGIES, label_vector
from .common import find_file, read_csv
from .image_folders import image_problem, nonempty
from .raw_files import require_dir

NAME = "mimic_cxr"
DESCRIPTION = ("mimic-cxr-jpg/2.0.0/ with mimic-cxr-2.0.0-{metadata,chexpert,split}.csv[.gz] and "
               "files/pXX/p<subject>/s<study>/<dicom_id>.jpg")
SPEC = DatasetSpec(NAME, "multilabel", PATHOLOGIES)
FRONTAL_VIEWS = frozenset({"PA", "AP"})
_SPLITS = {"train": "train", "validate": "val", "test": "test"}
_PREFIX = "mimic-cxr-2.0.0-"


def _table(raw: Path, kind: str) -> Path:
    return find_file(raw, f"{_PREFIX}{kind}.csv.gz", f"{_PREFIX}{kind}.csv")


def _study_labels(path: Path) -> dict[tuple[str, str], tuple[int, ...]]:
    rows = read_csv(path, ("subject_id", "study_id", *LABEL_COLUMNS), progress=f"{NAME} labels")
    return {(row["subject_id"], row["study_id"]): label_vector(row, path, line)
            for line, row in enumerate(rows, start=2)}


def _official_split(path: Path) -> dict[str, str]:
    splits = {}
    for line, row in enumerate(read_csv(path, ("dicom_id", "split"), progress=f"{NAME} split"), start=2):
        if row["split"] not in _SPLITS:
            raise PrepareError(f"{path} line {line}: split {row['split']!r} is not one of {sorted(_SPLITS)}")
        splits[row["dicom_id"]] = _SPLITS[row["split"]]
    return splits


def image_path(raw: Path, subject: str, study: str, dicom: str) -> Path:
    return raw / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"


@register_converter(NAME, DESCRIPTION, markers=(f"{_PREFIX}split.csv.gz", f"{_PREFIX}split.csv"))
def read(raw: Path, log: Reconciliation, *, views: frozenset[str] = FRONTAL_VIEWS) -> tuple[DatasetSpec, Iterable[Sample]]:
    require_dir(raw, DESCRIPTION)
    meta_path, label_path, split_path = (_table(raw, k) for k in ("metadata", "chexpert", "split"))
    metadata = read_csv(meta_path, ("dicom_id", "subject_id", "study_id", "ViewPosition"), progress=f"{NAME} images")
    labels_of, split_of = _study_labels(label_path), _official_split(split_path)
    samples: list[Sample] = []
    for row in metadata:
        log.row()
        subject, study, dicom = row["subject_id"], row["study_id"], row["dicom_id"]
        ref = f"{meta_path.name}:{dicom}"
        view = row["ViewPosition"].strip()
        labels = labels_of.get((subject, study))
        image = image_path(raw, subject, study, dicom)
        if view not in views:
            log.skip(ref, f"view {view or 'blank'} not in {'/'.join(sorted(views))}")
        elif dicom not in split_of:
            log.skip(ref, "image not in the split table")
        elif labels is None:
            log.skip(ref, "study has no label row")
        elif problem := image_problem(image):
            log.skip(ref, problem)
        else:
            key = image.relative_to(raw).as_posix()
            samples.append(Sample(key, split_of[dicom], image, labels, NAME, subject))
    return SPEC, list(nonempty(samples, raw))
