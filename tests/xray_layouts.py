"""Tiny copies of the public chest X-ray dataset layouts, written into a test's tmp_path.

Headers, file names, label encodings and folder layouts follow the real releases; the
images are 8x8 (JPEG for CheXpert/MIMIC, 8-bit PNG for NIH/Tuberculosis/COVIDx, 16-bit PNG
for PadChest).
"""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

CHEXPERT_LABELS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                   "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                   "Pleural Other", "Fracture", "Support Devices"]
CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
MIMIC_LABEL_HEADER = ["subject_id", "study_id", *sorted(CHEXPERT_LABELS)]
MIMIC_META_HEADER = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                     "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                     "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
MIMIC_SPLIT_HEADER = ["dicom_id", "study_id", "subject_id", "split"]
# The 2017 file ends every line with a comma (pandas reads an "Unnamed: 11" column).
NIH_HEADER_2017 = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                   "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
NIH_HEADER_2020 = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Sex,View Position,"
                   "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
PADCHEST_CSV_GZ = PADCHEST_CSV + ".gz"
PADCHEST_HEADER = ["", "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth",
                   "PatientSex_DICOM", "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric",
                   "Modality_DICOM", "Manufacturer_DICOM", "PhotometricInterpretation_DICOM",
                   "PixelRepresentation_DICOM", "PixelAspectRatio_DICOM", "SpatialResolution_DICOM",
                   "BitsStored_DICOM", "WindowCenter_DICOM", "WindowWidth_DICOM", "Rows_DICOM", "Columns_DICOM",
                   "XRayTubeCurrent_DICOM", "Exposure_DICOM", "ExposureInuAs_DICOM", "ExposureTime",
                   "RelativeXRayExposure_DICOM", "ReportID", "Report", "MethodLabel", "Labels", "Localizations",
                   "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS"]
PADCHEST_BROKEN = "216840111366964012989926673512011083134050913_00-168-009.png"


def write_image(path: Path, *, bits: int = 8, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if bits == 16:
        Image.fromarray(rng.integers(0, 4096, (8, 8), dtype=np.uint16)).save(path)  # 12-bit values, as in PadChest
    else:
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[dict], *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = gzip.open(path, "wt", newline="") if gz else open(path, "w", newline="")
    with handle:
        writer = csv.DictWriter(handle, header, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------- CheXpert
def chexpert_row(patient: int, study: int, view: str, split: str = "train", projection: str = "AP",
                 **labels: str) -> dict:
    lateral = view == "Lateral"
    name = f"view{2 if lateral else 1}_{'lateral' if lateral else 'frontal'}.jpg"
    row = {"Path": f"CheXpert-v1.0-small/{split}/patient{patient:05d}/study{study}/{name}", "Sex": "Female",
           "Age": "68", "Frontal/Lateral": view, "AP/PA": "" if lateral else projection}
    row.update({k.replace("_", " "): v for k, v in labels.items()})
    return row


def chexpert_raw(root: Path, *, missing: tuple[int, ...] = (4,)) -> Path:
    """train: patient 1 healthy + lateral, 2 uncertain (PA), 3 all blank, 4 missing image, 5 only
    labels outside the medical intersection, 6 and 7 "frontal" with AP/PA = LL and RL (as 17 rows of
    the real train.csv), 10-29 Atelectasis negative; valid: patient 64541 with Pleural Effusion."""
    raw = root / "CheXpert-v1.0-small"
    train = [
        chexpert_row(1, 1, "Frontal", No_Finding="1.0", Support_Devices="1.0", Edema="-1.0"),
        chexpert_row(1, 1, "Lateral", No_Finding="1.0"),
        chexpert_row(2, 1, "Frontal", projection="PA", Cardiomegaly="-1.0", Edema="1.0", Pneumothorax="0.0"),
        chexpert_row(3, 1, "Frontal"),
        chexpert_row(4, 1, "Frontal", Edema="1.0"),
        chexpert_row(5, 1, "Frontal", Fracture="1.0", Support_Devices="1.0"),
        chexpert_row(6, 1, "Frontal", projection="LL", Edema="1.0"),
        chexpert_row(7, 1, "Frontal", projection="RL", Edema="0.0"),
        *(chexpert_row(p, 1, "Frontal", Atelectasis="0.0") for p in range(10, 30)),
    ]
    valid = [chexpert_row(64541, 1, "Frontal", "valid", Pleural_Effusion="1.0", Support_Devices="0.0")]
    for row in train + valid:
        patient = int(row["Path"].split("/patient")[1][:5])
        if patient not in missing:
            write_image(raw / row["Path"].split("/", 1)[1])
    write_csv(raw / "train.csv", CHEXPERT_HEADER, train)
    write_csv(raw / "valid.csv", CHEXPERT_HEADER, valid)
    return raw


# ---------------------------------------------------------------- MIMIC-CXR-JPG
MIMIC_IMAGES = [  # dicom_id, subject, study, view, official split
    ("d1a", "10000032", "50414267", "PA", "train"),
    ("d1b", "10000032", "50414267", "LATERAL", "train"),
    ("d2a", "10000764", "57375967", "AP", "validate"),
    ("d3a", "10001217", "52067803", "PA", "test"),
    ("d4a", "10002428", "59999999", "PA", "train"),  # study without a label row
    ("d5a", "10003400", "51000000", "", "train"),  # blank ViewPosition
    ("d6a", "10004000", "52000000", "AP", "train"),  # image file missing
]


def mimic_raw(root: Path) -> Path:
    raw = root / "mimic-cxr-jpg" / "2.0.0"
    labels = [
        {"subject_id": "10000032", "study_id": "50414267", "No Finding": "1.0"},
        {"subject_id": "10000764", "study_id": "57375967", "Pleural Effusion": "1.0", "Edema": "-1.0",
         "Support Devices": "1.0"},
        {"subject_id": "10001217", "study_id": "52067803", "Pneumonia": "0.0", "Atelectasis": "1.0"},
        {"subject_id": "10003400", "study_id": "51000000", "Edema": "1.0"},
        {"subject_id": "10004000", "study_id": "52000000", "Edema": "1.0"},
    ]
    meta = [{"dicom_id": d, "subject_id": s, "study_id": st, "ViewPosition": v, "Rows": "8", "Columns": "8"}
            for d, s, st, v, _ in MIMIC_IMAGES]
    splits = [{"dicom_id": d, "study_id": st, "subject_id": s, "split": sp} for d, s, st, _, sp in MIMIC_IMAGES]
    write_csv(raw / "mimic-cxr-2.0.0-chexpert.csv.gz", MIMIC_LABEL_HEADER, labels, gz=True)
    write_csv(raw / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_META_HEADER, meta, gz=True)
    write_csv(raw / "mimic-cxr-2.0.0-split.csv.gz", MIMIC_SPLIT_HEADER, splits, gz=True)
    for d, s, st, _, _ in MIMIC_IMAGES:
        if d != "d6a":
            write_image(raw / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg")
    return raw


# ---------------------------------------------------------------- NIH ChestX-ray14
def nih_raw(root: Path, *, v2020: bool = False) -> Path:
    """Patients 1-20, two images each; 19-20 are the official test list; 00000021_000.png is in no
    list; 00000022_000.png has no file."""
    raw = root / "NIH"
    findings = ["Cardiomegaly|Effusion", "No Finding", "Pleural_Thickening", "Infiltration|Mass|Nodule"]
    lines, train_val, test = [NIH_HEADER_2020 if v2020 else NIH_HEADER_2017], [], []
    for patient in range(1, 23):
        for follow_up in range(1 if patient > 20 else 2):
            name = f"{patient:08d}_{follow_up:03d}.png"
            label = findings[(patient + follow_up) % len(findings)]
            line = f"{name},{label},{follow_up},{patient},58,M,PA,2682,2749,0.143,0.143" + ("" if v2020 else ",")
            lines.append(line)
            if patient <= 20:
                (test if patient > 18 else train_val).append(name)
            if patient != 22:
                write_image(raw / f"images_{1 + patient % 2:03d}" / "images" / name, seed=patient)
    train_val.append("00000022_000.png")
    table = "Data_Entry_2017_v2020.csv" if v2020 else "Data_Entry_2017.csv"
    (raw / table).write_text("\n".join(lines) + "\n")
    (raw / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (raw / "test_list.txt").write_text("\n".join(test) + "\n")
    return raw


# ---------------------------------------------------------------- PadChest
PADCHEST_ROWS = [  # image id, ImageDir, patient, Projection, Labels cell
    ("a1_00-000-001.png", "0", "pat01", "PA", "['cardiomegaly', ' pleural effusion']"),
    ("a1_00-000-002.png", "0", "pat01", "L", "['cardiomegaly']"),
    ("a2_00-000-003.png", "0", "pat02", "PA", "['normal']"),
    ("a3_00-000-004.png", "1", "pat03", "AP_horizontal", "['loculated pleural effusion']"),
    ("a4_00-000-005.png", "1", "pat04", "AP", "['ground glass pattern', 'NSG tube']"),
    ("a5_00-000-006.png", "1", "pat05", "PA", "['']"),  # the release's blank label list (777 rows)
    ("a6_00-000-007.png", "1", "pat06", "PA", "nan"),
    ("a6_00-000-017.png", "1", "pat06", "PA", ""),
    (PADCHEST_BROKEN, "1", "pat07", "PA", "['normal']"),
    ("a8_00-000-009.png", "1", "pat08", "PA", "['exclude']"),
    ("a9_00-000-010.png", "1", "pat09", "PA", "['pneumonia']"),  # file missing
    ("c1_00-000-020.png", "1", "pat30", "COSTAL", "['fracture']"),
    ("c2_00-000-021.png", "1", "pat31", "EXCLUDE", "['normal']"),
    ("c3_00-000-022.png", "1", "pat32", "PA", "['consolidation']"),  # Consolidation and Infiltration
    *((f"b{i:02d}_01-000-000.png", "2", f"pat{i:02d}", "PA", "['normal']" if i % 2 else "[' scoliosis']")
      for i in range(10, 30)),
]


def padchest_raw(root: Path) -> Path:
    raw = root / "PadChest"
    rows = []
    for index, (image, image_dir, patient, projection, labels) in enumerate(PADCHEST_ROWS):
        rows.append({"": str(index), "ImageID": image, "ImageDir": image_dir, "PatientID": patient,
                     "PatientBirth": "1930.0", "Projection": projection, "Labels": labels, "StudyID": f"s{index}",
                     "Report": " sin hallazg patolog edad pacient ."})
        if not image.startswith("a9_"):
            write_image(raw / image_dir / image, bits=16, seed=index)
    write_csv(raw / PADCHEST_CSV, PADCHEST_HEADER, rows)
    return raw


# ---------------------------------------------------------------- COVIDx
CovidxEntry = tuple  # (patient id, file name, class, data source or None): one list line


def covidx_raw(root: Path, splits: dict[str, list[CovidxEntry]], *, missing: tuple[str, ...] = ()) -> Path:
    """``<split>.txt`` with one space-separated line per entry, and the images in ``<split>/``."""
    raw = root / "COVIDx"
    for split, entries in splits.items():
        raw.mkdir(parents=True, exist_ok=True)
        (raw / f"{split}.txt").write_text("".join(" ".join(f for f in e if f) + "\n" for e in entries))
        for _, filename, _, _ in entries:
            if filename not in missing:
                write_image(raw / split / filename)
    return raw


# ---------------------------------------------------------------- Tuberculosis
def tuberculosis_raw(root: Path, n_per_class: int = 10) -> Path:
    """The NLM layout, 2 x n_per_class images per set, plus a mask, a stray copy, a read-me PNG and
    an HTML page saved under a radiograph's name."""
    raw = root / "Tuberculosis"
    for i in range(1, 2 * n_per_class + 1):
        write_image(raw / "ChinaSet_AllFiles" / "CXR_png" / f"CHNCXR_{i:04d}_{i % 2}.png", seed=i)
        write_image(raw / "MontgomerySet" / "CXR_png" / f"MCUCXR_{i:04d}_{i % 2}.png", seed=100 + i)
    write_image(raw / "MontgomerySet" / "ManualMask" / "leftMask" / "MCUCXR_0001_1.png")
    write_image(raw / "flat_copy" / "CHNCXR_0001_1.png")
    write_image(raw / "ChinaSet_AllFiles" / "NLM-ChinaCXRSet-ReadMe.png")
    (raw / "ChinaSet_AllFiles" / "CXR_png" / "CHNCXR_0999_1.png").write_bytes(b"<html>download error</html>")
    return raw


def tuberculosis_sets(root: Path, names: dict[str, list[str]]) -> Path:
    """The NLM layout with the given file names per set folder (``ChinaSet_AllFiles``, ``MontgomerySet``)."""
    raw = root / "Tuberculosis"
    for seed, (folder, files) in enumerate(names.items()):
        for i, name in enumerate(files):
            write_image(raw / folder / "CXR_png" / name, seed=1000 * seed + i)
    return raw
