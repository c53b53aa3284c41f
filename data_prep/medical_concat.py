"""Concatenations of the medical pre-training sets (CheXpert, MIMIC-CXR, NIH, PadChest).

As in the paper, the classes are the sorted intersection of the members' classes, after
harmonising the names that differ between datasets (CheXpert/MIMIC "Pleural Effusion" is
NIH/PadChest "Effusion"); each member keeps its own split rule, so the val split is the
union of the members' val splits, and uncertain labels stay UNKNOWN. Keys and patient ids get
the member's name as prefix (ids are only unique within a dataset). A sample with no known
label left among the shared classes is kept, masked from the loss, as the paper's code keeps
it (``transfer_learning/datasets/builder.py`` ``Merge`` only re-indexes the labels).

Views follow the paper's configs: ``chexpert_mimic_nih_padchest_bit*.yaml`` lists the views
PA, AP, AP Supine, L and COSTAL for every member, which keeps CheXpert's and PadChest's
laterals (MIMIC's and NIH's view names have no "L"); the smaller concatenations use each
loader's default, frontal only.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path
from types import ModuleType

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample

from . import chexpert, mimic_cxr, nih, padchest
from .image_folders import nonempty

MEMBERS: dict[str, ModuleType] = {m.NAME: m for m in (chexpert, mimic_cxr, nih, padchest)}
LABEL_ALIASES = {"Pleural Effusion": "Effusion", "Pleural_Thickening": "Pleural Thickening"}


def canonical(label: str) -> str:
    return LABEL_ALIASES.get(label, label)


def shared_classes(specs: Sequence[DatasetSpec]) -> tuple[str, ...]:
    """Sorted intersection of the members' harmonised class names."""
    common = set.intersection(*({canonical(c) for c in spec.classes} for spec in specs))
    return tuple(sorted(common))


def relabel(labels: Sequence[int], spec: DatasetSpec, classes: Sequence[str]) -> tuple[int, ...]:
    """``labels`` (in ``spec.classes`` order) restricted and reordered to ``classes``."""
    position = {canonical(c): i for i, c in enumerate(spec.classes)}
    return tuple(labels[position[c]] for c in classes)


def _merge_log(log: Reconciliation, member: Reconciliation, source: str) -> None:
    log.row(member.rows_read)
    for skip in member.skips:
        log.skip(f"{source}/{skip.ref}", skip.reason)


@dataclass(frozen=True)
class Concat:
    """One concatenation converter: its name and the member datasets, in order."""

    name: str
    sources: tuple[str, ...]
    member_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # source -> read kwargs

    @property
    def description(self) -> str:
        return "one raw folder per member, as each member expects: " + "; ".join(
            f"{s}: {MEMBERS[s].DESCRIPTION}" for s in self.sources)

    def read(self, raws: Mapping[str, Path], log: Reconciliation) -> tuple[DatasetSpec, Iterable[Sample]]:
        missing = [s for s in self.sources if s not in raws]
        if missing:
            raise PrepareError(f"{self.name}: no raw folder given for {missing} (needs {list(self.sources)})")
        members = []
        for source in self.sources:
            member_log = Reconciliation()
            spec, samples = MEMBERS[source].read(Path(raws[source]), member_log,
                                                 **self.member_options.get(source, {}))
            _merge_log(log, member_log, source)
            members.append((source, spec, samples))
        classes = shared_classes([spec for _, spec, _ in members])
        if not classes:
            raise PrepareError(f"{self.name}: the members {list(self.sources)} share no class")
        out: list[Sample] = []
        for source, spec, samples in members:
            for s in samples:
                labels = relabel(s.labels, spec, classes)
                out.append(Sample(f"{source}/{s.key}", s.split, s.image, labels, s.source, f"{source}:{s.patient}"))
        return DatasetSpec(self.name, "multilabel", classes), list(nonempty(out, Path(self.name)))

    def register(self) -> "Concat":
        register_converter(self.name, self.description, sources=self.sources)(self.read)
        return self
