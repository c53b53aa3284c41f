"""The BiT-HyperRule against BiT's published constants, at and around every threshold."""
from __future__ import annotations

import json

import pytest

from xferscale.cli import main
from xferscale.hyperrule import hyperrule, mixup_alpha, resolution, scale_boundaries, schedule_boundaries

SMALL = [100, 200, 300, 400, 500]
MEDIUM = [500, 3000, 6000, 9000, 10_000]
LARGE = [500, 6000, 12_000, 18_000, 20_000]


@pytest.mark.parametrize(
    "size, expected",
    [
        ((32, 32), (160, 128)),  # CIFAR
        ((28, 28), (160, 128)),  # MNIST
        ((95, 96), (160, 128)),  # area 9120 < 9216
        ((96, 95), (160, 128)),
        ((96, 96), (512, 480)),  # area == 96*96 is not below it
        ((97, 96), (512, 480)),
        ((48, 192), (512, 480)),  # the area counts, not the sides
        ((48, 191), (160, 128)),
        ((224, 224), (512, 480)),
    ],
)
def test_resolution_threshold_is_the_area_96x96(size, expected):
    assert resolution(*size) == expected


@pytest.mark.parametrize(
    "n, boundaries, alpha",
    [
        (1, SMALL, 0.0),
        (19_999, SMALL, 0.0),
        (20_000, MEDIUM, 0.1),
        (20_001, MEDIUM, 0.1),
        (499_999, MEDIUM, 0.1),
        (500_000, LARGE, 0.1),
        (500_001, LARGE, 0.1),
        (14_000_000, LARGE, 0.1),
    ],
)
def test_schedule_and_mixup_thresholds(n, boundaries, alpha):
    assert list(schedule_boundaries(n)) == boundaries
    assert mixup_alpha(n) == alpha
    rule = hyperrule(n, (32, 32))
    assert rule.steps == boundaries[-1] and rule.warmup_steps == boundaries[0]
    assert rule.mixup_alpha == alpha


def bit_lr(step: int, supports: list[int], base_lr: float) -> float | None:
    """BiT's get_lr, restated from its description: warm-up, /10 strictly past each boundary."""
    if step < supports[0]:
        return base_lr * step / supports[0]
    if step >= supports[-1]:
        return None
    for s in supports[1:]:
        if s < step:
            base_lr /= 10
    return base_lr


@pytest.mark.parametrize("n, supports", [(1000, SMALL), (50_000, MEDIUM), (1_000_000, LARGE)])
def test_lr_at_and_around_every_boundary(n, supports):
    rule = hyperrule(n, (224, 224), base_lr=0.003)
    probes = {0, 1} | {b + d for b in supports for d in (-1, 0, 1)}
    for step in sorted(probes):
        expected = bit_lr(step, supports, 0.003)
        if expected is None:
            assert rule.lr(step) is None, step
        else:
            assert rule.lr(step) == pytest.approx(expected, rel=1e-12, abs=0), step


def test_lr_shape_with_paper_defaults():
    rule = hyperrule(1000, (32, 32))
    assert rule.batch_size == 128 and rule.base_lr == 0.001
    assert rule.lr(0) == 0.0
    assert rule.lr(50) == pytest.approx(0.0005)
    assert rule.lr(100) == pytest.approx(0.001)
    assert rule.lr(200) == pytest.approx(0.001)  # not yet strictly past 200
    assert rule.lr(201) == pytest.approx(0.0001)
    assert rule.lr(301) == pytest.approx(0.00001)
    assert rule.lr(401) == pytest.approx(0.000001)
    assert rule.lr(499) == pytest.approx(0.000001)
    assert rule.lr(500) is None and rule(500) == 0.0


def test_schedule_scale_keeps_boundaries_increasing():
    assert scale_boundaries(tuple(SMALL), 0.1) == (10, 20, 30, 40, 50)
    assert scale_boundaries(tuple(SMALL), 0.001) == (1, 2, 3, 4, 5)
    rule = hyperrule(100, (8, 8), schedule_scale=0.1)
    assert rule.steps == 50 and rule.schedule_scale == 0.1
    with pytest.raises(ValueError, match="scale"):
        scale_boundaries(tuple(SMALL), 0)


def test_crop_override_keeps_the_rules_ratio():
    rule = hyperrule(100, (8, 8), crop=32)
    assert (rule.precrop, rule.crop) == (40, 32)


@pytest.mark.parametrize("bad", [dict(train_size=0, image_size=(32, 32)), dict(train_size=5, image_size=(0, 32))])
def test_bad_input_is_refused(bad):
    with pytest.raises(ValueError, match="positive"):
        hyperrule(**bad)


def test_command_prints_json(capsys):
    assert main(["hyperrule", "--train-size", "50000", "--image-size", "224", "224", "--lr-table"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["precrop"], out["crop"]) == (512, 480)
    assert out["boundaries"] == MEDIUM and out["lr_decay_steps"] == [3000, 6000, 9000]
    assert out["mixup_alpha"] == 0.1 and out["steps"] == 10_000
    assert out["lr_at_step"]["3001"] == pytest.approx(1e-4)
    assert out["lr_at_step"]["10000"] is None


def test_command_rejects_bad_size():
    with pytest.raises(SystemExit, match="positive"):
        main(["hyperrule", "--train-size", "-3", "--image-size", "32", "32"])
