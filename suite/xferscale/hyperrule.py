"""BiT-HyperRule: fine-tuning hyper-parameters chosen from the target's size alone.

The rule (Kolesnikov et al., "Big Transfer", and the constants of its public
``bit_hyperrule.py``) picks

- the resolution: images of area below 96x96 are resized to 160 and randomly cropped to
  128, larger ones resized to 512 and cropped to 480;
- the schedule: a training set below 20k examples trains 500 steps, below 500k 10k steps,
  else 20k steps; the learning rate warms up linearly to the first boundary, is divided by
  10 at each later boundary and training stops at the last one;
- MixUp with alpha 0.1 for 20k examples or more, none below.

Thresholds and the step comparison are BiT's exactly: ``lr(step)`` decays once ``step``
is strictly past a boundary (``boundary < step``), and stops at ``step >= last``.

A ``schedule_scale`` below 1 shrinks every boundary by the same factor; it exists for CPU
demonstrations only and is recorded with each result so it is never applied silently.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# BiT's constants, kept together so the tests can check each one against the rule.
SMALL_IMAGE_AREA = 96 * 96
SMALL_RESOLUTION = (160, 128)  # (precrop, crop) for images of area < 96*96
LARGE_RESOLUTION = (512, 480)
SMALL_DATASET = 20_000
MEDIUM_DATASET = 500_000
SCHEDULES = {
    "small": (100, 200, 300, 400, 500),
    "medium": (500, 3000, 6000, 9000, 10_000),
    "large": (500, 6000, 12_000, 18_000, 20_000),
}
MIXUP_ALPHA = 0.1
DECAY_FACTOR = 10.0

# The paper's fine-tuning settings (paper.yaml: finetuning).
PAPER_BATCH = 128
PAPER_BASE_LR = 0.001


def resolution(height: int, width: int) -> tuple[int, int]:
    """``(precrop, crop)`` side lengths for an original image of ``height`` x ``width``."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return SMALL_RESOLUTION if height * width < SMALL_IMAGE_AREA else LARGE_RESOLUTION


def schedule_boundaries(train_size: int) -> tuple[int, ...]:
    """BiT's step boundaries: end of warm-up, three decays, end of training."""
    if train_size <= 0:
        raise ValueError(f"training-set size must be positive, got {train_size}")
    if train_size < SMALL_DATASET:
        return SCHEDULES["small"]
    if train_size < MEDIUM_DATASET:
        return SCHEDULES["medium"]
    return SCHEDULES["large"]


def mixup_alpha(train_size: int) -> float:
    return 0.0 if train_size < SMALL_DATASET else MIXUP_ALPHA


def scale_boundaries(boundaries: tuple[int, ...], scale: float) -> tuple[int, ...]:
    """Shrink (or stretch) every boundary by ``scale``, keeping them >= 1 and increasing."""
    if scale <= 0:
        raise ValueError(f"schedule scale must be > 0, got {scale}")
    if scale == 1:
        return tuple(boundaries)
    scaled: list[int] = []
    for b in boundaries:
        step = max(1, round(b * scale))
        if scaled and step <= scaled[-1]:
            step = scaled[-1] + 1
        scaled.append(step)
    return tuple(scaled)


@dataclass(frozen=True)
class HyperRule:
    """What the rule picks for one fine-tuning run; ``lr(step)`` is its schedule."""

    train_size: int
    image_size: tuple[int, int]
    precrop: int
    crop: int
    boundaries: tuple[int, ...]
    mixup_alpha: float
    batch_size: int = PAPER_BATCH
    base_lr: float = PAPER_BASE_LR
    schedule_scale: float = 1.0

    @property
    def steps(self) -> int:
        return self.boundaries[-1]

    @property
    def warmup_steps(self) -> int:
        return self.boundaries[0]

    def lr(self, step: int) -> float | None:
        """Learning rate at optimizer step ``step`` (0-based), ``None`` once training ends."""
        warmup, *decays = self.boundaries
        if step < warmup:
            return self.base_lr * step / warmup
        if step >= decays[-1]:
            return None
        passed = sum(1 for boundary in decays[:-1] if boundary < step)
        return self.base_lr / DECAY_FACTOR**passed

    def __call__(self, step: int) -> float:
        """The schedule as a ``step -> lr`` callable (0 after the end)."""
        lr = self.lr(step)
        return 0.0 if lr is None else lr

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        out["boundaries"] = list(self.boundaries)
        out["steps"] = self.steps
        out["warmup_steps"] = self.warmup_steps
        out["lr_decay_steps"] = list(self.boundaries[1:-1])
        return out


def hyperrule(
    train_size: int,
    image_size: tuple[int, int],
    *,
    batch_size: int = PAPER_BATCH,
    base_lr: float = PAPER_BASE_LR,
    schedule_scale: float = 1.0,
    crop: int | None = None,
) -> HyperRule:
    """Apply the BiT-HyperRule to a training set of ``train_size`` images of ``image_size``.

    ``train_size`` is the size of the set actually trained on (the few-shot subset for a
    few-shot run, as BiT does). ``crop`` overrides the resolution (precrop = crop * 160/128,
    the rule's ratio) for CPU demonstrations; like ``schedule_scale`` it is recorded.
    """
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if base_lr <= 0:
        raise ValueError(f"base learning rate must be positive, got {base_lr}")
    height, width = image_size
    precrop, rule_crop = resolution(height, width)
    if crop is not None:
        if crop <= 0:
            raise ValueError(f"crop size must be positive, got {crop}")
        precrop, rule_crop = round(crop * SMALL_RESOLUTION[0] / SMALL_RESOLUTION[1]), crop
    return HyperRule(
        train_size=train_size,
        image_size=(height, width),
        precrop=precrop,
        crop=rule_crop,
        boundaries=scale_boundaries(schedule_boundaries(train_size), schedule_scale),
        mixup_alpha=mixup_alpha(train_size),
        batch_size=batch_size,
        base_lr=base_lr,
        schedule_scale=schedule_scale,
    )
