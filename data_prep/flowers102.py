"""Oxford Flowers-102 (Nilsback & Zisserman 2008): 8189 images, 102 classes.

The official split (``setid.mat``) is 1020 train / 1020 val / 6149 test; ids and labels are
1-based. The release ships no class names, so classes are numbered ``class_001`` ...
``class_102`` (label ``k`` of ``imagelabels.mat`` is class index ``k - 1``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample
from xferscale.data_prep.image_folders import image_sample, nonempty
from xferscale.data_prep.raw_files import as_int_vector, load_mat, require_dir

NAME = "flowers102"
DESCRIPTION = ("jpg/image_NNNNN.jpg, imagelabels.mat (variable 'labels', 1..102), "
               "setid.mat (variables 'trnid', 'valid', 'tstid': 1-based image ids)")

SPLITS = (("trnid", "train"), ("valid", "val"), ("tstid", "test"))


def read(raw: Path, log: Reconciliation) -> tuple[DatasetSpec, Iterable[Sample]]:
    raw = Path(raw)
    images = require_dir(raw / "jpg", "the flower images image_00001.jpg ...")
    labels_path = raw / "imagelabels.mat"
    labels = as_int_vector(load_mat(labels_path, ["labels"])["labels"], labels_path, "labels")
    if labels.size == 0 or labels.min() < 1:
        raise PrepareError(f"{labels_path}: 'labels' must be a non-empty vector of labels >= 1")
    split_of = _split_of_image(raw / "setid.mat", len(labels))
    classes = tuple(f"class_{k:03d}" for k in range(1, int(labels.max()) + 1))
    spec = DatasetSpec(NAME, "multiclass", classes)
    return spec, nonempty(_samples(images, labels, split_of, log), raw)


def _split_of_image(path: Path, num_images: int) -> dict[int, str]:
    """Image id -> split, checking every id is a valid image and in one split only."""
    sets = load_mat(path, [variable for variable, _ in SPLITS])
    split_of: dict[int, str] = {}
    for variable, split in SPLITS:
        for image_id in as_int_vector(sets[variable], path, variable).tolist():
            if not 1 <= image_id <= num_images:
                raise PrepareError(f"{path}: {variable!r} lists image id {image_id}, but "
                                   f"imagelabels.mat labels only ids 1..{num_images}")
            if split_of.setdefault(image_id, split) != split:
                raise PrepareError(f"{path}: image id {image_id} is in both the "
                                   f"{split_of[image_id]} and the {split} split")
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
