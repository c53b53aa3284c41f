"""PadChest-Cl: the PadChest images with exactly one of the 27 pathologies positive, as a
single-label (multiclass) task over those pathologies, as the paper's code builds it
(``finetune.py`` ``SingleLabelFromMultiLabel`` over ``transfer_learning/datasets/padchest.py``).

Same raw layout, views and row filters as :mod:`padchest`. An image's 27-pathology vector
is computed as for ``padchest`` (torchxrayvision's names and synonyms); images with none
positive ("normal", or findings outside the 27) or with several are skipped, and the class
is the one positive pathology. The classes are the pathologies that occur alone: on the
real label table every one but Consolidation, whose own name and synonym also mark
Infiltration, so it is never the only one (the code's 27th output never has a positive).
Splits: PadChest's own (:func:`padchest.patient_splits`, over the same rows before the
single-label filter): its train images are PadChest-Cl's train split, its val images the test
split, as the paper's code cuts PadChest-Cl out of PadChest's split (``transfer_learning/
datasets/padchest.py:178-188`` keeps the first 90 % of a shuffle as train, ``finetune.py:93-94``
filters that train/held-out pair). So no PadChest-Cl test image is in PadChest's training split,
nor in the 4-set concatenation's. Per patient where the code split per image; no val split.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xferscale.data.converters import register_converter
from xferscale.data.records import POSITIVE, DatasetSpec, Reconciliation, Sample

from .common import assign_splits
from .image_folders import nonempty
from .padchest import DESCRIPTION as _PADCHEST_LAYOUT
from .padchest import CSV_NAMES, PAPER_PROJECTIONS, PATHOLOGIES, pathology_labels, patient_splits, read_images

NAME = "padchest_cl"
SPLIT_OF_PADCHEST = {"train": "train", "val": "test"}
DESCRIPTION = f"same as padchest: {_PADCHEST_LAYOUT}"


@register_converter(NAME, DESCRIPTION, markers=CSV_NAMES)
def read(raw: Path, log: Reconciliation, *,
         views: frozenset[str] | None = PAPER_PROJECTIONS) -> tuple[DatasetSpec, Iterable[Sample]]:
    images = read_images(raw, log, NAME, views)
    single: list[tuple[str, Path, str, str]] = []  # key, path, patient, pathology
    for image in images:
        positives = [p for p, v in zip(PATHOLOGIES, pathology_labels(image.findings)) if v == POSITIVE]
        if len(positives) == 1:
            single.append((image.key, image.path, image.patient, positives[0]))
        else:
            log.skip(f"{NAME}:{image.key}", "none of the 27 pathologies" if not positives
                     else "several of the 27 pathologies")
    present = {pathology for *_, pathology in single}
    classes = tuple(p for p in PATHOLOGIES if p in present)
    index = {name: i for i, name in enumerate(classes)}
    samples = list(nonempty([Sample(key, "", path, (index[pathology],), NAME, patient)
                             for key, path, patient, pathology in single], raw))
    splits = {patient: SPLIT_OF_PADCHEST[split] for patient, split in patient_splits(images).items()}
    return DatasetSpec(NAME, "multiclass", classes), assign_splits(samples, splits)
