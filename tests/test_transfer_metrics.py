"""Top-1 accuracy and mean ROC-AUC, with undefined labels reported as undefined."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from xferscale.metrics import evaluate, mean_roc_auc, top1_accuracy


def test_top1_accuracy_counts_argmax_hits():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.1, 0.2, 0.3], [5.0, 0.0, 0.0]])
    result = top1_accuracy(logits, torch.tensor([0, 1, 0, 1]))
    assert result.value == pytest.approx(50.0) and result.num_samples == 4


def test_mean_auc_matches_a_case_computed_by_hand():
    # label a: positives score 0.35, 0.8; negatives 0.1, 0.4 -> 3 of 4 pairs ordered -> 75 %
    # label b: the unknown (-1) entry is left out; 0.9 > 0.2 and 0.9 > 0.3 -> 100 %
    scores = np.array([[0.1, 0.2], [0.4, 0.3], [0.35, 0.7], [0.8, 0.9]])
    targets = np.array([[0, 0], [0, 0], [1, -1], [1, 1]], dtype=np.float32)
    result = mean_roc_auc(scores, targets, ["a", "b"])
    assert result.per_label == {"a": pytest.approx(75.0), "b": pytest.approx(100.0)}
    assert result.value == pytest.approx(87.5)
    # ... and scikit-learn agrees label by label
    assert roc_auc_score(targets[:, 0], scores[:, 0]) * 100 == pytest.approx(75.0)
    known = targets[:, 1] != -1
    assert roc_auc_score(targets[known, 1], scores[known, 1]) * 100 == pytest.approx(100.0)


def test_single_label_task_is_scored_one_against_rest_like_sklearn():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(60, 4))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 4, size=60)
    ours = mean_roc_auc(probs, labels).value
    ref = roc_auc_score(labels, probs, multi_class="ovr", average="macro") * 100
    assert ours == pytest.approx(ref)


def test_mean_over_defined_labels_lists_the_undefined_ones():
    """As the paper's code (np.nanmean): a one-class label is left out of the mean, and named."""
    scores = np.array([[0.1, 0.5, 0.2], [0.9, 0.4, 0.1], [0.3, 0.6, 0.7], [0.8, 0.2, 0.3]])
    targets = np.array([[0, 1, 0], [1, 1, 1], [0, -1, 0], [0, 1, 1]])  # label y is all positive (or unknown)
    result = mean_roc_auc(scores, targets, ["x", "y", "z"])
    assert result.undefined_labels == ["y"] and result.per_label["y"] is None
    x = roc_auc_score([0, 1, 0, 0], scores[:, 0]) * 100
    z = roc_auc_score([0, 1, 0, 1], scores[:, 2]) * 100
    assert result.value == pytest.approx((x + z) / 2) and result.defined
    assert evaluate("auc", scores, targets).to_dict()["undefined_labels"] == ["1"]


def test_mean_is_undefined_only_when_no_label_is_defined():
    result = mean_roc_auc(np.array([[0.2], [0.7]]), np.array([[1], [1]]), ["x"])
    assert result.value is None and not result.defined and result.undefined_labels == ["x"]


def test_shape_errors_are_named():
    with pytest.raises(ValueError, match="differ in shape"):
        mean_roc_auc(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate("f1", np.zeros((1, 2)), np.zeros(1))
