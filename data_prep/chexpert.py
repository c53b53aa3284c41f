"""CheXpert v1.0 (Stanford), full or "-small" release.

``train.csv`` and ``valid.csv`` list one image per row (``Path`` relative to the folder
above the release, e.g. ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``)
with the 14 CheXpert-labeler columns. ``valid.csv`` (radiologist-labelled, patients not in
train) is the test split, as the hidden official test set is not public; a patient-level
10 % of train.csv becomes the validation split.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample

from .chexpert_labels import LABEL_COLUMNS, PATHOLOGIES, label_vector
from .common import carve_val, find_file, has_known_label, read_csv
from .image_folders import image_problem, nonempty
from .raw_files import require_dir

NAME = "chexpert"
DESCRIPTION = ("CheXpert-v1.0[-small]/ with train.csv and valid.csv (Path, Frontal/Lateral, AP/PA, "
               "14 labeler columns) and the train/ and valid/ patient folders of JPEGs")
SPEC = DatasetSpec(NAME, "multilabel", PATHOLOGIES)
TABLES = (("train.csv", "train"), ("valid.csv", "test"))
COLUMNS = ("Path", "Frontal/Lateral", *LABEL_COLUMNS)
_PATIENT = re.compile(r"^patient\d+$")
_RELEASE_PREFIX = "CheXpert-v1.0"


def image_path(raw: Path, csv_path: str) -> tuple[Path, str]:
    """(image file, patient id) of a ``Path`` value; the release folder prefix is optional."""
    parts = PurePosixPath(csv_path.strip()).parts
    if parts and parts[0].startswith(_RELEASE_PREFIX):
        parts = parts[1:]
    patient = next((p for p in parts if _PATIENT.match(p)), None)
    if patient is None:
        raise PrepareError(f"Path {csv_path!r} has no patientNNNNN folder")
    return raw.joinpath(*parts), patient


@register_converter(NAME, DESCRIPTION, markers=("train.csv",))
def read(raw: Path, log: Reconciliation, *, frontal_only: bool = True) -> tuple[DatasetSpec, Iterable[Sample]]:
    require_dir(raw, DESCRIPTION)
    tables = [(find_file(raw, name), split) for name, split in TABLES]
    readers = [(path, split, read_csv(path, COLUMNS, progress=f"{NAME} {path.name}")) for path, split in tables]
    samples: list[Sample] = []
    for path, split, rows in readers:
        for line, row in enumerate(rows, start=2):
            log.row()
            ref = f"{path.name}:{row['Path']}"
            labels = label_vector(row, path, line)
            view = row["Frontal/Lateral"].strip()
            if view not in ("Frontal", "Lateral"):
                raise PrepareError(f"{path} line {line}: Frontal/Lateral is {view!r}")
            if frontal_only and view == "Lateral":
                log.skip(ref, "lateral view")
                continue
            try:
                image, patient = image_path(raw, row["Path"])
            except PrepareError as err:
                raise PrepareError(f"{path} line {line}: {err}") from None
            if not has_known_label(labels):
                log.skip(ref, "no known label")
            elif problem := image_problem(image):
                log.skip(ref, problem)
            else:
                key = image.relative_to(raw).as_posix()
                samples.append(Sample(key, split, image, labels, NAME, patient))
    return SPEC, carve_val(list(nonempty(samples, raw)))
