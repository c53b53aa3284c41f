"""PadChest (BIMCV, Hospital San Juan de Alicante), multi-label.

``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]`` lists one 16-bit PNG per row:
ImageID, ImageDir (the number of the zip it came in, i.e. its sub-folder), PatientID,
Projection (PA, L, AP, AP_horizontal, COSTAL, EXCLUDE, UNK) and ``Labels``, a Python-list
string of report findings (``"['pleural effusion', ' cardiomegaly']"``: terms may carry a
leading blank; ``nan`` or a blank cell means the report was not labelled and is skipped, as
the paper's loader drops null ``Labels``; a list without a non-blank term, ``['']`` in the
release, is kept as the loader keeps it: no finding, so every pathology negative).

Views: the paper's PadChest configs (``configs/finetune/padchest.yaml``,
``configs/padchest_bit152x4.yaml``) keep PA, AP, AP Supine (the release's AP_horizontal),
L and COSTAL; EXCLUDE and UNK rows are skipped.

The classes are the 27 pathologies of the paper's PadChest loader (torchxrayvision's list
without "Tube"); a pathology is positive when a finding term contains its name or one of
its synonyms (torchxrayvision's mapping), e.g. "loculated pleural effusion" -> Effusion.
Splits: 90 % train / 10 % val, the val split being what the paper's code validates on
(``transfer_learning/datasets/padchest.py``: ``TRAIN_RATIO = 0.9``, the held-out rest is its
``train=False`` set); here per patient, seeded, where the code shuffled images (seed 42),
which put a patient's images on both sides. There is no test split.
"""
from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, PrepareError, Reconciliation, Sample

from .common import assign_splits, find_file, multi_hot, read_csv, relative_parts, split_by_patient
from .image_folders import image_problem, nonempty
from .raw_files import require_dir

NAME = "padchest"
DESCRIPTION = ("BIMCV-PadChest-FULL/ with PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz] and the "
               "16-bit PNGs in <ImageDir>/ sub-folders (the unzipped 0.zip ... 54.zip) or flat")
CSV_NAMES = ("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
             "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
COLUMNS = ("ImageID", "ImageDir", "PatientID", "Projection", "Labels")
FRONTAL_PROJECTIONS = frozenset({"PA", "AP", "AP_horizontal"})
PAPER_PROJECTIONS = FRONTAL_PROJECTIONS | {"L", "COSTAL"}
TRAIN_VAL = {"train": 0.9, "val": 0.1}

PATHOLOGIES: tuple[str, ...] = tuple(sorted([
    "Air Trapping", "Aortic Atheromatosis", "Aortic Elongation", "Atelectasis", "Bronchiectasis",
    "Cardiomegaly", "Consolidation", "Costophrenic Angle Blunting", "Edema", "Effusion", "Emphysema",
    "Fibrosis", "Flattened Diaphragm", "Fracture", "Granuloma", "Hemidiaphragm Elevation", "Hernia",
    "Hilar Enlargement", "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia",
    "Pneumothorax", "Scoliosis", "Support Devices", "Tuberculosis",
]))
SYNONYMS: dict[str, tuple[str, ...]] = {
    "Infiltration": ("infiltrates", "interstitial pattern", "ground glass pattern",
                     "reticular interstitial pattern", "reticulonodular interstitial pattern",
                     "alveolar pattern", "consolidation", "air bronchogram"),
    "Pleural_Thickening": ("pleural thickening",),
    "Consolidation": ("air bronchogram",),
    "Hilar Enlargement": ("adenopathy", "pulmonary artery enlargement"),
    "Support Devices": ("device", "pacemaker"),
}
SPEC = DatasetSpec(NAME, "multilabel", PATHOLOGIES)
_NEEDLES = {p: (p.lower(), *SYNONYMS.get(p, ())) for p in PATHOLOGIES}

# Images listed in the CSV that are absent from the release or cannot be decoded: the union of
# torchxrayvision's PC_Dataset list and the paper's loader list (same files, a few more).
BROKEN_FILES = frozenset({
    "216840111366964012283393834152009027091819347_00-007-136.png",
    "216840111366964012283393834152009033102258826_00-059-087.png",
    "216840111366964012283393834152009033140208626_00-059-118.png",
    "216840111366964012339356563862009072111404053_00-043-192.png",
    "216840111366964012373310883942009077082646386_00-047-124.png",
    "216840111366964012373310883942009117084022290_00-064-025.png",
    "216840111366964012373310883942009152114636712_00-102-045.png",
    "216840111366964012373310883942009170084120009_00-097-074.png",
    "216840111366964012373310883942009180082307973_00-097-011.png",
    "216840111366964012487858717522009280135853083_00-075-001.png",
    "216840111366964012558082906712009327122220177_00-102-064.png",
    "216840111366964012819207061112010281134410801_00-129-131.png",
    "216840111366964012819207061112010306085429121_04-020-102.png",
    "216840111366964012819207061112010307142602253_04-014-084.png",
    "216840111366964012819207061112010315104455352_04-024-184.png",
    "216840111366964012904401302362010336141343749_03-198-010.png",
    "216840111366964012904401302362010337093236130_03-198-079.png",
    "216840111366964012959786098432011033083840143_00-176-115.png",
    "216840111366964012989926673512011074122523403_00-163-058.png",
    "216840111366964012989926673512011083134050913_00-168-009.png",
    "216840111366964012989926673512011151082430686_00-157-045.png",
    "216840111366964013076187734852011291090445391_00-196-188.png",
    "216840111366964013590140476722013043111952381_02-065-198.png",
    "216840111366964013590140476722013049100117076_02-063-097.png",
    "216840111366964013590140476722013058110301622_02-056-111.png",
    "216840111366964013649110343042013092101343018_02-075-146.png",
    "216840111366964013686042548532013208193054515_02-026-007.png",
    "216840111366964013829543166512013353113303615_02-092-190.png",
    "216840111366964013962490064942014134093945580_01-178-104.png",
    "269300710246070740096540277379121868595_e7zsan.png",
})


@dataclass(frozen=True)
class PadChestImage:
    """A usable CSV row: the image, its patient and its report findings."""

    key: str
    path: Path
    patient: str
    findings: tuple[str, ...]


def parse_findings(text: str, where: str) -> tuple[str, ...]:
    """Sorted distinct finding terms of a ``Labels`` cell, blanks stripped."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise PrepareError(f"{where}: Labels {text!r} is not a Python list of strings") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise PrepareError(f"{where}: Labels {text!r} is not a Python list of strings")
    return tuple(sorted({t.strip() for t in value if t.strip()}))


def pathology_labels(findings: Iterable[str]) -> tuple[int, ...]:
    """The 27-pathology vector: a class is positive when a term contains its name or a synonym."""
    terms = "\n".join(t.lower() for t in findings)  # no needle holds a newline: no match spans two terms
    return multi_hot(PATHOLOGIES, [p for p, needles in _NEEDLES.items() if any(n in terms for n in needles)])


def _image_file(raw: Path, image_dir: str, image_id: str, where: str) -> Path:
    """``<ImageDir>/<ImageID>`` below ``raw``, or ``<ImageID>`` directly below it (the flat layout)."""
    try:
        folder, name = raw.joinpath(*relative_parts(image_dir, "ImageDir")), relative_parts(image_id, "ImageID")
    except PrepareError as err:
        raise PrepareError(f"{where}: {err}") from None
    nested, flat = folder.joinpath(*name), raw.joinpath(*name)
    return nested if nested.exists() or not flat.exists() else flat


def read_images(raw: Path, log: Reconciliation, name: str,
                views: frozenset[str] | None = PAPER_PROJECTIONS) -> list[PadChestImage]:
    """Every usable row of the PadChest CSV; each other row is logged as a skip."""
    require_dir(raw, DESCRIPTION)
    table = find_file(raw, *CSV_NAMES)
    images: list[PadChestImage] = []
    for line, row in enumerate(read_csv(table, COLUMNS, progress=name), start=2):
        log.row()
        image_id, projection, labels = row["ImageID"].strip(), row["Projection"].strip(), row["Labels"].strip()
        ref = f"{table.name}:{image_id}"
        path = _image_file(raw, row["ImageDir"].strip(), image_id, f"{table} line {line}")
        if views is not None and projection not in views:
            log.skip(ref, f"projection {projection or 'blank'} not in {'/'.join(sorted(views))}")
            continue
        if not labels or labels.lower() == "nan":  # the release writes "nan" for unlabelled reports
            log.skip(ref, "no labels (blank Labels)")
            continue
        findings = parse_findings(labels, f"{table} line {line}")
        if image_id in BROKEN_FILES:
            log.skip(ref, "known broken file")
        elif problem := image_problem(path):
            log.skip(ref, problem)
        else:
            images.append(PadChestImage(path.relative_to(raw).as_posix(), path, row["PatientID"].strip(), findings))
    return images


def patient_splits(images: Iterable[PadChestImage]) -> dict[str, str]:
    """PadChest's split of these images' patients (patient -> "train" / "val"): PadChest-Cl
    takes its own from it, so that no image of its test split is in PadChest's train split."""
    return split_by_patient([im.patient for im in images], TRAIN_VAL)


@register_converter(NAME, DESCRIPTION, markers=CSV_NAMES)
def read(raw: Path, log: Reconciliation, *,
         views: frozenset[str] | None = PAPER_PROJECTIONS) -> tuple[DatasetSpec, Iterable[Sample]]:
    images = read_images(raw, log, NAME, views)
    samples = [Sample(im.key, "", im.path, pathology_labels(im.findings), NAME, im.patient) for im in images]
    return SPEC, assign_splits(list(nonempty(samples, raw)), patient_splits(images))
