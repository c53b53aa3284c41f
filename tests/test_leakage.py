"""Test/train leakage between a transfer target and its checkpoint's pre-training set.

The leaking pair is built on purpose from two releases in their real python-pickle format: a
CIFAR-100-format source whose ``train`` file holds copies of three of a CIFAR-10 release's
test images (the same arrays, so the same PNG bytes and SHA-256 once prepared, under other
keys). PadChest and PadChest-Cl, prepared from the same raw layout, must not overlap: as in
the paper's code, PadChest-Cl's test split is cut from PadChest's held-out split."""
from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from _transfer_fixtures import write_checkpoint
from xferscale.checkpoint import load_checkpoint, save_checkpoint
from xferscale.cli import main
from xferscale.data.records import Reconciliation
from xferscale.data.writer import write_dataset
from xferscale.data_prep import chexpert_mimic_nih_padchest, cifar10, cifar100, padchest, padchest_cl
from xferscale.results import ResultStore
from xferscale.transfer.leakage import LeakageError, check_overlap, find_overlap

import xray_layouts as layouts

SIDE = 32
LEAKED = {2: 5, 5: 1, 7: 8}  # target test image (1-based) -> its copy's row in the source's train file


def prepare(read, raw, out: Path) -> Path:
    log = Reconciliation()
    spec, samples = read(raw, log)
    write_dataset(spec, samples, out, log, shard_size=4, progress=False)
    return out


def dump(path: Path, obj: dict) -> None:
    """A pickle as the CIFAR releases hold them: a Python 2 dict with bytes keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def images(n: int, seed: int) -> np.ndarray:
    """``n`` CIFAR rows: a 32x32 red plane, then green, then blue, as uint8."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3 * SIDE * SIDE), dtype=np.uint8)


def batch(data: np.ndarray, labels_key: bytes, classes: int) -> dict:
    return {b"batch_label": b"batch", b"data": data, labels_key: [i % classes for i in range(len(data))],
            b"filenames": [b"img_%d.png" % i for i in range(len(data))]}


def leaking_releases(root: Path) -> tuple[Path, Path]:
    """A CIFAR-10 release (10 train, 8 test images) and a CIFAR-100 one whose 12 train images
    include copies of the CIFAR-10 test images in ``LEAKED``."""
    target = root / "cifar10" / "cifar-10-batches-py"
    for i in range(1, 6):
        dump(target / f"data_batch_{i}", batch(images(2, seed=i), b"labels", 10))
    test = images(8, seed=9)
    dump(target / "test_batch", batch(test, b"labels", 10))
    dump(target / "batches.meta", {b"label_names": [b"class%d" % i for i in range(10)],
                                   b"num_cases_per_batch": 2, b"num_vis": 3 * SIDE * SIDE})
    source = root / "cifar100" / "cifar-100-python"
    train = images(12, seed=11)
    for test_number, row in LEAKED.items():
        train[row - 1] = test[test_number - 1]
    for name, data in (("train", train), ("test", images(4, seed=12))):
        dump(source / name, {**batch(data, b"fine_labels", 4), b"coarse_labels": [0] * len(data)})
    dump(source / "meta", {b"fine_label_names": [b"apple", b"bear", b"cup", b"fox"],
                           b"coarse_label_names": [b"misc"]})
    return source.parent, target.parent


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(source, target): the prepared CIFAR-100-format source and CIFAR-10 target."""
    root = tmp_path_factory.mktemp("leak")
    source, target = leaking_releases(root)
    return prepare(cifar100.read, source, root / "source"), prepare(cifar10.read, target, root / "target")


def trained_on(folder: Path, split: str = "train", source: str = "prepared") -> dict:
    return {"path": str(folder.resolve()), "split": split, "source": source}


def test_overlap_is_found_by_content(prepared):
    source, target = prepared
    pairs = {(f"test_{t:05d}", f"train_{s:05d}") for t, s in LEAKED.items()}  # other keys, the same bytes
    found = find_overlap(target, trained_on(source))
    assert found.count == len(LEAKED) and found.example in pairs
    assert found.record(allowed=True) == {"count": len(LEAKED), "allowed": True}
    assert find_overlap(target, trained_on(source, "test")).count == 0
    with pytest.raises(LeakageError) as err:
        check_overlap(target, trained_on(source), allow=False)
    message = str(err.value)
    assert "\n" not in message and f"{len(LEAKED)} test image(s)" in message and found.example[0] in message
    assert "--allow-overlap" in message


def test_disjoint_sets_pass(prepared):
    _, target = prepared
    found = check_overlap(target, trained_on(target, "train"), allow=False)
    assert found.count == 0 and found.record(allowed=False) == {"count": 0}


def test_padchest_cl_test_images_are_none_of_padchests_training_images(tmp_path):
    """As the paper's code: PadChest-Cl's test split is cut from PadChest's held-out split, so a
    checkpoint pre-trained on PadChest, alone or in the 4-set concatenation, never saw it."""
    raws = {"chexpert": layouts.chexpert_raw(tmp_path), "mimic_cxr": layouts.mimic_raw(tmp_path),
            "nih": layouts.nih_raw(tmp_path), "padchest": layouts.padchest_raw(tmp_path)}
    source = prepare(padchest.read, raws["padchest"], tmp_path / "padchest")
    target = prepare(padchest_cl.read, raws["padchest"], tmp_path / "padchest_cl")
    four = prepare(chexpert_mimic_nih_padchest.CONCAT.read, raws, tmp_path / "four")
    with open(target / "test.csv", newline="") as f:
        tests = sum(1 for _ in csv.DictReader(f))
    assert tests and find_overlap(target, trained_on(source, "val")).count == tests  # all held out
    assert check_overlap(target, trained_on(source), allow=False).count == 0
    assert check_overlap(target, trained_on(four), allow=False).count == 0
    assert find_overlap(target, trained_on(four, "val")).count == tests


def test_what_cannot_be_checked_says_why(prepared, tmp_path):
    source, target = prepared
    assert find_overlap(target, None).record(False).startswith("unchecked: the checkpoint records no pre-training")
    strokes = {"path": None, "split": "train", "source": "strokes"}
    assert find_overlap(target, strokes).record(False) == "unchecked: pre-trained on strokes data, not a prepared folder"
    gone = find_overlap(target, trained_on(tmp_path / "moved"))
    assert gone.count is None and "moved" in gone.unchecked
    # a folder prepared before manifests recorded digests
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for item in source.iterdir():
        if item.is_file():
            (legacy / item.name).write_bytes(item.read_bytes())
    for manifest in legacy.glob("*.csv"):
        rows = list(csv.reader(open(manifest, newline="")))
        with open(manifest, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(row[:-1] for row in rows)
    found = find_overlap(target, trained_on(legacy))
    assert found.count is None and "records no image digests" in found.unchecked


def _checkpoint(path: Path, train_data: dict | None) -> Path:
    write_checkpoint(path, name="tiny_cifar100", num_classes=4)
    state = load_checkpoint(path)
    state["train_data"] = train_data
    save_checkpoint(path, state)
    return path


def _transfer(ckpt: Path, target: Path, results: Path, *extra: str) -> int:
    return main(["transfer", "--checkpoint", str(ckpt), "--target", "cifar10", "--data", str(target),
                 "--results", str(results), "--shots", "full", "--seeds", "0", "--schedule-scale", "0.002",
                 "--crop", "8", "--batch-size", "4", "--workers", "0", "--no-report", "--no-progress", *extra])


def test_transfer_stops_on_overlap_unless_allowed(prepared, tmp_path, capsys):
    source, target = prepared
    ckpt = _checkpoint(tmp_path / "ckpt.pt", trained_on(source))
    assert _transfer(ckpt, target, tmp_path / "res") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "are in the pre-training set" in err and "--allow-overlap" in err
    assert not list(ResultStore(tmp_path / "res").records())

    assert _transfer(ckpt, target, tmp_path / "res", "--allow-overlap") == 0
    assert "WARNING:" in capsys.readouterr().out
    (record,) = ResultStore(tmp_path / "res").records()
    assert record.config["overlap"] == {"count": len(LEAKED), "allowed": True}


def test_transfer_records_no_overlap_and_unchecked(prepared, tmp_path, capsys):
    _, target = prepared
    clean = _checkpoint(tmp_path / "clean.pt", trained_on(target, "train"))
    assert _transfer(clean, target, tmp_path / "a") == 0
    (record,) = ResultStore(tmp_path / "a").records()
    assert record.config["overlap"] == {"count": 0}
    older = _checkpoint(tmp_path / "older.pt", None)
    assert _transfer(older, target, tmp_path / "b") == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("NOTE: test/train overlap")]
    assert len(notes) == 1 and "records no pre-training data" in notes[0]
    (record,) = ResultStore(tmp_path / "b").records()
    assert json.dumps(record.config["overlap"]).startswith('"unchecked: the checkpoint records no pre-training')
