"""ImageNet-1k (ILSVRC2012 classification): ``train/<wnid>/*.JPEG`` plus a val folder.

Val comes in two public layouts, both read here:
- class folders ``val/<wnid>/*.JPEG`` (after the usual ``valprep.sh``), or
- flat ``val/ILSVRC2012_val_NNNNNNNN.JPEG`` with ground truth from either the Kaggle
  release (``LOC_val_solution.csv``: ``ImageId,PredictionString`` where the string is
  ``wnid x0 y0 x1 y1`` repeated) or the ILSVRC2012 devkit
  (``data/ILSVRC2012_validation_ground_truth.txt``: one ILSVRC2012_ID per val image, in
  file-number order; ``data/meta.mat``: ``synsets`` mapping the IDs of its leaf synsets to
  wnids).
The Kaggle root (``ILSVRC/Data/CLS-LOC/{train,val}``) is found too. The unlabelled test
folder is not read. Classes are the sorted train wnids; a count other than 1000 (a subset
for tests or a study) is accepted and reported as a warning.
"""
from __future__ import annotations

import csv
import logging
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample
from xferscale.data_prep.image_folders import (class_folder_samples, class_folders, image_sample,
                                               nonempty)
from xferscale.data_prep.raw_files import (as_int_vector, first_existing, load_mat, require_dir,
                                           require_file)

NAME = "imagenet1k"
DESCRIPTION = ("train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, or flat val/*.JPEG with "
               "LOC_val_solution.csv (Kaggle) or ILSVRC2012_devkit_t12/data/"
               "{ILSVRC2012_validation_ground_truth.txt,meta.mat}; RAW may be the Kaggle root")

EXPECTED_CLASSES = 1000
KAGGLE_DATA = Path("ILSVRC/Data/CLS-LOC")
KAGGLE_SOLUTION = "LOC_val_solution.csv"
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"

logger = logging.getLogger(__name__)


@register_converter(NAME, DESCRIPTION)
def read(raw: Path, log: Reconciliation) -> tuple[DatasetSpec, Iterable[Sample]]:
    raw = Path(raw)
    data = raw / KAGGLE_DATA if (raw / KAGGLE_DATA).is_dir() else raw
    train = require_dir(data / "train", "one folder of images per wnid")
    val = require_dir(data / "val", "val/<wnid>/ folders or flat val images")
    classes = tuple(class_folders(train))
    if not classes:
        raise PrepareError(f"{train}: no class folders (expected train/<wnid>/)")
    if len(classes) != EXPECTED_CLASSES:
        logger.warning("%s: %d class folders, ILSVRC2012 has %d; preparing the subset found",
                       train, len(classes), EXPECTED_CLASSES)
    index = {wnid: i for i, wnid in enumerate(classes)}
    if class_folders(val):
        val_samples = class_folder_samples(val, index, "val", NAME, log)
    else:
        val_samples = _flat_val_samples(val, _flat_val_truth(raw, data, val), index, log)
    samples = chain(class_folder_samples(train, index, "train", NAME, log), val_samples)
    return DatasetSpec(NAME, "multiclass", classes), nonempty(samples, data)


def _flat_val_truth(raw: Path, data: Path, val: Path) -> tuple[Path, dict[str, str]]:
    """(ground-truth file, val image stem -> wnid) for a flat val folder."""
    solution = first_existing([raw / KAGGLE_SOLUTION, data / KAGGLE_SOLUTION])
    if solution is not None:
        return solution, read_kaggle_solution(solution)
    devkit_dirs = (raw / "ILSVRC2012_devkit_t12" / "data", raw / "data", raw)
    truth = first_existing(d / DEVKIT_TRUTH for d in devkit_dirs)
    if truth is not None:
        return truth, read_devkit_truth(truth, truth.parent / "meta.mat")
    raise PrepareError(f"{val}: flat val images need ground truth: {raw / KAGGLE_SOLUTION} or "
                       f"{raw / 'ILSVRC2012_devkit_t12' / 'data' / DEVKIT_TRUTH} with meta.mat")


def read_kaggle_solution(path: Path) -> dict[str, str]:
    """``LOC_val_solution.csv`` -> {ImageId: wnid}; every box of a CLS-LOC val image has its class."""
    truth: dict[str, str] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"ImageId", "PredictionString"} <= set(reader.fieldnames or ()):
            raise PrepareError(f"{path}: expected columns ImageId,PredictionString, "
                               f"found {reader.fieldnames}")
        for row in reader:
            wnids = set((row["PredictionString"] or "").split()[0::5])
            if len(wnids) != 1:
                raise PrepareError(f"{path}:{reader.line_num}: {row['ImageId']} should name one "
                                   f"wnid, found {sorted(wnids)}")
            truth[row["ImageId"]] = wnids.pop()
    return truth


def read_devkit_truth(truth_path: Path, meta_path: Path) -> dict[str, str]:
    """Devkit ground truth -> {``ILSVRC2012_val_NNNNNNNN``: wnid}.

    Line i of the ground-truth file is the ILSVRC2012_ID of val image i; ``meta.mat`` maps
    the IDs of its leaf synsets (``num_children == 0``, the 1000 classes) to wnids.
    """
    require_file(meta_path, "devkit synset table (variable 'synsets')")
    synsets = load_mat(meta_path, ["synsets"])["synsets"]
    fields = ("ILSVRC2012_ID", "WNID", "num_children")
    if synsets.dtype.names is None or not set(fields) <= set(synsets.dtype.names):
        raise PrepareError(f"{meta_path}: 'synsets' should be a struct array with fields {fields}")
    wnid_of = {int(i): str(w) for i, w, children in
               zip(*(synsets[f].ravel() for f in fields)) if int(children) == 0}
    ids = as_int_vector([_int_line(truth_path, n, line) for n, line in
                         enumerate(truth_path.read_text().splitlines(), 1) if line.strip()],
                        truth_path, "ILSVRC2012_ID")
    unknown = sorted(set(ids.tolist()) - set(wnid_of))
    if unknown:
        raise PrepareError(f"{truth_path}: ILSVRC2012_IDs {unknown[:5]} are not leaf synsets "
                           f"of {meta_path}")
    return {f"ILSVRC2012_val_{n:08d}": wnid_of[i] for n, i in enumerate(ids.tolist(), start=1)}


def _int_line(path: Path, number: int, line: str) -> int:
    try:
        return int(line)
    except ValueError:
        raise PrepareError(f"{path}:{number}: expected an ILSVRC2012_ID, "
                           f"got {line.strip()!r}") from None


def _flat_val_samples(val: Path, truth: tuple[Path, dict[str, str]], index: Mapping[str, int],
                      log: Reconciliation) -> Iterator[Sample]:
    truth_path, wnid_of = truth
    for path in sorted(val.iterdir()):
        log.row()
        wnid = wnid_of.get(path.stem)
        if wnid is None:
            log.skip(str(path), f"no entry in {truth_path.name}")
        elif wnid not in index:
            log.skip(str(path), f"class {wnid} has no train folder")
        else:
            sample = image_sample(path, path.stem, "val", index[wnid], NAME, log)
            if sample is not None:
                yield sample
