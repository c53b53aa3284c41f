"""Labels written by the CheXpert labeler, as CheXpert and MIMIC-CXR-JPG publish them.

Each of the 14 observation columns holds ``1.0`` (positive), ``0.0`` (negative), ``-1.0``
(uncertain) or a blank (not mentioned). As the paper's code (its CheXpert and MIMIC
loaders, ``transfer_learning/datasets/chexpert.py``): the 13 pathologies are the classes
("No Finding" is not one); uncertain and blank are UNKNOWN, except that a row with
``No Finding == 1`` is NEGATIVE for every pathology, "Support Devices" included (today's
torchxrayvision leaves that one as labelled).
"""
from __future__ import annotations

from pathlib import Path

from xferscale.data.records import NEGATIVE, POSITIVE, UNKNOWN, PrepareError

PATHOLOGIES: tuple[str, ...] = tuple(sorted([
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "Pleural Effusion", "Pleural Other",
    "Pneumonia", "Pneumothorax", "Support Devices",
]))
NO_FINDING = "No Finding"
LABEL_COLUMNS: tuple[str, ...] = (NO_FINDING, *PATHOLOGIES)
_VALUES = {"1.0": POSITIVE, "1": POSITIVE, "0.0": NEGATIVE, "0": NEGATIVE,
           "-1.0": UNKNOWN, "-1": UNKNOWN, "": UNKNOWN}


def _value(row: dict[str, str], column: str, where: str) -> int:
    text = (row[column] or "").strip()
    try:
        return _VALUES[text]
    except KeyError:
        raise PrepareError(f"{where}: column {column!r} has {text!r}; expected 1.0, 0.0, -1.0 or blank") from None


def label_vector(row: dict[str, str], file: Path, line: int) -> tuple[int, ...]:
    """The 13-pathology vector of one CSV row (``file``/``line`` name it in errors)."""
    where = f"{file} line {line}"
    values = {name: _value(row, name, where) for name in LABEL_COLUMNS}
    healthy = values[NO_FINDING] == POSITIVE
    return tuple(NEGATIVE if healthy else values[name] for name in PATHOLOGIES)
