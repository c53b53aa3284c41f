"""One fine-tuning run with the BiT-HyperRule, resumable from its own checkpoint.

The network is the pre-trained one with a new zero-initialised head; every layer is
trained with SGD (Nesterov momentum 0.9 as the paper's code, no weight decay) and AGC on all
parameters but the head,
by the pre-training engine's own :class:`~xferscale.trainer.TrainStep`. The learning rate
follows the rule's ``step -> lr`` schedule; MixUp is applied where the rule asks for it.

Resume: every ``checkpoint_every`` steps the run's state (weights, optimizer, step and
position in the epoch) is written atomically to ``<work_dir>/state.pt``. Data order,
augmentation and MixUp draws are functions of (seed, epoch, batch / step), so a resumed
run continues with exactly the batches an uninterrupted one would have seen.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from xferscale.checkpoint import NonFiniteStateError, load_checkpoint, save_checkpoint
from xferscale.distributed import DistEnv
from xferscale.hyperrule import PAPER_BASE_LR, PAPER_BATCH, HyperRule, hyperrule
from xferscale.losses import LOSSES
from xferscale.metrics import MetricResult
from xferscale.optim import set_lr
from xferscale.precision import configure_matmul
from xferscale.preemption import StopRequest
from xferscale.results import Shots
from xferscale.trainer import build_train_step
from xferscale.transfer.evaluate import evaluate_model
from xferscale.transfer.mixup import mixup_batch
from xferscale.transfer.pretrained import Pretrained
from xferscale.transfer.targets import Target, TargetSpec

STATE_NAME = "state.pt"


class FineTuneError(RuntimeError):
    """A run that cannot go on (non-finite loss, a state of another run); names the run."""


class Preempted(RuntimeError):
    """SIGTERM/SIGUSR1 arrived: the run's state is saved and the same command continues it."""


@dataclass(frozen=True)
class FineTuneSettings:
    """Everything of a run that is not data or weights. Only ``RESULT_FIELDS`` change results."""

    batch_size: int = PAPER_BATCH
    base_lr: float = PAPER_BASE_LR
    schedule_scale: float = 1.0  # < 1 only for CPU demonstrations; recorded with every result
    crop: int | None = None  # None: the rule's resolution
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    agc_clip: float = 0.01
    agc_eps: float = 1e-3
    mixup: bool = True  # as the rule says; False turns it off everywhere
    precision: str = "fp32"
    eval_batch_size: int = 256
    checkpoint_every: int = 100
    progress: bool = True

    RESULT_FIELDS = ("batch_size", "base_lr", "schedule_scale", "crop", "momentum", "nesterov", "weight_decay",
                     "agc_clip", "agc_eps", "mixup", "precision")

    def result_config(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.RESULT_FIELDS}

    def rule_for(self, train_size: int, spec: TargetSpec) -> HyperRule:
        """The rule for ``train_size`` examples of the target; a crop given here, else the
        target's own fixed resolution (X-ray targets), replaces the rule's."""
        return hyperrule(train_size, spec.image_size, batch_size=self.batch_size, base_lr=self.base_lr,
                         schedule_scale=self.schedule_scale, crop=self.crop if self.crop is not None else spec.crop)


@dataclass
class RunOutcome:
    metric: MetricResult
    steps: int
    time_s: float  # wall time of this process's part (a resumed run adds its earlier part)
    rule: HyperRule
    final_loss: float
    resumed_from: int


def finetune(pretrained: Pretrained, target: Target, shots: Shots, seed: int, settings: FineTuneSettings,
             device: torch.device, work_dir: Path | None = None, desc: str = "",
             heartbeat: Callable[[], None] | None = None) -> RunOutcome:
    """Fine-tune on one (shots, seed) and evaluate on the target's test split; ``heartbeat``
    is called at every saved resume state (a shared grid's claim refresh)."""
    started = time.perf_counter()
    spec = target.spec
    rule = settings.rule_for(target.train_size(shots, seed), spec)
    configure_matmul(settings.precision)
    torch.manual_seed(seed)
    train = target.train_batches(shots, seed, rule, device)
    if len(train) == 0:
        raise FineTuneError(f"{desc}: the training set of {train.num_samples} samples gives no batch")
    model = pretrained.build(spec.num_classes, device)
    model.train()
    loss_name = "softmax_ce" if spec.task == "multiclass" else "sigmoid_bce"
    step_fn = build_train_step(model, LOSSES[loss_name], lr=0.0, precision=settings.precision,
                               env=DistEnv(device=device), momentum=settings.momentum, nesterov=settings.nesterov,
                               weight_decay=settings.weight_decay, agc_clip=settings.agc_clip,
                               agc_eps=settings.agc_eps)
    optimizer = step_fn.optimizer
    alpha = rule.mixup_alpha if settings.mixup else 0.0

    step = epoch = batch_in_epoch = 0
    elapsed_before = 0.0
    state_path = work_dir / STATE_NAME if work_dir else None
    if state_path is not None and state_path.exists():
        state = load_checkpoint(state_path, map_location=device)
        saved_settings = state.get("settings", settings.result_config())
        if state.get("rule") != rule.to_dict() or saved_settings != settings.result_config():
            raise FineTuneError(f"{state_path}: resume state of another configuration; delete it to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if step_fn.scaler and state.get("scaler"):
            step_fn.scaler.load_state_dict(state["scaler"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        elapsed_before = state.get("time_s", 0.0)
    resumed_from = step

    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite loss, on the device

    def fail_nonfinite(what: str) -> FineTuneError:
        bad = int(first_bad.item())
        where = f"loss became NaN/inf at step {bad}" if bad >= 0 else "the loss stayed finite"
        return FineTuneError(f"{desc}: {where}, {what}; the state is not saved (lower --base-lr)")

    def save() -> None:
        if state_path is None:
            return
        try:
            save_checkpoint(state_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": step_fn.scaler.state_dict() if step_fn.scaler else None,
                "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "rule": rule.to_dict(),
                "settings": settings.result_config(),
                "time_s": elapsed_before + time.perf_counter() - started,
            })
        except NonFiniteStateError as err:
            raise fail_nonfinite(f"and after {step} steps the {' and '.join(err.entries)} state holds NaN/inf") from None
        if heartbeat is not None:
            heartbeat()

    loss = torch.zeros(())
    with StopRequest() as stop, tqdm(total=rule.steps, initial=step, unit="step", desc=desc,
                                     disable=not settings.progress, dynamic_ncols=True, mininterval=1.0,
                                     leave=False) as bar:
        while step < rule.steps:
            for images, targets in train.epoch(epoch, batch_in_epoch):
                set_lr(optimizer, rule(step))
                if alpha > 0:
                    images, targets, _ = mixup_batch(images, targets, alpha, spec.num_classes, seed, step)
                loss = step_fn(images, targets)
                first_bad = torch.where(~torch.isfinite(loss) & (first_bad < 0), step, first_bad)
                step += 1
                batch_in_epoch += 1
                bar.update()
                if step % settings.checkpoint_every == 0 or step == rule.steps:
                    if int(first_bad.item()) >= 0:
                        raise fail_nonfinite(f"and is {loss.item()} at step {step}")
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                    if step < rule.steps:
                        save()
                if stop.signum is not None and step < rule.steps:
                    save()
                    raise Preempted(f"{desc}: stopped by signal {stop.signum} at step {step}; state saved to "
                                    f"{state_path}; run the same command again to continue")
                if step >= rule.steps:
                    break
            if batch_in_epoch >= len(train):
                epoch, batch_in_epoch = epoch + 1, 0

    metric = evaluate_model(model, target.test_batches(rule, settings.eval_batch_size, device), spec,
                            settings.precision)
    return RunOutcome(metric, step, elapsed_before + time.perf_counter() - started, rule, float(loss.item()),
                      resumed_from)

