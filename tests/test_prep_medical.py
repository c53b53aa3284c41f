"""Chest X-ray converters on tiny copies of each dataset's real layout (tests/xray_layouts.py)."""
from __future__ import annotations

import csv
import gzip
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from xferscale.data.records import NEGATIVE as N, POSITIVE as P, UNKNOWN as U, PrepareError, Reconciliation
from xferscale.data_prep import (chexpert, chexpert_mimic, chexpert_mimic_nih, chexpert_mimic_nih_padchest, covidx,
                                 mimic_cxr, nih, padchest, padchest_cl, tuberculosis)
from xferscale.data_prep.common import NOT_ENTERED

import xray_layouts as layouts


def convert(module, raw, **kwargs):
    log = Reconciliation()
    spec, samples = module.read(raw, log, **kwargs)
    samples = list(samples)
    assert log.rows_read == len(samples) + len(log.skips), "every row is either a sample or a skip"
    return spec, samples, log


def by_key(samples):
    return {s.key: s for s in samples}


def assert_patient_disjoint(samples):
    splits_of = {}
    for s in samples:
        splits_of.setdefault(s.patient, set()).add(s.split)
    assert all(len(v) == 1 for v in splits_of.values()), {p: v for p, v in splits_of.items() if len(v) > 1}


def vector(spec, **named):
    """A label vector in ``spec.classes`` order: UNKNOWN unless named (underscores for blanks)."""
    values = {k.replace("_", " "): v for k, v in named.items()}
    return tuple(values.get(c, values.get(c.replace(" ", "_"), U)) for c in spec.classes)


def drop_column(path: Path, column: str) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    header = [h for h in rows[0] if h != column]
    with opener(path, "wt", newline="") as f:
        writer = csv.DictWriter(f, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------- CheXpert
def test_chexpert_labels_views_and_splits(tmp_path):
    """As the paper's code: all of train.csv trains, valid.csv validates; PA/AP views only."""
    raw = layouts.chexpert_raw(tmp_path)
    spec, samples, log = convert(chexpert, raw)
    assert spec.task == "multilabel" and len(spec.classes) == 13 and "No Finding" not in spec.classes
    assert log.rows_read == 29
    assert log.skip_reasons() == Counter({"lateral view": 1, "frontal view LL not in AP/PA": 1,
                                          "frontal view RL not in AP/PA": 1, "image file missing": 1})
    s = by_key(samples)
    healthy = s["train/patient00001/study1/view1_frontal.jpg"]
    # No Finding = 1 makes every pathology negative (even an uncertain one), Support Devices too (the paper's code).
    assert healthy.labels == tuple(N for c in spec.classes)
    uncertain = s["train/patient00002/study1/view1_frontal.jpg"]
    assert uncertain.labels == vector(spec, Cardiomegaly=U, Edema=P, Pneumothorax=N)
    assert uncertain.patient == "patient00002" and uncertain.source == "chexpert"
    assert uncertain.image == raw / "train/patient00002/study1/view1_frontal.jpg" and uncertain.image.is_file()
    # A row with no known label is kept (masked from the loss), as the code keeps it.
    assert s["train/patient00003/study1/view1_frontal.jpg"].labels == (U,) * 13
    valid = s["valid/patient64541/study1/view1_frontal.jpg"]
    assert valid.split == "val" and valid.labels == vector(spec, Pleural_Effusion=P, Support_Devices=N)
    assert Counter(x.split for x in samples) == Counter({"train": 24, "val": 1})  # nothing carved, no test
    assert_patient_disjoint(samples)


def test_chexpert_keeps_laterals_when_asked_and_is_deterministic(tmp_path):
    raw = layouts.chexpert_raw(tmp_path)
    _, all_views, log = convert(chexpert, raw, frontal_only=False)
    assert "lateral view" not in log.skip_reasons() and any("lateral" in x.key for x in all_views)
    assert convert(chexpert, raw)[1] == convert(chexpert, raw)[1]


def test_chexpert_named_errors(tmp_path):
    raw = layouts.chexpert_raw(tmp_path)
    drop_column(raw / "train.csv", "Frontal/Lateral")
    with pytest.raises(PrepareError, match=r"train\.csv: missing column\(s\) \['Frontal/Lateral'\]"):
        chexpert.read(raw, Reconciliation())
    (raw / "valid.csv").unlink()
    with pytest.raises(PrepareError, match=r"valid\.csv"):
        chexpert.read(raw, Reconciliation())


@pytest.mark.parametrize("outside, problem", [(True, "is absolute"), (False, "has a '..' part")])
def test_chexpert_path_outside_the_release_is_one_named_error(tmp_path, outside, problem):
    raw = layouts.chexpert_raw(tmp_path)
    row = "CheXpert-v1.0-small/train/patient00010/study1/view1_frontal.jpg"
    # An existing image outside the release, named absolute or by climbing out of it.
    image = layouts.write_image(tmp_path / "outside" / "patient00010" / "study1" / "view1_frontal.jpg")
    path = str(image) if outside else "CheXpert-v1.0-small/../outside/patient00010/study1/view1_frontal.jpg"
    table = raw / "train.csv"
    table.write_text(table.read_text().replace(row, path, 1))
    with pytest.raises(PrepareError) as caught:
        list(chexpert.read(raw, Reconciliation())[1])
    message = str(caught.value)
    assert message.startswith(f"{table} line ") and f"Path {path!r} {problem}" in message and "\n" not in message


def test_chexpert_unparseable_label(tmp_path):
    raw = layouts.chexpert_raw(tmp_path)
    text = (raw / "valid.csv").read_text().replace(",1.0,", ",yes,", 1)
    (raw / "valid.csv").write_text(text)
    with pytest.raises(PrepareError, match=r"valid\.csv line 2: column 'Pleural Effusion' has 'yes'"):
        list(chexpert.read(raw, Reconciliation())[1])


# ---------------------------------------------------------------- MIMIC-CXR-JPG
def test_mimic_official_split_views_and_labels(tmp_path):
    raw = layouts.mimic_raw(tmp_path)
    spec, samples, log = convert(mimic_cxr, raw)
    assert spec.classes == chexpert.SPEC.classes
    assert log.rows_read == len(layouts.MIMIC_IMAGES)
    assert log.skip_reasons() == Counter({"view LATERAL not in AP/PA": 1, "view blank not in AP/PA": 1,
                                          "study has no label row": 1, "image file missing": 1})
    s = {x.key.rsplit("/", 1)[1]: x for x in samples}
    assert {k: x.split for k, x in s.items()} == {"d1a.jpg": "train", "d2a.jpg": "val", "d3a.jpg": "test"}
    # No Finding = 1 with Support Devices blank: negative everywhere (the paper's code).
    assert s["d1a.jpg"].labels == tuple(N for c in spec.classes)
    assert s["d2a.jpg"].labels == vector(spec, Pleural_Effusion=P, Edema=U, Support_Devices=P)
    assert s["d3a.jpg"].labels == vector(spec, Pneumonia=N, Atelectasis=P)
    assert s["d3a.jpg"].patient == "10001217"
    assert s["d3a.jpg"].image == raw / "files/p10/p10001217/s52067803/d3a.jpg"


def test_mimic_plain_csv_and_named_errors(tmp_path):
    raw = layouts.mimic_raw(tmp_path)
    for path in raw.glob("*.csv.gz"):  # the tables also come uncompressed
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    assert len(convert(mimic_cxr, raw)[1]) == 3
    drop_column(raw / "mimic-cxr-2.0.0-metadata.csv", "ViewPosition")
    with pytest.raises(PrepareError, match=r"metadata\.csv: missing column\(s\) \['ViewPosition'\]"):
        mimic_cxr.read(raw, Reconciliation())
    (raw / "mimic-cxr-2.0.0-split.csv").unlink()
    with pytest.raises(PrepareError, match=r"mimic-cxr-2\.0\.0-split\.csv\.gz, mimic-cxr-2\.0\.0-split\.csv"):
        mimic_cxr.read(raw, Reconciliation())


# ---------------------------------------------------------------- NIH ChestX-ray14
@pytest.mark.parametrize("v2020", [False, True])
def test_nih_trains_on_train_val_and_validates_on_the_test_list(tmp_path, v2020):
    raw = layouts.nih_raw(tmp_path, v2020=v2020)
    spec, samples, log = convert(nih, raw)
    assert len(spec.classes) == 14 and "Effusion" in spec.classes and "No Finding" not in spec.classes
    assert log.rows_read == 42
    assert log.skip_reasons() == Counter({"image in neither split list": 1, "image file missing": 1})
    s = {Path(x.key).name: x for x in samples}
    # As the paper's code: the official test list is what it validates on; train_val is all train.
    assert {name for name, x in s.items() if x.split == "val"} == set((raw / "test_list.txt").read_text().split())
    assert {name for name, x in s.items() if x.split == "train"} == set(
        (raw / "train_val_list.txt").read_text().split()) - {"00000022_000.png"}
    assert s["00000004_000.png"].labels == tuple(P if c in ("Cardiomegaly", "Effusion") else N for c in spec.classes)
    assert s["00000002_000.png"].labels == tuple(P if c == "Pleural_Thickening" else N for c in spec.classes)
    assert s["00000003_000.png"].labels == tuple(P if c in ("Infiltration", "Mass", "Nodule") else N
                                                 for c in spec.classes)
    assert s["00000001_000.png"].labels == (N,) * 14  # No Finding
    assert {x.split for x in samples} == {"train", "val"}
    assert_patient_disjoint(samples)


def test_nih_reads_linked_image_folders_and_counts_a_loop(tmp_path):
    raw = layouts.nih_raw(tmp_path)
    expected = {x.key: x.labels for x in convert(nih, raw)[1]}
    # The Kaggle folders often live on another file system, linked in; a link back up makes a loop.
    (raw / "images_002").rename(tmp_path / "elsewhere")
    (raw / "images_002").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (raw / "images_001" / "images" / "again").symlink_to(raw / "images_001", target_is_directory=True)
    _, samples, log = convert(nih, raw)
    assert {x.key: x.labels for x in samples} == expected
    assert [(k.ref, k.reason) for k in log.skips if k.reason == NOT_ENTERED] == [
        ("images_001/images/again", NOT_ENTERED)]


def test_nih_named_errors(tmp_path):
    raw = layouts.nih_raw(tmp_path)
    table = raw / "Data_Entry_2017.csv"
    table.write_text(table.read_text().replace("Pleural_Thickening", "Pleural Thickening", 1))
    with pytest.raises(PrepareError, match=r"Data_Entry_2017\.csv line \d+: .*unknown label"):
        nih.read(raw, Reconciliation())
    (raw / "test_list.txt").unlink()
    with pytest.raises(PrepareError, match="test_list.txt"):
        nih.read(raw, Reconciliation())
    drop_column(table, "Patient ID")
    with pytest.raises(PrepareError, match=r"Data_Entry_2017\.csv: missing column\(s\) \['Patient ID'\]"):
        nih.read(raw, Reconciliation())


# ---------------------------------------------------------------- PadChest
def test_padchest_multilabel(tmp_path):
    raw = layouts.padchest_raw(tmp_path)
    spec, samples, log = convert(padchest, raw)
    assert len(spec.classes) == 27
    assert log.rows_read == len(layouts.PADCHEST_ROWS)
    assert log.skip_reasons() == Counter({"projection EXCLUDE not in AP/AP_horizontal/COSTAL/L/PA": 1,
                                          "no labels (blank Labels)": 2, "known broken file": 1,
                                          "image file missing": 1})
    s = {Path(x.key).name: x for x in samples}
    pos = lambda x: {c for c, v in zip(spec.classes, x.labels) if v == P}  # noqa: E731
    assert pos(s["a1_00-000-001.png"]) == {"Cardiomegaly", "Effusion"}  # ' pleural effusion' has a blank
    assert pos(s["a3_00-000-004.png"]) == {"Effusion"}
    assert pos(s["a4_00-000-005.png"]) == {"Infiltration"}  # synonym; 'NSG tube' is not a class
    assert pos(s["a2_00-000-003.png"]) == set() and U not in s["a2_00-000-003.png"].labels
    # The release's blank label list ['']: the paper's loader keeps it, and its substring search finds nothing.
    assert s["a5_00-000-006.png"].labels == (N,) * 27
    assert pos(s["a1_00-000-002.png"]) == {"Cardiomegaly"} and pos(s["c1_00-000-020.png"]) == {"Fracture"}
    assert pos(s["c3_00-000-022.png"]) == {"Consolidation", "Infiltration"}
    image = s["a1_00-000-001.png"].image
    assert image == raw / "0" / "a1_00-000-001.png" and Image.open(image).mode.startswith("I;16")
    assert s["a1_00-000-001.png"].patient == "pat01"
    assert {x.split for x in samples} == {"train", "val"}  # 90 / 10 as the code; it validates on the 10 %
    assert_patient_disjoint(samples)
    assert convert(padchest, raw)[1] == samples


def test_padchest_flat_layout_and_all_views(tmp_path):
    raw = layouts.padchest_raw(tmp_path)
    for png in list(raw.glob("*/*.png")):
        png.rename(raw / png.name)
    _, samples, log = convert(padchest, raw, views=None)
    assert "image file missing" in log.skip_reasons() and len(samples) == len(layouts.PADCHEST_ROWS) - 4
    assert all(x.image.parent == raw for x in samples)


def test_padchest_named_errors(tmp_path):
    raw = layouts.padchest_raw(tmp_path)
    table = raw / layouts.PADCHEST_CSV
    table.write_text(table.read_text().replace("['normal']", "normal", 1))
    with pytest.raises(PrepareError, match=r"labels_160K_01\.02\.19\.csv line 4: Labels 'normal'"):
        padchest.read(raw, Reconciliation())
    drop_column(table, "PatientID")
    with pytest.raises(PrepareError, match=r"missing column\(s\) \['PatientID'\]"):
        padchest.read(raw, Reconciliation())
    table.unlink()
    with pytest.raises(PrepareError, match="PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"):
        padchest.read(raw, Reconciliation())


@pytest.mark.parametrize("column, value, problem", [("ImageID", "../../outside.png", "has a '..' part"),
                                                     ("ImageDir", "/tmp", "is absolute")])
def test_padchest_image_outside_the_raw_folder_is_one_named_error(tmp_path, column, value, problem):
    raw = layouts.padchest_raw(tmp_path)
    layouts.write_image(tmp_path / "outside.png", bits=16)
    table = raw / layouts.PADCHEST_CSV
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[2][column] = value
    layouts.write_csv(table, layouts.PADCHEST_HEADER, rows)
    with pytest.raises(PrepareError, match=rf"labels_160K_01\.02\.19\.csv line 4: {column} {value!r} {problem}"):
        padchest.read(raw, Reconciliation())


def test_padchest_cl_exactly_one_pathology(tmp_path):
    """The paper's SingleLabelFromMultiLabel: one of the 27 pathologies positive; 'normal' is dropped."""
    raw = layouts.padchest_raw(tmp_path)
    spec, samples, log = convert(padchest_cl, raw)
    assert spec.task == "multiclass"
    assert spec.classes == ("Cardiomegaly", "Effusion", "Fracture", "Infiltration", "Scoliosis")
    reasons = log.skip_reasons()
    assert reasons["none of the 27 pathologies"] == 13  # 'normal' (x11), 'exclude' and the blank list ['']
    assert reasons["several of the 27 pathologies"] == 2  # cardiomegaly + effusion; consolidation
    assert reasons["known broken file"] == 1
    s = {Path(x.key).name: x for x in samples}
    assert s["a3_00-000-004.png"].labels == (spec.classes.index("Effusion"),)  # loculated pleural effusion
    assert s["a4_00-000-005.png"].labels == (spec.classes.index("Infiltration"),)  # synonym; NSG tube is none
    assert s["a1_00-000-002.png"].labels == (spec.classes.index("Cardiomegaly"),)  # lateral view kept
    assert s["c1_00-000-020.png"].labels == (spec.classes.index("Fracture"),)  # COSTAL view kept
    assert s["b10_01-000-000.png"].labels == (spec.classes.index("Scoliosis"),)  # ' scoliosis' stripped
    assert "a2_00-000-003.png" not in s  # normal
    assert_patient_disjoint(samples)
    assert {x.split for x in samples} == {"train", "test"}  # no val


def test_padchest_cl_is_cut_from_padchests_own_split(tmp_path):
    """As the paper's code: PadChest's train images are PadChest-Cl's train, its val images the test,
    so no PadChest-Cl test image is one PadChest trains on, whichever views both keep."""
    raw = layouts.padchest_raw(tmp_path)
    for views in ({}, {"views": None}, {"views": frozenset({"PA"})}):
        _, single, _ = convert(padchest_cl, raw, **views)
        padchest_split = {x.key: x.split for x in convert(padchest, raw, **views)[1]}
        assert {x.split for x in single} == {"train", "test"}
        assert all({"train": "train", "val": "test"}[padchest_split[x.key]] == x.split for x in single)


def real_table(name: str) -> Path:
    """A metadata table that ships with torchxrayvision (no images)."""
    torchxrayvision = pytest.importorskip("torchxrayvision")
    return Path(torchxrayvision.__file__).parent / "data" / name


def test_padchest_on_the_real_label_table(tmp_path):
    """The real table: the rows the paper's loader keeps (160,709), 90 % per patient to train;
    PadChest-Cl's test images are none of PadChest's training images."""
    import shutil

    table = real_table(layouts.PADCHEST_CSV_GZ)
    raw = tmp_path / "PadChest"
    raw.mkdir()
    shutil.copy(table, raw / table.name)
    with pytest.MonkeyPatch.context() as mp:  # no images on disk: every row's image is taken as present
        mp.setattr(padchest, "image_problem", lambda path: None)
        _, single, single_log = convert(padchest_cl, raw)
        _, samples, log = convert(padchest, raw)
    assert len(samples) == 160_709 and log.skip_reasons() == Counter({
        "known broken file": 30, "no labels (blank Labels)": 103,
        "projection UNK not in AP/AP_horizontal/COSTAL/L/PA": 8,
        "projection EXCLUDE not in AP/AP_horizontal/COSTAL/L/PA": 11})
    assert Counter(s.split for s in samples) == Counter({"train": 144_574, "val": 16_135})  # the code: 144,638
    assert_patient_disjoint(samples)
    # PadChest-Cl: the single-label images, cut from PadChest's split (train -> train, val -> test).
    assert len(single) == 41_540 and len({s.patient for s in single}) == 21_159
    assert Counter(s.split for s in single) == Counter({"train": 37_350, "test": 4_190})  # the code: 37,387 / 4,153
    assert single_log.skip_reasons()["none of the 27 pathologies"] == 77_871
    assert_patient_disjoint(single)
    padchest_train = {s.key for s in samples if s.split == "train"}
    assert not {s.key for s in single if s.split == "test"} & padchest_train  # no test image pre-trained on
    classes = {s.labels[0] for s in single}
    assert len(classes) == 26 and {s.labels[0] for s in single if s.split == "test"} == classes  # every AUC defined


def test_chexpert_on_the_real_label_table(tmp_path):
    """The real train.csv: the paper's code trains on its 191,010 PA/AP rows."""
    raw = tmp_path / "CheXpert-v1.0-small"
    raw.mkdir()
    (raw / "train.csv").write_bytes(gzip.decompress(real_table("chexpert_train.csv.gz").read_bytes()))
    (raw / "valid.csv").write_text(",".join(layouts.CHEXPERT_HEADER) + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chexpert, "image_problem", lambda path: None)
        _, frontal, log = convert(chexpert, raw)
    assert log.rows_read == 223_414 and len(frontal) == 191_010 and {s.split for s in frontal} == {"train"}
    assert log.skip_reasons() == Counter({"lateral view": 32_387, "frontal view LL not in AP/PA": 16,
                                          "frontal view RL not in AP/PA": 1})
    assert sum(1 for s in frontal if all(v == U for v in s.labels)) == 1_984  # kept, masked from the loss


# ---------------------------------------------------------------- COVIDx
def test_covidx_cxr2_binary_with_sources(tmp_path):
    train = [(str(i), f"img{i}.png", "positive" if i % 3 == 0 else "negative", "ricord" if i % 2 else "rsna")
             for i in range(30)]
    test = [("p1", "t1.png", "positive", "bimcv"), ("p2", "t2.png", "negative", "rsna")]
    raw = layouts.covidx_raw(tmp_path, {"train": train, "test": test}, missing=("img7.png",))
    spec, samples, log = convert(covidx, raw)
    assert spec.classes == ("negative", "positive") and spec.task == "multiclass"
    assert log.rows_read == 32 and log.skip_reasons() == Counter({"image file missing": 1})
    s = by_key(samples)
    assert s["train/img3.png"].labels == (1,) and s["train/img4.png"].labels == (0,)
    assert s["train/img3.png"].source == "ricord" and s["train/img3.png"].patient == "ricord:3"
    assert s["test/t1.png"].split == "test" and s["test/t1.png"].image == raw / "test" / "t1.png"
    # The lists as they are, as the paper's code: nothing carved out of train.txt.
    assert Counter(x.split for x in samples) == Counter({"train": 29, "test": 2})
    assert_patient_disjoint(samples)


def test_covidx_older_releases_and_val_file(tmp_path):
    train = [("3", "SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg", "pneumonia", "cohen"),  # v2-v7A
             ("14", "ryct.2020200034.fig2.jpeg", "COVID-19", None),  # v1: 3 columns
             ("29", "streptococcus-pneumoniae-pneumonia-1.jpg", "bacteria", None),  # v1: bacteria / viral
             ("1", "normal-1.png", "normal", "rsna"),
             ("COVID-19(69)", "COVID-19 (69).png", "COVID-19", "sirm")]  # a file name with a blank
    raw = layouts.covidx_raw(tmp_path, {"train": train, "test": [("9", "t.png", "normal", "rsna")],
                                        "val": [("8", "v.png", "COVID-19", "sirm")]})
    _, samples, log = convert(covidx, raw)
    s = by_key(samples)
    assert [s[f"train/{e[1]}"].labels for e in train] == [(0,), (1,), (0,), (0,), (1,)]
    assert s["train/COVID-19 (69).png"].patient == "sirm:COVID-19(69)"
    assert s["train/ryct.2020200034.fig2.jpeg"].source == "covidx"
    assert s["val/v.png"].split == "val" and {x.split for x in samples} == {"train", "val", "test"}
    assert Counter(x.split for x in samples)["train"] == 5  # val.txt given: nothing carved from train


def test_covidx_label_file_quirks_of_the_real_releases(tmp_path):
    """Patient ids with a blank (v7/v8), a file listed twice (v1, v4), a patient in both lists."""
    train = [("COVID 101", "COVID(101).png", "positive", "sirm"),  # patient 'COVID 101'
             ("COVID 102", "COVID(102).png", "positive", "sirm"),
             ("COVID 102", "COVID(102).png", "positive", "sirm"),  # listed again
             ("7", "a.png", "negative", "rsna"), ("7", "b.png", "negative", "rsna"),  # patient 7 is also tested
             *((str(20 + i), f"n{i}.png", "negative", "rsna") for i in range(20))]
    test = [("7", "t7.png", "negative", "rsna"), ("COVID 103", "COVID(103).png", "positive", "sirm"),
            ("COVID 104", "COVID(104).png", "positive", "sirm")]  # the last one's file is missing
    raw = layouts.covidx_raw(tmp_path, {"train": train, "test": test}, missing=("COVID(104).png",))
    _, samples, log = convert(covidx, raw)
    s = by_key(samples)
    assert s["train/COVID(101).png"].patient == "sirm:COVID 101" and s["train/COVID(101).png"].labels == (1,)
    assert s["test/COVID(103).png"].split == "test"
    assert log.skip_reasons() == Counter({"listed again": 1, "patient also in the test list": 2,
                                          "image file missing": 1})
    assert "train/a.png" not in s and "train/b.png" not in s and s["test/t7.png"].split == "test"
    assert [k.ref for k in log.skips if k.reason == "image file missing"] == ["test.txt:COVID(104).png"]
    assert_patient_disjoint(samples)


def test_covidx_file_outside_the_raw_folder_is_one_named_error(tmp_path):
    raw = layouts.covidx_raw(tmp_path, {"train": [("1", "a.png", "positive", "rsna")],
                                        "test": [("2", "b.png", "negative", "rsna")]})
    layouts.write_image(tmp_path / "outside.png")
    (raw / "test.txt").write_text("2 ../../outside.png negative rsna\n")
    with pytest.raises(PrepareError, match=r"test\.txt line 1: file name '\.\./\.\./outside\.png' has a '\.\.' part"):
        covidx.read(raw, Reconciliation())


def test_covidx_named_errors(tmp_path):
    raw = layouts.covidx_raw(tmp_path, {"train": [("1", "a.png", "positive", "rsna")],
                                        "test": [("2", "b.png", "negative", "rsna")]})
    (raw / "test.txt").write_text("2 b.png maybe rsna\n")
    with pytest.raises(PrepareError, match=r"test\.txt line 1: expected"):
        covidx.read(raw, Reconciliation())
    (raw / "test.txt").unlink()
    with pytest.raises(PrepareError, match="test.txt"):
        covidx.read(raw, Reconciliation())


# ---------------------------------------------------------------- Tuberculosis
def test_tuberculosis_file_name_labels_and_skips(tmp_path):
    raw = layouts.tuberculosis_raw(tmp_path)
    spec, samples, log = convert(tuberculosis, raw)
    assert spec.classes == ("normal", "tuberculosis")
    assert log.skip_reasons() == Counter({"lung mask, not a radiograph": 1, "duplicate file name": 1,
                                          "file name is not CHNCXR_/MCUCXR_<id>_<0|1>.png": 1,
                                          "not a readable image (UnidentifiedImageError)": 1})
    assert len(samples) == 40 and Counter(x.source for x in samples) == {"shenzhen": 20, "montgomery": 20}
    s = by_key(samples)
    assert s["ChinaSet_AllFiles/CXR_png/CHNCXR_0001_1.png"].labels == (1,)
    assert s["MontgomerySet/CXR_png/MCUCXR_0002_0.png"].labels == (0,)
    assert s["MontgomerySet/CXR_png/MCUCXR_0002_0.png"].patient == "MCUCXR_0002"
    # int(0.85 * 20) = 17 train per set; no val split.
    assert Counter((x.source, x.split) for x in samples) == Counter({
        ("shenzhen", "train"): 17, ("shenzhen", "test"): 3, ("montgomery", "train"): 17, ("montgomery", "test"): 3})
    assert convert(tuberculosis, raw)[1] == samples


def papers_tuberculosis_test_files(folder: Path) -> list[str]:
    """The paper's ``Tuberculosis(folder, train=False)`` file list, written from its code's text:
    ``files = sorted(glob(os.path.join(folder, "*.png")))``, ``RandomState(42).shuffle(files)``,
    ``files[int(len(files) * 0.85):]``."""
    import os
    from glob import glob

    from numpy.random import RandomState

    files = sorted(glob(os.path.join(folder, "*.png")))
    RandomState(42).shuffle(files)
    return [os.path.basename(f) for f in files[int(len(files) * 0.85):]]


def test_tuberculosis_tests_the_images_the_papers_code_tests(tmp_path):
    import random

    rng = random.Random(7)  # ids with gaps, labels mixed, as in the release (662 and 138 images there)
    names = {"ChinaSet_AllFiles": [f"CHNCXR_{i:04d}_{rng.randint(0, 1)}.png" for i in rng.sample(range(1, 700), 47)],
             "MontgomerySet": [f"MCUCXR_{i:04d}_{rng.randint(0, 1)}.png" for i in rng.sample(range(1, 400), 26)]}
    raw = layouts.tuberculosis_sets(tmp_path, names)
    _, samples, _ = convert(tuberculosis, raw)
    for folder in names:
        expected = papers_tuberculosis_test_files(raw / folder / "CXR_png")
        ours = {x.image.name for x in samples if x.split == "test" and x.key.startswith(folder)}
        assert ours == set(expected) and len(expected) == len(names[folder]) - int(len(names[folder]) * 0.85)
    assert {x.split for x in samples} == {"train", "test"}
    assert_patient_disjoint(samples)  # one image per patient: per image is per patient


def test_tuberculosis_follows_linked_folders_once(tmp_path):
    raw = layouts.tuberculosis_raw(tmp_path)
    expected = {x.key: x.split for x in convert(tuberculosis, raw)[1]}
    # Montgomery unpacked elsewhere and linked in; a link back to the top makes a loop.
    (raw / "MontgomerySet").rename(tmp_path / "Montgomery")
    (raw / "MontgomerySet").symlink_to(tmp_path / "Montgomery", target_is_directory=True)
    (raw / "ChinaSet_AllFiles" / "CXR_png" / "top").symlink_to(raw, target_is_directory=True)
    _, samples, log = convert(tuberculosis, raw)
    assert {x.key: x.split for x in samples} == expected and len(samples) == 40
    assert [k.ref for k in log.skips if k.reason == NOT_ENTERED] == ["ChinaSet_AllFiles/CXR_png/top"]


def test_tuberculosis_empty_folder_is_an_error(tmp_path):
    with pytest.raises(PrepareError, match="no CHNCXR_NNNN_L.png"):
        tuberculosis.read(tmp_path, Reconciliation())
    with pytest.raises(PrepareError, match=r"absent: missing folder"):
        tuberculosis.read(tmp_path / "absent", Reconciliation())


# ---------------------------------------------------------------- concatenations
def test_concat_of_all_four_relabels_on_the_shared_classes(tmp_path):
    raws = {"chexpert": layouts.chexpert_raw(tmp_path), "mimic_cxr": layouts.mimic_raw(tmp_path),
            "nih": layouts.nih_raw(tmp_path), "padchest": layouts.padchest_raw(tmp_path)}
    spec, samples, log = convert(chexpert_mimic_nih_padchest.CONCAT, raws)
    assert spec.classes == ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumonia",
                            "Pneumothorax")
    members = {name: convert(module, raws[name])[2] for name, module in
               (("chexpert", chexpert), ("mimic_cxr", mimic_cxr), ("nih", nih), ("padchest", padchest))}
    assert log.rows_read == sum(m.rows_read for m in members.values())
    s = by_key(samples)
    # CheXpert "Pleural Effusion" lands in "Effusion"; uncertain stays unknown.
    assert s["chexpert/valid/patient64541/study1/view1_frontal.jpg"].labels == (U, U, U, U, P, U, U)
    assert s["chexpert/train/patient00002/study1/view1_frontal.jpg"].labels == (U, U, U, P, U, U, N)
    assert s["mimic_cxr/files/p10/p10000764/s57375967/d2a.jpg"].labels == (U, U, U, U, P, U, U)
    nih_sample = next(x for k, x in s.items() if k.endswith("00000004_000.png"))
    assert nih_sample.labels == (N, P, N, N, P, N, N) and nih_sample.source == "nih"
    assert nih_sample.patient == "nih:4"
    assert s["padchest/0/a1_00-000-001.png"].labels == (N, P, N, N, P, N, N)
    assert Counter(x.source for x in samples).keys() == {"chexpert", "mimic_cxr", "nih", "padchest"}
    # No known label among the shared classes: kept, masked from the loss, as the paper's code keeps it.
    assert s["chexpert/train/patient00005/study1/view1_frontal.jpg"].labels == (U,) * 7
    others = (("mimic_cxr", mimic_cxr), ("nih", nih), ("padchest", padchest))
    member_samples = [convert(chexpert, raws["chexpert"], frontal_only=False)[1],
                      *(convert(module, raws[name])[1] for name, module in others)]
    assert len(samples) == sum(map(len, member_samples))  # every member sample, none dropped
    # The val split is the union of the members' val splits (CheXpert valid.csv, MIMIC validate, NIH
    # test list, PadChest's held-out 10 %); only MIMIC has a test split.
    assert {x.source for x in samples if x.split == "val"} == {"chexpert", "mimic_cxr", "nih", "padchest"}
    assert {x.source for x in samples if x.split == "test"} == {"mimic_cxr"}
    # The paper's config of this run keeps CheXpert's (and PadChest's) laterals; the smaller ones do not.
    assert "chexpert/train/patient00001/study1/view2_lateral.jpg" in s
    assert "padchest/0/a1_00-000-002.png" in s  # PadChest lateral
    assert_patient_disjoint(samples)


def test_concat_of_two_keeps_their_common_classes_and_names_missing_raws(tmp_path):
    raws = {"chexpert": layouts.chexpert_raw(tmp_path), "mimic_cxr": layouts.mimic_raw(tmp_path)}
    spec, samples, _ = convert(chexpert_mimic.CONCAT, raws)
    assert len(spec.classes) == 13 and "Effusion" in spec.classes and "Support Devices" in spec.classes
    assert len(samples) == len(convert(chexpert, raws["chexpert"])[1]) + len(convert(mimic_cxr, raws["mimic_cxr"])[1])
    assert "chexpert/train/patient00001/study1/view2_lateral.jpg" not in by_key(samples)
    with pytest.raises(PrepareError, match=r"no raw folder given for \['mimic_cxr'\]"):
        chexpert_mimic.CONCAT.read({"chexpert": raws["chexpert"]}, Reconciliation())


def test_concat_of_three_has_the_papers_seven_classes(tmp_path):
    raws = {"chexpert": layouts.chexpert_raw(tmp_path), "mimic_cxr": layouts.mimic_raw(tmp_path),
            "nih": layouts.nih_raw(tmp_path), "padchest": tmp_path / "unused"}
    assert chexpert_mimic_nih.CONCAT.sources == ("chexpert", "mimic_cxr", "nih")
    spec, samples, _ = convert(chexpert_mimic_nih.CONCAT, raws)  # an extra raw folder is not read
    assert spec.classes == ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumonia",
                            "Pneumothorax")
    assert {x.source for x in samples} == {"chexpert", "mimic_cxr", "nih"}
    assert len({x.key for x in samples}) == len(samples)
