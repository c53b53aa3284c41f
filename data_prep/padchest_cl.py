"""PadChest-Cl: the PadChest images whose report has exactly one finding, as a single-label
(multiclass) task over the findings that occur (``normal`` included).

Same raw layout and row filters as :mod:`padchest`; images with none or several findings
are skipped, and so are those whose only term flags the image rather than a finding
("exclude", "suboptimal study"). Splits are patient-level and stratified by class.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xferscale.data.records import DatasetSpec, Reconciliation, Sample

from .common import TRAIN_VAL_TEST, assign_splits, split_by_patient
from .image_folders import nonempty
from .padchest import FRONTAL_PROJECTIONS, read_images
from .padchest import DESCRIPTION as _PADCHEST_LAYOUT

NAME = "padchest_cl"
DESCRIPTION = f"same as padchest: {_PADCHEST_LAYOUT}"
NOT_FINDINGS = frozenset({"exclude", "suboptimal study"})


def read(raw: Path, log: Reconciliation, *,
         views: frozenset[str] | None = FRONTAL_PROJECTIONS) -> tuple[DatasetSpec, Iterable[Sample]]:
    single = []
    for image in read_images(raw, log, NAME, views):
        ref = f"{NAME}:{image.key}"
        if len(image.findings) != 1:
            log.skip(ref, "not exactly one finding")
        elif image.findings[0] in NOT_FINDINGS:
            log.skip(ref, f"only term {image.findings[0]!r} is not a finding")
        else:
            single.append(image)
    classes = tuple(sorted({im.findings[0] for im in single}))
    index = {name: i for i, name in enumerate(classes)}
    samples = [Sample(im.key, "", im.path, (index[im.findings[0]],), NAME, im.patient) for im in single]
    samples = list(nonempty(samples, raw))
    # Stratify by class; a patient whose images differ in class counts under the first one.
    first_class = {}
    for s in samples:
        first_class.setdefault(s.patient, s.labels[0])
    splits = split_by_patient(first_class, TRAIN_VAL_TEST, strata=first_class)
    return DatasetSpec(NAME, "multiclass", classes), assign_splits(samples, splits)
