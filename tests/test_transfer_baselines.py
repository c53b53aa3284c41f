"""The baselines beside fine-tuning: random init with the same budget, and the linear probe;
and a target's own augmentation policy."""
from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from _transfer_fixtures import FAST, multilabel_target, one_thread, tensor_target, write_checkpoint  # noqa: F401
from xferscale.cli import main
from xferscale.hyperrule import hyperrule
from xferscale.models import pooled_features
from xferscale.results import ResultStore
from xferscale.transfer.grid import run_grid
from xferscale.transfer.linear_probe import linear_probe
from xferscale.transfer.methods import LINEAR_PROBE
from xferscale.transfer.pretrained import SCRATCH, Pretrained, load_pretrained
from xferscale.transfer.targets import (BIT_AUGMENTATION, DIGITS_AUGMENTATION, Augmentation, augment_train,
                                        digits_target, resize_eval)

CPU = torch.device("cpu")


def test_scratch_is_random_per_seed_reproducible_and_not_the_checkpoint(tmp_path):
    pretrained = load_pretrained(write_checkpoint(tmp_path / "c.pt"))
    scratch = Pretrained.random_init("tiny")
    assert scratch.source == SCRATCH and scratch.fingerprint == {"model": "tiny", "init": "random"}

    def body(start, seed):
        torch.manual_seed(seed)
        return start.build(3, CPU).stem.conv.weight.detach().clone()

    assert torch.equal(body(scratch, 1), body(scratch, 1))
    assert not torch.equal(body(scratch, 1), body(scratch, 2))
    assert not torch.equal(body(scratch, 1), body(pretrained, 1))
    torch.manual_seed(0)
    assert scratch.build(3, CPU).get_classifier().weight.abs().sum() == 0  # BiT's zero head here too
    assert scratch.source_images is None and scratch.params_m > 0


def test_linear_probe_is_logistic_regression_on_the_frozen_features(tmp_path):
    pretrained = load_pretrained(write_checkpoint(tmp_path / "c.pt"))
    before = {k: v.clone() for k, v in pretrained.state.items()}
    target = tensor_target(per_class=10, test_per_class=10)
    out = linear_probe(pretrained, target, "full", 0, FAST, CPU)

    model = pretrained.build(3, CPU).eval()  # the same features, computed here independently
    with torch.no_grad():
        feats = [pooled_features(model, resize_eval(x, FAST.crop)).double().numpy()
                 for x in (target.train_images, target.test_images)]
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(feats[0], target.train_targets.numpy())
    expected = 100 * (clf.predict(feats[1]) == target.test_targets.numpy()).mean()
    assert out.metric.name == "acc" and out.metric.value == pytest.approx(expected)
    assert out.steps > 0 and out.final_loss >= 0 and out.rule.train_size == 30
    assert all(torch.equal(before[k], v) for k, v in pretrained.state.items())
    few = linear_probe(pretrained, target, 2, 1, FAST, CPU)
    assert few.rule.train_size == 6


def test_linear_probe_of_a_multilabel_target_scores_each_label(tmp_path):
    pretrained = load_pretrained(write_checkpoint(tmp_path / "c.pt"))
    out = linear_probe(pretrained, multilabel_target(), "full", 0, FAST, CPU)
    assert out.metric.name == "auc" and out.metric.value is not None and 0 <= out.metric.value <= 100


def test_probe_records_carry_their_own_source_and_method(tmp_path):
    pretrained = load_pretrained(write_checkpoint(tmp_path / "c.pt", name="tiny_glyphs"))
    store = ResultStore(tmp_path / "res")
    summary = run_grid(pretrained, tensor_target(), [2, "full"], [0], FAST, store, CPU, method=LINEAR_PROBE,
                       log=lambda _: None)
    assert {r.source for r in summary.ran} == {"glyphs-linear"}
    assert all(r.config["method"] == {"name": "linear_probe", "C": 1.0, "max_iter": 1000} for r in summary.ran)
    plain = run_grid(pretrained, tensor_target(), [2], [0], FAST, store, CPU, log=lambda _: None)
    assert plain.ran[0].source == "glyphs" and "method" not in plain.ran[0].config


def test_transfer_command_runs_the_baselines_asked_for(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", name="tiny_glyphs")
    args = ["transfer", "--checkpoint", str(ckpt), "--results", str(tmp_path / "res"), "--shots", "2",
            "--seeds", "0", "--schedule-scale", "0.01", "--crop", "8", "--no-progress"]
    assert main([*args, "--baselines", "scratch,linear"]) == 0
    out = capsys.readouterr().out
    assert "| tiny -> digits [acc]: shots | glyphs | scratch | glyphs-linear |" in out
    assert {r.source for r in ResultStore(tmp_path / "res").records()} == {"glyphs", "scratch", "glyphs-linear"}
    assert main([*args, "--baselines", "scratch,probe"]) == 2
    assert "--baselines: unknown baseline(s) probe; choose from scratch, linear or 'none'" in capsys.readouterr().err


def test_digits_trains_unflipped_at_its_test_scale():
    assert digits_target().spec.augmentation == DIGITS_AUGMENTATION
    assert not DIGITS_AUGMENTATION.flip and not DIGITS_AUGMENTATION.precrop
    rule = hyperrule(100, (8, 8), crop=16)
    images = digits_target().train_images[:64]
    gen = torch.Generator().manual_seed(0)
    plain = augment_train(images, rule.precrop, rule.crop, gen, Augmentation(flip=False, precrop=False))
    assert torch.allclose(plain, resize_eval(images, rule.crop))  # no shift, no flip: the test transform
    shifted = augment_train(images, rule.precrop, rule.crop, torch.Generator().manual_seed(0), DIGITS_AUGMENTATION)
    ink = lambda x: (x > 0).float().sum((1, 2, 3))  # noqa: E731
    assert torch.allclose(ink(shifted), ink(plain), rtol=0.35)  # same scale: about as much ink, only moved
    assert not torch.allclose(shifted, plain)


def test_bits_augmentation_stays_the_default_and_flips():
    assert tensor_target().spec.augmentation == BIT_AUGMENTATION
    images = torch.zeros(64, 3, 8, 8, dtype=torch.uint8)
    images[..., :4] = 255  # left half white
    out = augment_train(images, 10, 8, torch.Generator().manual_seed(0))
    left_white = out[:, 0, :, :2].mean((1, 2)) > 0
    assert left_white.any() and (~left_white).any()  # some mirrored, some not
