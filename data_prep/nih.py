"""NIH ChestX-ray14 (NIH Clinical Center).

``Data_Entry_2017.csv`` (or the 2020 re-release ``Data_Entry_2017_v2020.csv``, which
renamed "Patient Gender" to "Patient Sex"; neither column is used here) lists one image
per row with ``Finding Labels`` joined by ``|`` ("No Finding" = every class negative).
``train_val_list.txt`` / ``test_list.txt`` are the official patient-disjoint split. As the
paper's code (``transfer_learning/datasets/nih.py``: ``train=True`` reads train_val_list,
``train=False`` test_list, and ``builder.py`` validates on the latter): all of train_val is
the train split and the official test list is the val split, so model selection happens on
the test list; there is no test split. PNGs sit under ``images*/`` (``images/`` from the NIH
box, ``images_001/images/`` ... from Kaggle), linked folders included.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample

from .common import NOT_ENTERED, find_file, multi_hot, read_csv, read_lines, walk_files
from .image_folders import image_problem, nonempty
from .raw_files import require_dir

NAME = "nih"
DESCRIPTION = ("NIH ChestX-ray14 folder: Data_Entry_2017[_v2020].csv, train_val_list.txt, test_list.txt "
               "and the PNGs under images*/")
PATHOLOGIES: tuple[str, ...] = tuple(sorted([
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis",
    "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
]))
NO_FINDING = "No Finding"
SPEC = DatasetSpec(NAME, "multilabel", PATHOLOGIES)
COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
SPLIT_LISTS = (("train_val_list.txt", "train"), ("test_list.txt", "val"))


def parse_findings(text: str, where: str) -> tuple[str, ...]:
    """The pathologies of a ``Finding Labels`` value such as ``Effusion|Mass``."""
    names = tuple(name.strip() for name in text.split("|"))
    if names == (NO_FINDING,):
        return ()
    unknown = [n for n in names if n not in PATHOLOGIES]
    if unknown:
        raise PrepareError(f"{where}: Finding Labels {text!r} has unknown label(s) {unknown}")
    return names


def _image_index(raw: Path, log: Reconciliation) -> dict[str, Path]:
    """Image file name -> path, over every ``images*`` folder; folders not entered are skips."""
    found: dict[str, Path] = {}
    for folder in sorted(p for p in raw.glob("images*") if p.is_dir()):
        files, not_entered = walk_files(folder, ".png")
        for path in files:
            found.setdefault(path.name, path)
        for path in not_entered:
            log.row()
            log.skip(path.relative_to(raw).as_posix(), NOT_ENTERED)
    return found


def _official_split(raw: Path) -> dict[str, str]:
    split_of: dict[str, str] = {}
    for name, split in SPLIT_LISTS:
        path = find_file(raw, name)
        for _, image in read_lines(path):
            if split_of.setdefault(image, split) != split:
                raise PrepareError(f"{path}: {image} is also in another split list")
    return split_of


@register_converter(NAME, DESCRIPTION, markers=("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv"))
def read(raw: Path, log: Reconciliation) -> tuple[DatasetSpec, Iterable[Sample]]:
    require_dir(raw, DESCRIPTION)
    table = find_file(raw, "Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
    rows = read_csv(table, COLUMNS, progress=NAME)
    split_of, images = _official_split(raw), _image_index(raw, log)
    samples: list[Sample] = []
    for line, row in enumerate(rows, start=2):
        log.row()
        name = row["Image Index"].strip()
        ref = f"{table.name}:{name}"
        findings = parse_findings(row["Finding Labels"], f"{table} line {line}")
        image = images.get(name)
        problem = "image file missing" if image is None else image_problem(image)
        if name not in split_of:
            log.skip(ref, "image in neither split list")
        elif problem:
            log.skip(ref, problem)
        else:
            key = image.relative_to(raw).as_posix()
            samples.append(Sample(key, split_of[name], image, multi_hot(PATHOLOGIES, findings), NAME,
                                  row["Patient ID"].strip()))
    return SPEC, list(nonempty(samples, raw))
