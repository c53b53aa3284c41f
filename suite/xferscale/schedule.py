"""The pre-training schedule of a config on a dataset of known size, checked before it runs.

A schedule is only meaningful against the dataset's real size: the warm-up is given in steps
(``schedule.warmup_steps``) or epochs (``schedule.warmup_epochs``, as the paper's code gives
it), the step decays in epochs. :func:`plan_schedule` turns both into step counts and
:meth:`SchedulePlan.check` refuses a schedule that cannot be what was meant: a warm-up that
does not end before the first decay, or a run shorter than its warm-up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from xferscale.config import ConfigError, DataConfig, ExperimentConfig
from xferscale.optim import ConstantSchedule, WarmupCosineSchedule, WarmupStepSchedule, scaled_lr


@dataclass(frozen=True)
class SchedulePlan:
    kind: str
    samples_per_epoch: int
    global_batch: int
    steps_per_epoch: int
    warmup_steps: int
    decay_steps: tuple[int, ...]  # the /10 steps of a step schedule
    total_steps: int
    peak_lr: float

    def check(self) -> "SchedulePlan":
        """Raise :class:`ConfigError` naming both step counts when the schedule is broken."""
        scale = f"{self.steps_per_epoch} steps/epoch ({self.samples_per_epoch} samples / global batch {self.global_batch})"
        if self.total_steps <= self.warmup_steps:
            raise ConfigError(f"schedule: the run is {self.total_steps} steps but its warm-up is {self.warmup_steps} "
                              f"steps, at {scale}; shorten schedule.warmup_steps/warmup_epochs or train longer")
        if self.decay_steps and self.decay_steps[0] <= self.warmup_steps:
            raise ConfigError(f"schedule: the warm-up ends at step {self.warmup_steps} but the first decay is at step "
                              f"{self.decay_steps[0]}, at {scale}; the learning rate would never reach its peak "
                              "before it drops (use schedule.warmup_epochs, or a smaller train.global_batch)")
        return self

    def lines(self) -> list[str]:
        epoch = lambda step: f"epoch {step / self.steps_per_epoch:.2f}"  # noqa: E731
        out = [f"samples per epoch : {self.samples_per_epoch}",
               f"global batch      : {self.global_batch}",
               f"steps per epoch   : {self.steps_per_epoch}",
               f"peak lr           : {self.peak_lr:g} ({self.kind} schedule)",
               f"warm-up ends      : step {self.warmup_steps} ({epoch(self.warmup_steps)})"]
        out += [f"decay /10         : step {s} ({epoch(s)})" for s in self.decay_steps]
        out.append(f"total             : {self.total_steps} steps ({epoch(self.total_steps)})")
        return out


def plan_schedule(cfg: ExperimentConfig, steps_per_epoch: int, samples_per_epoch: int) -> SchedulePlan:
    """The schedule's step counts for ``steps_per_epoch`` (checked: :meth:`SchedulePlan.check`)."""
    sched = cfg.schedule
    if sched.warmup_epochs is not None:
        warmup = round(sched.warmup_epochs * steps_per_epoch)
    else:
        warmup = sched.warmup_steps or 0
    decays: tuple[int, ...] = ()
    if sched.kind == "step":
        scale = sched.epochs / sched.milestone_base
        decays = tuple(round(m * scale * steps_per_epoch) for m in sched.milestones)
    return SchedulePlan(sched.kind, samples_per_epoch, cfg.train.global_batch, steps_per_epoch, warmup, decays,
                        math.ceil(sched.epochs * steps_per_epoch), scaled_lr(cfg.optim.base_lr, cfg.train.global_batch))


def build_schedule(plan: SchedulePlan) -> Callable[[int], float]:
    """``step -> lr`` of a plan."""
    if plan.kind == "cosine":
        return WarmupCosineSchedule(plan.peak_lr, plan.warmup_steps, plan.total_steps)
    if plan.kind == "constant":
        return ConstantSchedule(plan.peak_lr, plan.warmup_steps)
    return WarmupStepSchedule(plan.peak_lr, plan.warmup_steps, plan.decay_steps)


def epoch_samples(data: DataConfig) -> int:
    """Training samples per epoch of a config's data, read from ``dataset.json`` (no images)."""
    if data.source in ("synthetic", "strokes"):
        return data.synthetic_samples
    from xferscale.data.manifest import load_dataset_info
    from xferscale.data.records import PrepareError

    try:
        return load_dataset_info(data.path).split(data.split).count
    except (PrepareError, KeyError, ValueError) as err:
        raise ConfigError(f"data.path: {data.path}: {err}") from err


def expected_steps_per_epoch(samples: int, global_batch: int) -> int:
    """What the loaders give: full global batches (a set smaller than one batch: one drawn batch)."""
    return max(1, samples // global_batch)


def plan_for_size(cfg: ExperimentConfig, samples: int) -> SchedulePlan:
    """The schedule of ``cfg`` on ``samples`` training samples per epoch (unchecked)."""
    return plan_schedule(cfg, expected_steps_per_epoch(samples, cfg.train.global_batch), samples)


def plan_on_dataset(cfg: ExperimentConfig) -> SchedulePlan:
    """The schedule of ``cfg`` on its configured data's real size, read from ``dataset.json``."""
    return plan_for_size(cfg, epoch_samples(cfg.data))
