"""Natural-image converters on tiny copies of each dataset's real on-disk format."""
from __future__ import annotations

import importlib
import io
import logging
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from xferscale.cli import main
from xferscale.data.converters import discover
from xferscale.data.manifest import load_dataset_info
from xferscale.data.records import PrepareError, Reconciliation, Skip, TarMember
from xferscale.data.writer import write_dataset
from xferscale.data_prep import cifar10, cifar100, flowers102, imagenet1k, imagenet21k, pets

CONVERTERS = ["cifar10", "cifar100", "flowers102", "imagenet1k", "imagenet21k", "pets"]


# ---------------------------------------------------------------- helpers
def image_bytes(fmt: str = "JPEG", mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    bands = {"RGB": 3, "CMYK": 4, "L": 1}[mode]
    arr = rng.integers(0, 255, (8, 8, bands), dtype=np.uint8).squeeze()
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: Path, fmt: str = "JPEG", mode: str = "RGB", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(fmt, mode, seed))
    return path


def run(module, raw: Path, **options):
    """Run a converter to the end: (spec, samples, log), checking the reconciliation."""
    log = Reconciliation()
    spec, samples = module.read(raw, log, **options)
    assert not isinstance(samples, (list, tuple)), "read() should stream, not build a list"
    samples = list(samples)
    assert log.rows_read == len(samples) + len(log.skips), "an item was dropped silently"
    assert len({s.key for s in samples}) == len(samples), "keys must be unique"
    assert all(s.source == module.NAME and s.patient is None for s in samples)
    return spec, samples, log


def skips(log: Reconciliation) -> dict[str, str]:
    return {Path(s.ref).name: s.reason for s in log.skips}


def by_split(samples) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in samples:
        out.setdefault(s.split, []).append(s.key)
    return out


@pytest.mark.parametrize("name", CONVERTERS)
def test_converter_contract(name):
    module = importlib.import_module(f"xferscale.data_prep.{name}")
    converter = discover()[name]
    assert converter.module == module.__name__ and converter.read is module.read and not converter.sources
    assert converter.description and "\n" not in converter.description


# ---------------------------------------------------------------- CIFAR
def dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def cifar_batch(n: int, labels_key: bytes, seed: int, labels=None) -> dict:
    rng = np.random.default_rng(seed)
    labels = list(rng.integers(0, 3, n)) if labels is None else labels
    return {b"batch_label": b"batch", b"data": rng.integers(0, 256, (n, 3 * 8 * 8), dtype=np.uint8),
            labels_key: [int(x) for x in labels], b"filenames": [b"f%d.png" % i for i in range(n)]}


@pytest.fixture
def cifar10_raw(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        dump(root / f"data_batch_{i}", cifar_batch(2, b"labels", seed=i))
    dump(root / "test_batch", cifar_batch(3, b"labels", seed=9, labels=[0, 2, 7]))
    dump(root / "batches.meta", {b"label_names": [b"airplane", b"automobile", b"bird"],
                                 b"num_cases_per_batch": 2, b"num_vis": 192})
    return tmp_path


def test_cifar10_reads_pickles_as_png(cifar10_raw):
    spec, samples, log = run(cifar10, cifar10_raw)
    assert spec.classes == ("airplane", "automobile", "bird") and spec.task == "multiclass"
    assert by_split(samples)["train"] == [f"train_{i:05d}" for i in range(1, 11)]
    assert by_split(samples)["test"] == ["test_00001", "test_00002"]
    assert log.rows_read == 13
    assert skips(log) == {"test_batch:test_00003": "label 7 outside 0..2"}
    # the first image of data_batch_1 decodes to its R, G, B planes, and keeps its label
    batch = pickle.loads((cifar10_raw / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    first = samples[0]
    decoded = np.asarray(Image.open(io.BytesIO(first.image)))
    assert Image.open(io.BytesIO(first.image)).format == "PNG"
    np.testing.assert_array_equal(decoded, batch[b"data"][0].reshape(3, 8, 8).transpose(1, 2, 0))
    assert first.labels == (batch[b"labels"][0],)
    # RAW may also be the release folder itself; same samples in the same order
    _, again, _ = run(cifar10, cifar10_raw / "cifar-10-batches-py")
    assert [(s.key, s.image, s.labels) for s in again] == [(s.key, s.image, s.labels) for s in samples]


def test_cifar10_named_errors(cifar10_raw):
    root = cifar10_raw / "cifar-10-batches-py"
    (root / "data_batch_3").unlink()
    with pytest.raises(PrepareError, match=r"data_batch_3: missing file"):
        cifar10.read(cifar10_raw, Reconciliation())
    dump(root / "data_batch_3", {b"images": np.zeros((2, 192), np.uint8), b"labels": [0, 1]})
    with pytest.raises(PrepareError, match=r"data_batch_3: pickle lacks key\(s\) \['data'\]"):
        cifar10.read(cifar10_raw, Reconciliation())
    (root / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(PrepareError, match=r"data_batch_3: malformed pickle"):
        cifar10.read(cifar10_raw, Reconciliation())
    dump(root / "data_batch_3", cifar_batch(2, b"labels", seed=3, labels=[0]))
    with pytest.raises(PrepareError, match=r"data_batch_3: 2 images but 1 entries"):
        cifar10.read(cifar10_raw, Reconciliation())


def test_cifar100_uses_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    for split, n, seed in (("train", 4, 1), ("test", 2, 2)):
        batch = cifar_batch(n, b"fine_labels", seed, labels=[3, 1, 0, 2][:n])
        batch[b"coarse_labels"] = [0] * n
        dump(root / split, batch)
    dump(root / "meta", {b"fine_label_names": [b"apple", b"aquarium_fish", b"baby", b"bear"],
                         b"coarse_label_names": [b"fruit"]})
    spec, samples, log = run(cifar100, tmp_path)
    assert spec.num_classes == 4 and spec.classes[1] == "aquarium_fish"
    assert [s.labels[0] for s in samples] == [3, 1, 0, 2, 3, 1]
    assert by_split(samples) == {"train": [f"train_{i:05d}" for i in range(1, 5)],
                                 "test": ["test_00001", "test_00002"]}
    assert log.rows_read == 6 and not log.skips
    with pytest.raises(PrepareError, match=r"cifar-100-python/meta: missing file"):
        cifar100.read(tmp_path / "elsewhere", Reconciliation())
    dump(root / "meta", {b"coarse_label_names": [b"fruit"]})
    with pytest.raises(PrepareError, match=r"meta: pickle lacks key\(s\) \['fine_label_names'\]"):
        cifar100.read(tmp_path, Reconciliation())


# ---------------------------------------------------------------- Flowers-102
@pytest.fixture
def flowers_raw(tmp_path):
    for i in (1, 2, 3, 5, 6):  # image 4 is missing on disk
        write_image(tmp_path / "jpg" / f"image_{i:05d}.jpg", seed=i)
    savemat(tmp_path / "imagelabels.mat", {"labels": np.array([[1, 2, 3, 1, 2, 3]], np.uint8)})
    savemat(tmp_path / "setid.mat", {"trnid": np.array([[2, 1]], np.uint16),
                                     "valid": np.array([[3, 4]], np.uint16),
                                     "tstid": np.array([[5]], np.uint16)})  # 6 is in no split
    return tmp_path


def test_flowers102_official_split(flowers_raw):
    spec, samples, log = run(flowers102, flowers_raw, split="official")
    assert spec.classes == ("class_001", "class_002", "class_003")
    assert [(s.key, s.split, s.labels) for s in samples] == [
        ("image_00001", "train", (0,)), ("image_00002", "train", (1,)),
        ("image_00003", "val", (2,)), ("image_00005", "test", (1,))]
    assert samples[0].image == flowers_raw / "jpg" / "image_00001.jpg"
    assert log.rows_read == 6
    assert skips(log) == {"image_00004.jpg": "image file missing",
                          "image_00006.jpg": "image id in no split of setid.mat"}


def test_flowers102_paper_split_is_the_default(flowers_raw, tmp_path):
    """The paper's code trains on the official test set and tests on official train + val."""
    _, samples, log = run(flowers102, flowers_raw)
    assert [(s.key, s.split) for s in samples] == [
        ("image_00001", "test"), ("image_00002", "test"), ("image_00003", "test"), ("image_00005", "train")]
    assert skips(log)["image_00004.jpg"] == "image file missing"
    out = tmp_path / "prepared"
    assert main(["prepare", "flowers102", "--raw", str(flowers_raw), "--out", str(out), "--no-progress"]) == 0
    assert {s: i.count for s, i in load_dataset_info(out).splits.items()} == {"train": 1, "test": 3}
    assert main(["prepare", "flowers102", "--raw", str(flowers_raw), "--out", str(tmp_path / "o2"),
                 "--split", "official", "--no-progress"]) == 0
    assert {s: i.count for s, i in load_dataset_info(tmp_path / "o2").splits.items()} == {"train": 2, "val": 1,
                                                                                          "test": 1}


def test_flowers102_named_errors(flowers_raw):
    savemat(flowers_raw / "setid.mat", {"trnid": np.array([[1]]), "valid": np.array([[2]])})
    with pytest.raises(PrepareError, match=r"setid.mat: .mat file lacks variable\(s\) \['tstid'\]"):
        flowers102.read(flowers_raw, Reconciliation())
    savemat(flowers_raw / "setid.mat", {"trnid": np.array([[1, 9]]), "valid": np.array([[2]]),
                                        "tstid": np.array([[3]])})
    with pytest.raises(PrepareError, match=r"'trnid' lists image id 9"):
        flowers102.read(flowers_raw, Reconciliation())
    savemat(flowers_raw / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[2]]),
                                        "tstid": np.array([[3]])})
    with pytest.raises(PrepareError, match=r"image id 2 is in both 'trnid' and 'valid'"):
        flowers102.read(flowers_raw, Reconciliation())
    (flowers_raw / "imagelabels.mat").unlink()
    with pytest.raises(PrepareError, match=r"imagelabels.mat: missing file"):
        flowers102.read(flowers_raw, Reconciliation())


# ---------------------------------------------------------------- Oxford-IIIT Pets
PETS_HEADER = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"


@pytest.fixture
def pets_raw(tmp_path):
    images = tmp_path / "images"
    write_image(images / "Abyssinian_1.jpg")
    write_image(images / "Abyssinian_5.jpg", mode="CMYK")           # CMYK JPEG: kept
    write_image(images / "american_bulldog_10.jpg", mode="L")       # greyscale: kept
    write_image(images / "american_bulldog_11.jpg", fmt="PNG")      # PNG named .jpg: kept
    write_image(images / "Bengal_3.jpg", fmt="GIF", mode="L")       # GIF: skipped
    (images / "Bengal_4.jpg").write_bytes(b"")                      # empty: skipped
    write_image(images / "Bengal_7.jpg")
    (images / "Abyssinian_100.mat").write_bytes(b"MATLAB junk that ships in images/")
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "trainval.txt").write_text(PETS_HEADER + "american_bulldog_10 2 2 1\nAbyssinian_1 1 1 1\n"
                                      "Bengal_3 3 1 2\nBengal_4 3 1 2\nBengal_9 3 1 2\n")
    (ann / "test.txt").write_text(PETS_HEADER + "Abyssinian_5 1 1 1\namerican_bulldog_11 2 2 1\n"
                                  "Bengal_7 3 1 2\nAbyssinian_1 1 1 1\n")
    return tmp_path


def test_pets_classes_splits_and_quirks(pets_raw):
    spec, samples, log = run(pets, pets_raw)  # each split in sorted image-name order
    assert spec.classes == ("Abyssinian", "american_bulldog", "Bengal")
    assert [(s.key, s.split, s.labels) for s in samples] == [
        ("Abyssinian_1", "train", (0,)), ("american_bulldog_10", "train", (1,)),
        ("Abyssinian_5", "test", (0,)), ("Bengal_7", "test", (2,)), ("american_bulldog_11", "test", (1,))]
    assert log.rows_read == 9
    assert skips(log) == {"Bengal_3.jpg": "GIF image, not JPEG/PNG", "Bengal_4.jpg": "image file empty",
                          "Bengal_9.jpg": "image file missing",
                          "test.txt:7": "image listed again (first at trainval.txt:5)"}
    assert [s.key for s in run(pets, pets_raw)[1]] == [s.key for s in samples]


def test_pets_named_errors(pets_raw):
    ann = pets_raw / "annotations"
    (ann / "test.txt").write_text(PETS_HEADER + "Abyssinian_5 1 1\n")
    with pytest.raises(PrepareError, match=r"test.txt:4: expected 'Image CLASS-ID SPECIES BREED-ID'"):
        pets.read(pets_raw, Reconciliation())
    (ann / "test.txt").write_text("Abyssinian_5 2 1 1\n")
    with pytest.raises(PrepareError, match=r"CLASS-ID 2 is 'Abyssinian' here but 'american_bulldog'"):
        pets.read(pets_raw, Reconciliation())
    (ann / "test.txt").write_text("Bengal_7 5 1 2\n")
    with pytest.raises(PrepareError, match=r"CLASS-IDs must run 1..5; missing \[4\]"):
        pets.read(pets_raw, Reconciliation())
    (ann / "test.txt").unlink()
    with pytest.raises(PrepareError, match=r"test.txt: missing file"):
        pets.read(pets_raw, Reconciliation())


# ---------------------------------------------------------------- ImageNet-1k
WNIDS = ("n01440764", "n01443537")


def imagenet_train(data: Path) -> None:
    for c, wnid in enumerate(WNIDS):
        for n in (10, 2):
            write_image(data / "train" / wnid / f"{wnid}_{n}.JPEG", seed=c * 10 + n)
    (data / "train" / WNIDS[0] / "ReadMe.txt").write_text("not an image")


def test_imagenet1k_class_folders(tmp_path, caplog):
    imagenet_train(tmp_path)
    write_image(tmp_path / "val" / WNIDS[0] / "ILSVRC2012_val_00000002.JPEG")
    write_image(tmp_path / "val" / WNIDS[1] / "ILSVRC2012_val_00000001.JPEG")
    write_image(tmp_path / "val" / "n09999999" / "ILSVRC2012_val_00000003.JPEG")
    (tmp_path / "train" / WNIDS[1] / "boxes").mkdir()
    (tmp_path / "train" / "LICENSE").write_text("terms")
    with caplog.at_level(logging.WARNING, logger="xferscale.data_prep.imagenet1k"):
        spec, samples, log = run(imagenet1k, tmp_path)
    assert "2 class folders, ILSVRC2012 has 1000" in caplog.text
    assert spec.classes == WNIDS
    assert [(s.key, s.split, s.labels) for s in samples] == [
        ("n01440764_10", "train", (0,)), ("n01440764_2", "train", (0,)),
        ("n01443537_10", "train", (1,)), ("n01443537_2", "train", (1,)),
        ("ILSVRC2012_val_00000002", "val", (0,)), ("ILSVRC2012_val_00000001", "val", (1,))]
    assert log.rows_read == 10
    assert skips(log) == {"ReadMe.txt": "not an image file name (suffix '.txt')",
                          "LICENSE": "file outside any class folder",
                          "boxes": "folder inside a class folder (not read)",
                          "ILSVRC2012_val_00000003.JPEG": "class folder 'n09999999' is not a known class"}


def flat_val(data: Path) -> None:
    for n in (1, 2, 3, 4):
        write_image(data / "val" / f"ILSVRC2012_val_{n:08d}.JPEG", seed=n)


def test_imagenet1k_flat_val_kaggle(tmp_path):
    data = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    imagenet_train(data)
    flat_val(data)
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        f"ILSVRC2012_val_00000001,{WNIDS[1]} 10 20 100 200 {WNIDS[1]} 5 5 50 50 \n"
        f"ILSVRC2012_val_00000002,{WNIDS[0]} 1 2 3 4 \n"
        "ILSVRC2012_val_00000003,n09999999 1 2 3 4 \n")  # 4 has no entry
    spec, samples, log = run(imagenet1k, tmp_path)
    assert spec.classes == WNIDS
    val = [(s.key, s.labels) for s in samples if s.split == "val"]
    assert val == [("ILSVRC2012_val_00000001", (1,)), ("ILSVRC2012_val_00000002", (0,))]
    assert skips(log)["ILSVRC2012_val_00000003.JPEG"] == "class n09999999 has no train folder"
    assert skips(log)["ILSVRC2012_val_00000004.JPEG"] == "no entry in LOC_val_solution.csv"
    assert log.rows_read == 4 + 1 + 4


def write_devkit(data: Path, truth: str, synsets: bool = True) -> Path:
    devkit = data / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text(truth)
    # meta.mat's 'synsets' is an 1860x1 struct array with these fields; its leaves
    # (num_children 0) are the 1000 classes, ILSVRC2012_ID 1..1000
    fields = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images")
    rows = [(1, WNIDS[1], "goldfish", "a fish", 0, np.zeros(0, np.uint16), 0, 1300),
            (2, WNIDS[0], "tench", "a fish", 0, np.zeros(0, np.uint16), 0, 1300),
            (1001, "n00001740", "entity", "everything", 2, np.array([1, 2], np.uint16), 19, 0)]
    table = np.empty((len(rows), 1), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        table[i, 0] = row
    savemat(devkit / "meta.mat", {"synsets" if synsets else "classes": table})
    return devkit


def test_imagenet1k_flat_val_devkit(tmp_path):
    imagenet_train(tmp_path)
    flat_val(tmp_path)
    write_devkit(tmp_path, "2\n1\n2\n")  # val 4 has no line
    spec, samples, log = run(imagenet1k, tmp_path)
    val = [(s.key, s.labels) for s in samples if s.split == "val"]
    assert val == [("ILSVRC2012_val_00000001", (0,)), ("ILSVRC2012_val_00000002", (1,)),
                   ("ILSVRC2012_val_00000003", (0,))]
    assert skips(log)["ILSVRC2012_val_00000004.JPEG"] == \
        "no entry in ILSVRC2012_validation_ground_truth.txt"
    assert [s.key for s in run(imagenet1k, tmp_path)[1]] == [s.key for s in samples]


def test_imagenet1k_named_errors(tmp_path):
    imagenet_train(tmp_path)
    with pytest.raises(PrepareError, match=r"val: missing folder"):
        imagenet1k.read(tmp_path, Reconciliation())
    flat_val(tmp_path)
    with pytest.raises(PrepareError, match=r"val: flat val images need ground truth"):
        imagenet1k.read(tmp_path, Reconciliation())
    devkit = write_devkit(tmp_path, "1\n2\n", synsets=False)
    with pytest.raises(PrepareError, match=r"meta.mat: .mat file lacks variable\(s\) \['synsets'\]"):
        imagenet1k.read(tmp_path, Reconciliation())
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n1001\n")
    savemat(devkit / "meta.mat", {"synsets": np.array([(1, WNIDS[0], 0), (1001, "n00001740", 2)], dtype=[
        ("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")]).reshape(-1, 1)})
    with pytest.raises(PrepareError, match=r"ILSVRC2012_IDs \[1001\] are not leaf synsets"):
        imagenet1k.read(tmp_path, Reconciliation())


# ---------------------------------------------------------------- ImageNet-21k
def write_tar(path: Path, members: list[tuple[str, bytes | None]]) -> Path:
    """A tar of (name, data) members, in that order; data None adds a symlink."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "elsewhere.JPEG"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def in21k_raw(tmp_path):
    shared = image_bytes(seed=42)  # one photo verified for both synsets
    write_tar(tmp_path / "n01443537.tar", [("n01443537_5.JPEG", image_bytes(seed=5)),
                                           ("n01440764_1.JPEG", shared),
                                           ("n01443537_6.JPEG", b"not an image")])
    write_tar(tmp_path / "n01440764.tar", [("n01440764_2.JPEG", image_bytes(seed=2)),
                                           ("n01440764_1.JPEG", shared),
                                           ("n01440764_3.txt", b"notes"),
                                           ("n01440764_2.JPEG", image_bytes(seed=3)),
                                           ("n01440764_4.JPEG", None)])
    (tmp_path / "README.txt").write_text("release notes")
    return tmp_path


def test_imagenet21k_one_pair_per_label(in21k_raw, tmp_path_factory):
    spec, samples, log = run(imagenet21k, in21k_raw)
    assert spec.classes == ("n01440764", "n01443537") and spec.task == "multiclass"
    assert [(s.key, s.labels) for s in samples] == [
        ("n01440764_1", (0,)), ("n01440764_2", (0,)),
        ("n01443537_n01440764_1", (1,)), ("n01443537_5", (1,)), ("n01443537_6", (1,))]
    assert {s.split for s in samples} == {"train"}
    # the photo under both synsets gives one (image, label) pair per label, same bytes
    shared = [s for s in samples if s.key.endswith("n01440764_1")]
    assert [s.labels for s in shared] == [(0,), (1,)]
    assert shared[0].image.read_bytes() == shared[1].image.read_bytes() == image_bytes(seed=42)
    # members are references into their tar (read by the writer), not bytes read while listing
    assert all(isinstance(s.image, TarMember) for s in samples)
    assert Image.open(io.BytesIO(samples[0].image.read_bytes())).size == (8, 8)
    assert samples[1].image.read_bytes() == image_bytes(seed=2)  # the first of two same-named members
    assert log.rows_read == 9
    assert {s.ref: s.reason for s in log.skips} == {
        str(in21k_raw / "README.txt"): "not a <wnid>.tar synset archive",
        "n01440764.tar:n01440764_2.JPEG": "duplicate member name in the same synset tar",
        "n01440764.tar:n01440764_4.JPEG": "tar member is not a regular file",
        "n01440764.tar:n01440764_3.txt": "not an image file name (suffix '.txt')"}
    assert [(s.key, s.image) for s in run(imagenet21k, in21k_raw)[1]] == [(s.key, s.image) for s in samples]
    # the member that is no image is the writer's counted skip, named by key and tar
    out = tmp_path_factory.mktemp("in21k")
    write_dataset(spec, samples, out, log, progress=False)
    assert log.skips[-1] == Skip(f"n01443537_6 ({in21k_raw / 'n01443537.tar'})",
                                 "unsupported image format (not JPEG or PNG)")
    assert load_dataset_info(out).splits["train"].count == 4


@pytest.mark.parametrize("cut", ["header boundary", "inside data"])
def test_imagenet21k_truncated_tar_is_named(in21k_raw, cut):
    path = write_tar(in21k_raw / "n02084071.tar",
                     [(f"n02084071_{i}.JPEG", image_bytes(seed=i)) for i in range(3)])
    with tarfile.open(path) as tar:
        third = tar.getmembers()[2].offset
    data = path.read_bytes()
    path.write_bytes(data[:third] if cut == "header boundary" else data[:third - 100])
    spec, samples = imagenet21k.read(in21k_raw, Reconciliation())  # the first header is fine
    with pytest.raises(PrepareError, match=r"n02084071.tar: corrupt or truncated tar"):
        list(samples)


def test_imagenet21k_named_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PrepareError, match=r"no <wnid>.tar synset archives"):
        imagenet21k.read(tmp_path, Reconciliation())
    (tmp_path / "n01440764.tar").write_bytes(b"<html>download quota exceeded</html>")
    with pytest.raises(PrepareError, match=r"n01440764.tar: not a readable tar archive"):
        imagenet21k.read(tmp_path, Reconciliation())
