"""PadChest-Cl: the PadChest images with exactly one of the 27 pathologies positive, as a
single-label (multiclass) task over those pathologies, as the paper's code builds it
(``finetune.py`` ``SingleLabelFromMultiLabel`` over ``transfer_learning/datasets/padchest.py``).

Same raw layout, views and row filters as :mod:`padchest`. An image's 27-pathology vector
is computed as for ``padchest`` (torchxrayvision's names and synonyms); images with none
positive ("normal", or findings outside the 27) or with several are skipped, and the class
is the one positive pathology. The classes are the pathologies that occur alone: on the
real label table every one but Consolidation, whose own name and synonym also mark
Infiltration, so it is never the only one (the code's 27th output never has a positive).
Splits are patient-level and stratified by class (the code split per image, 90/10).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xferscale.data.converters import register_converter
from xferscale.data.records import POSITIVE, DatasetSpec, Reconciliation, Sample

from .common import TRAIN_VAL_TEST, assign_splits, split_by_patient
from .image_folders import nonempty
from .padchest import DESCRIPTION as _PADCHEST_LAYOUT
from .padchest import CSV_NAMES, PAPER_PROJECTIONS, PATHOLOGIES, pathology_labels, read_images

NAME = "padchest_cl"
DESCRIPTION = f"same as padchest: {_PADCHEST_LAYOUT}"


@register_converter(NAME, DESCRIPTION, markers=CSV_NAMES)
def read(raw: Path, log: Reconciliation, *,
         views: frozenset[str] | None = PAPER_PROJECTIONS) -> tuple[DatasetSpec, Iterable[Sample]]:
    single: list[tuple[Path, str, str, str]] = []  # key, path, patient, pathology
    for image in read_images(raw, log, NAME, views):
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
    # Stratify by class; a patient whose images differ in class counts under the first one.
    first_class: dict[str, int] = {}
    for s in samples:
        first_class.setdefault(s.patient, s.labels[0])
    splits = split_by_patient(first_class, TRAIN_VAL_TEST, strata=first_class)
    return DatasetSpec(NAME, "multiclass", classes), assign_splits(samples, splits)
