"""Oxford Flowers-102 (Nilsback & Zisserman 2008): 8189 images, 102 classes.

The official split (``setid.mat``) is 1020 train / 1020 val / 6149 test; ids and labels are
1-based. The release ships no class names, so classes are numbered ``class_001`` ...
``class_102`` (label ``k`` of ``imagelabels.mat`` is class index ``k - 1``).

``--split paper`` (the default) writes the split the paper trained and tested on: its code
swaps the official sets (README "Oxford Flowers-102": ``cat valid.txt train.txt >
mod_test.txt``, ``cat test.txt > mod_train.txt``), so train is the official test set (6149
images, 20 to 238 per class, hence the paper's oversampling) and test is the official
train + val (2040, 20 per class); there is no val split. ``--split official`` keeps
``setid.mat``'s three sets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from xferscale.data.converters import ConverterOption, register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample
from xferscale.data_prep.image_folders import image_sample, nonempty
from xferscale.data_prep.raw_files import as_int_vector, load_mat, require_dir

NAME = "flowers102"
DESCRIPTION = ("jpg/image_NNNNN.jpg, imagelabels.mat (variable 'labels', 1..102), "
               "setid.mat (variables 'trnid', 'valid', 'tstid': 1-based image ids)")

# setid.mat variable -> split, per --split choice
SPLITS = {
    "paper": (("tstid", "train"), ("trnid", "test"), ("valid", "test")),
    "official": (("trnid", "train"), ("valid", "val"), ("tstid", "test")),
}
SPLIT_OPTION = ConverterOption("split", tuple(SPLITS), "paper",
                               "paper: train = official test set (6149), test = official train+val (2040), "
                               "as the paper's code; official: setid.mat's train/val/test")


@register_converter(NAME, DESCRIPTION, options=(SPLIT_OPTION,), markers=("imagelabels.mat",))
def read(raw: Path, log: Reconciliation, *, split: str = "paper") -> tuple[DatasetSpec, Iterable[Sample]]:
    raw = Path(raw)
    images = require_dir(raw / "jpg", "the flower images image_00001.jpg ...")
    labels_path = raw / "imagelabels.mat"
    labels = as_int_vector(load_mat(labels_path, ["labels"])["labels"], labels_path, "labels")
    if labels.size == 0 or labels.min() < 1:
        raise PrepareError(f"{labels_path}: 'labels' must be a non-empty vector of labels >= 1")
    split_of = _split_of_image(raw / "setid.mat", len(labels), SPLITS[split])
    classes = tuple(f"class_{k:03d}" for k in range(1, int(labels.max()) + 1))
    spec = DatasetSpec(NAME, "multiclass", classes)
    return spec, nonempty(_samples(images, labels, split_of, log), raw)


def _split_of_image(path: Path, num_images: int, splits: tuple[tuple[str, str], ...]) -> dict[int, str]:
    """Image id -> split, checking every id is a valid image and in one set only."""
    sets = load_mat(path, [variable for variable, _ in splits])
    split_of: dict[int, str] = {}
    seen: dict[int, str] = {}
    for variable, split in splits:
        for image_id in as_int_vector(sets[variable], path, variable).tolist():
            if not 1 <= image_id <= num_images:
                raise PrepareError(f"{path}: {variable!r} lists image id {image_id}, but "
                                   f"imagelabels.mat labels only ids 1..{num_images}")
            if seen.setdefault(image_id, variable) != variable:
                raise PrepareError(f"{path}: image id {image_id} is in both {seen[image_id]!r} and {variable!r}")
            split_of[image_id] = split
    return split_of


def _samples(images: Path, labels: np.ndarray, split_of: dict[int, str],
             log: Reconciliation) -> Iterator[Sample]:
    for image_id, label in enumerate(labels.tolist(), start=1):
        log.row()
        path = images / f"image_{image_id:05d}.jpg"
        split = split_of.get(image_id)
        if split is None:
            log.skip(str(path), "image id in no split of setid.mat")
            continue
        sample = image_sample(path, path.stem, split, label - 1, NAME, log)
        if sample is not None:
            yield sample
