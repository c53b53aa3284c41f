"""CheXpert v1.0 (Stanford), full or "-small" release.

``train.csv`` and ``valid.csv`` list one image per row (``Path`` relative to the folder
above the release, e.g. ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``)
with the 14 CheXpert-labeler columns. As the paper's code (``transfer_learning/datasets/
builder.py`` builds ``ChexPert(split="train")`` to train on and ``split="valid"`` to validate
on): all of ``train.csv`` is the train split and ``valid.csv`` (radiologist-labelled, patients
not in train) the val split; there is no test split (the official test set is not public).
Views as its loader: a frontal row's view is its ``AP/PA`` value and only PA and AP are kept
(``views=["PA", "AP"]``), so the few frontal ``LL``/``RL`` rows are skipped; a row with no
known label is kept, masked from the loss, as the code keeps it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample

from .chexpert_labels import LABEL_COLUMNS, PATHOLOGIES, label_vector
from .common import find_file, read_csv, relative_parts
from .image_folders import image_problem, nonempty
from .raw_files import require_dir

NAME = "chexpert"
DESCRIPTION = ("CheXpert-v1.0[-small]/ with train.csv and valid.csv (Path, Frontal/Lateral, AP/PA, "
               "14 labeler columns) and the train/ and valid/ patient folders of JPEGs")
SPEC = DatasetSpec(NAME, "multilabel", PATHOLOGIES)
TABLES = (("train.csv", "train"), ("valid.csv", "val"))
COLUMNS = ("Path", "Frontal/Lateral", "AP/PA", *LABEL_COLUMNS)
FRONTAL_VIEWS = frozenset({"PA", "AP"})
_PATIENT = re.compile(r"^patient\d+$")
_RELEASE_PREFIX = "CheXpert-v1.0"


def image_path(raw: Path, csv_path: str) -> tuple[Path, str]:
    """(image file, patient id) of a ``Path`` value; the release folder prefix is optional.

    The file stays inside ``raw``: an absolute ``Path`` or one with a ``..`` part is an error.
    """
    parts = relative_parts(csv_path, "Path")
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
            if view == "Frontal" and (projection := row["AP/PA"].strip()) not in FRONTAL_VIEWS:
                log.skip(ref, f"frontal view {projection or 'blank'} not in AP/PA")
                continue
            try:
                image, patient = image_path(raw, row["Path"])
            except PrepareError as err:
                raise PrepareError(f"{path} line {line}: {err}") from None
            if problem := image_problem(image):
                log.skip(ref, problem)
            else:
                key = image.relative_to(raw).as_posix()
                samples.append(Sample(key, split, image, labels, NAME, patient))
    return SPEC, list(nonempty(samples, raw))
