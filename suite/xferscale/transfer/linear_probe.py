"""The linear-probe baseline: logistic regression on the frozen pre-trained features.

The network is not trained. Its pooled pre-logit features (timm's ``forward_head(...,
pre_logits=True)``) of the run's training subset, seen at the test transform (no
augmentation), fit scikit-learn's ``LogisticRegression`` (L2, ``C=1``, L-BFGS); one per
label on the known (0/1) targets for a multilabel target. The test split goes through the
same features and the target's metric. The probe is a baseline beside fine-tuning, not
part of the paper's protocol: it shows how much of a transfer result the frozen features
alone carry.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from xferscale.metrics import evaluate
from xferscale.models import pooled_features
from xferscale.precision import autocast_context
from xferscale.results import Shots
from xferscale.transfer.finetune import FineTuneError, FineTuneSettings, RunOutcome
from xferscale.transfer.pretrained import Pretrained
from xferscale.transfer.targets import Target

PROBE_C = 1.0  # scikit-learn's default inverse L2 strength
PROBE_MAX_ITER = 1000


@torch.no_grad()
def extract_features(model: torch.nn.Module, batches: Any, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Pooled pre-logit features and targets of every batch, as float64 / numpy on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    feats, targets = [], []
    for images, y in batches.epoch(0):
        with autocast_context(precision, device):
            feats.append(pooled_features(model, images).float().cpu())
        targets.append(y.cpu())
    return torch.cat(feats).double().numpy(), torch.cat(targets).numpy()


def _fit(features: np.ndarray, targets: np.ndarray) -> LogisticRegression:
    return LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER).fit(features, targets)


def _multiclass_scores(train_x, train_y, test_x, num_classes: int) -> tuple[np.ndarray, int, float]:
    clf = _fit(train_x, train_y)
    scores = np.zeros((len(test_x), num_classes))
    scores[:, clf.classes_] = clf.predict_proba(test_x)  # classes absent from the subset score 0
    train_p = clf.predict_proba(train_x)[np.arange(len(train_y)), np.searchsorted(clf.classes_, train_y)]
    return scores, int(np.max(clf.n_iter_)), float(-np.log(np.clip(train_p, 1e-12, None)).mean())


def _multilabel_scores(train_x, train_y, test_x) -> tuple[np.ndarray, int, float]:
    scores = np.full((len(test_x), train_y.shape[1]), 0.5)  # a label without both classes known: no signal
    iters, losses = 0, []
    for j in range(train_y.shape[1]):
        known = train_y[:, j] >= 0
        y = train_y[known, j].astype(int)
        if len(np.unique(y)) < 2:
            continue
        clf = _fit(train_x[known], y)
        scores[:, j] = clf.predict_proba(test_x)[:, 1]
        p = clf.predict_proba(train_x[known])[np.arange(len(y)), y]
        losses.append(-np.log(np.clip(p, 1e-12, None)).mean())
        iters = max(iters, int(np.max(clf.n_iter_)))
    return scores, iters, float(np.mean(losses)) if losses else float("nan")


def linear_probe(pretrained: Pretrained, target: Target, shots: Shots, seed: int, settings: FineTuneSettings,
                 device: torch.device, work_dir=None, desc: str = "", heartbeat=None) -> RunOutcome:
    """Fit and evaluate the probe of one (shots, seed); the arguments are :func:`finetune`'s."""
    started = time.perf_counter()
    spec = target.spec
    rule = settings.rule_for(target.train_size(shots, seed), spec)
    torch.manual_seed(seed)
    model = pretrained.build(spec.num_classes, device)
    train_x, train_y = extract_features(model, target.train_eval_batches(shots, seed, rule, settings.eval_batch_size,
                                                                         device), settings.precision)
    test_x, test_y = extract_features(model, target.test_batches(rule, settings.eval_batch_size, device),
                                      settings.precision)
    if len(train_x) == 0 or len(test_x) == 0:
        raise FineTuneError(f"{desc}: no {'training' if len(train_x) == 0 else 'test'} example to probe with")
    if spec.task == "multiclass":
        scores, iters, loss = _multiclass_scores(train_x, train_y, test_x, spec.num_classes)
    else:
        scores, iters, loss = _multilabel_scores(train_x, train_y, test_x)
    metric = evaluate(spec.metric, torch.from_numpy(scores).float(), torch.from_numpy(test_y), spec.label_names)
    return RunOutcome(metric, iters, time.perf_counter() - started, rule, loss, 0)
