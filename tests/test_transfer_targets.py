"""Targets: few-shot subsets, class-balanced epochs, the digits data, BiT's transforms."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _transfer_fixtures import tensor_target
from xferscale.hyperrule import hyperrule
from xferscale.results import FULL
from xferscale.transfer.subsets import balanced_order, fewshot_indices
from xferscale.transfer.targets import PreparedTarget, TargetError, digits_target

CPU = torch.device("cpu")


def test_fewshot_picks_k_per_class_reproducibly():
    labels = np.repeat(np.arange(4), [5, 7, 9, 3])
    idx = fewshot_indices(labels, 3, seed=1)
    assert np.bincount(labels[idx]).tolist() == [3, 3, 3, 3]
    assert idx.tolist() == fewshot_indices(labels, 3, seed=1).tolist() == sorted(idx.tolist())
    assert idx.tolist() != fewshot_indices(labels, 3, seed=2).tolist()
    with pytest.raises(ValueError, match="class 'c3' has 3 samples, fewer than 4 shots"):
        fewshot_indices(labels, 4, seed=0, class_names=["c0", "c1", "c2", "c3"])


def test_multilabel_fewshot_uses_positives_not_already_picked():
    labels = np.array([[1, 1], [1, 0], [0, 1], [1, -1], [0, 1]])
    idx = fewshot_indices(labels, 2, seed=0)
    assert len(idx) == 4 and len(set(idx.tolist())) == 4
    assert all(labels[i].max() == 1 for i in idx)


def test_balanced_epoch_oversamples_rare_classes():
    class_of = np.array([0] * 90 + [1] * 10)
    order = balanced_order(class_of, seed=0, epoch=0)
    assert np.bincount(class_of[order]).tolist() == [50, 50]
    assert set(np.flatnonzero(class_of == 1)) <= set(order.tolist())  # every rare sample is used
    assert not np.array_equal(order, balanced_order(class_of, seed=0, epoch=1))


def test_digits_is_the_real_dataset_split_stratified():
    target = digits_target()
    assert len(target.train_images) + len(target.test_images) == 1797
    assert target.train_images.dtype == torch.uint8 and target.train_images.shape[1:] == (3, 8, 8)
    assert int(target.train_images.max()) == 255 and target.spec.image_size == (8, 8)
    assert np.bincount(target.test_targets.numpy()).min() >= 50
    assert target.train_size(5, 0) == 50 and target.train_size(FULL, 0) == len(target.train_images)


def test_train_batches_apply_bit_transforms_and_resume_exactly():
    target = tensor_target(per_class=10)
    rule = hyperrule(30, (8, 8), crop=12, batch_size=8)
    batches = target.train_batches(FULL, seed=4, rule=rule, device=CPU)
    assert (rule.precrop, rule.crop) == (15, 12) and len(batches) == 4  # 30 / 8, last batch partial
    full = list(batches.epoch(2))
    assert [len(x) for x, _ in full] == [8, 8, 8, 6]
    x, _ = full[0]
    assert x.shape == (8, 3, 12, 12) and x.dtype == torch.float32 and -1.0 <= x.min() and x.max() <= 1.0
    tail = list(batches.epoch(2, start_batch=2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[2:], tail))
    test = list(target.test_batches(rule, 5, CPU).epoch(0))
    assert sum(len(y) for _, y in test) == 12 and test[0][0].shape[-1] == 12


def test_oversampled_target_balances_full_shot_only():
    target = tensor_target(oversample=True)
    target.train_targets[:4] = 0  # make class 0 the majority
    rule = hyperrule(18, (8, 8), crop=8, batch_size=6)
    labels = torch.cat([y for _, y in target.train_batches(FULL, 0, rule, CPU).epoch(0)])
    assert torch.bincount(labels).tolist() == [6, 6, 6]
    assert not target.train_batches(2, 0, rule, CPU).oversample


def test_fewshot_set_smaller_than_a_batch_draws_full_batches_with_replacement():
    """BiT and the paper's code: RandomSampler(replacement=True, num_samples=batch)."""
    target = tensor_target()  # 1-shot: 3 images
    rule = hyperrule(3, (8, 8), crop=8)  # batch 128
    batches = target.train_batches(1, 0, rule, CPU)
    epochs = [list(batches.epoch(e)) for e in range(3)]
    assert len(batches) == 1 and all(len(e) == 1 and len(e[0][1]) == 128 for e in epochs)
    assert sorted(set(epochs[0][0][1].tolist())) == [0, 1, 2]
    assert not torch.equal(epochs[0][0][0], epochs[1][0][0])  # a fresh draw and augmentation per epoch
    again = list(target.train_batches(1, 0, rule, CPU).epoch(1))
    assert torch.equal(again[0][0], epochs[1][0][0])  # a pure function of (seed, epoch): exact resume


def test_fewshot_problem_names_the_class():
    target = tensor_target(per_class=6)
    assert target.fewshot_problem(5, 0) is None and target.fewshot_problem(FULL, 0) is None
    assert "has 6 samples, fewer than 10 shots" in target.fewshot_problem(10, 0)


def test_prepared_target_names_what_is_missing(tmp_path):
    with pytest.raises(TargetError, match=r"no dataset.json.*xferscale prepare cifar10 --raw RAW_DIR --out"):
        PreparedTarget("cifar10", tmp_path / "nope")
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "xferscale-webdataset"}))
    with pytest.raises(TargetError, match="target 'cifar10'"):
        PreparedTarget("cifar10", tmp_path)


def write_prepared_jpegs(root, per_class_train: int = 4, per_class_test: int = 2):
    """A prepared dataset of real JPEG files, written by the suite's own writer."""
    writer = pytest.importorskip("xferscale.data.writer", reason="prepared-dataset writer not installed")
    from PIL import Image

    from xferscale.data.records import DatasetSpec, Reconciliation, Sample

    samples = []
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        for c, level in enumerate((40, 200)):
            for i in range(per_class):
                path = root / "raw" / split / f"{c}_{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((20, 24, 3), level + i, np.uint8)).save(path, "JPEG", quality=95)
                samples.append(Sample(f"{split}/{c}_{i}.jpg", split, path, (c,), "jpegs"))
    spec = DatasetSpec("jpegs", "multiclass", ("dark", "light"))
    return writer.write_dataset(spec, samples, root / "prepared", Reconciliation(), shard_size=3, progress=False)


def test_prepared_target_reads_few_shot_subsets_through_the_loader(tmp_path):
    write_prepared_jpegs(tmp_path)
    try:
        target = PreparedTarget("jpegs", tmp_path / "prepared", image_size=(20, 24), workers=0)
    except TargetError as err:  # a loader without few-shot support: the error says so
        assert "few-shot" in str(err)
        pytest.skip(str(err))
    assert target.spec.num_classes == 2 and target.train_size(FULL, 0) == 8 and target.train_size(3, 0) == 6
    rule = hyperrule(6, (20, 24), crop=8, batch_size=128)
    batches = target.train_batches(3, 0, rule, CPU)
    images, labels = next(iter(batches.epoch(0)))
    assert images.shape == (128, 3, 8, 8) and set(labels.tolist()) == {0, 1}  # drawn with replacement
    assert target.fewshot_problem(3, 0) is None and "fewer than 5 shots" in target.fewshot_problem(5, 0)
    test = torch.cat([y for _, y in target.test_batches(rule, 3, CPU).epoch(0)])
    assert sorted(test.tolist()) == [0, 0, 1, 1]
