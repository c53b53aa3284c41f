"""The pre-training engine: one training step, and the loop around it.

:class:`TrainStep` is the unit the benchmarks time: forward, backward, gradient sync,
AGC, SGD. :class:`Trainer` adds the data, the schedule, logging, throughput measured on
every rank, validation after each epoch with ``best.pt`` (:mod:`xferscale.validation`),
checkpoints and pre-emption handling around it.
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from xferscale.checkpoint import (
    CHECKPOINT_NAME, digest_path, load_checkpoint, nonfinite_entries, rng_state, save_checkpoint, set_rng_state,
)
from xferscale.config import ConfigError, ExperimentConfig, dump_config
from xferscale.data.loader import Batches, build_loader
from xferscale.distributed import (
    DistEnv, GradientSync, all_reduce, barrier, gather_objects, init_distributed, wrap_for_training,
)
from xferscale.losses import LOSSES, LossFn
from xferscale.models import build_model
from xferscale.optim import adaptive_clip_grad_, agc_parameters, build_sgd, set_lr
from xferscale.precision import autocast_context, configure_matmul, make_grad_scaler
from xferscale.preemption import StopRequest
from xferscale.schedule import build_schedule, plan_schedule
from xferscale.validation import BEST_NAME, ValidationResult, Validator


# Config keys that do not change what a run computes: a resume may change them.
RESUMABLE_KEYS = frozenset({
    "name", "description", "output_dir", "data.path", "data.workers", "data.prefetch", "data.backend",
    "data.on_corrupt", "train.log_every", "train.checkpoint_every", "train.progress", "train.max_steps",
    "train.warmup_exclude", "train.stop_check_seconds", "model.compile", "model.channels_last", "optim.foreach",
    "optim.fused", "distributed.backend", "distributed.bucket_cap_mb", "distributed.static_graph",
})


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def result_key_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key (saved A, now B)`` for each key that changes results and differs between the two."""
    a, b = _flatten(saved), _flatten(now)
    return [f"{key} (saved {a.get(key)!r}, now {b.get(key)!r})"
            for key in sorted(set(a) | set(b)) if key not in RESUMABLE_KEYS and a.get(key) != b.get(key)]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


class TrainStep:
    """One optimisation step on a batch; returns the detached loss without a host sync."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        *,
        precision: str = "fp32",
        device: torch.device = torch.device("cpu"),
        agc_params: list[nn.Parameter] | None = None,
        agc_clip: float = 0.01,
        agc_eps: float = 1e-3,
        foreach: bool = True,
        channels_last: bool = False,
        grad_sync: GradientSync | None = None,
    ):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.precision, self.device = precision, device
        self.agc_params = agc_params if agc_clip > 0 else None
        self.agc_clip, self.agc_eps, self.foreach = agc_clip, agc_eps, foreach
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.scaler = make_grad_scaler(precision, device)
        self.grad_sync = grad_sync

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        images = images.contiguous(memory_format=self.memory_format)
        self.optimizer.zero_grad()  # Horovod's optimizer takes no arguments; None grads are the default
        with autocast_context(self.precision, self.device):
            logits = self.model(images)
        loss = self.loss_fn(logits.float(), targets)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.grad_sync:
            self.grad_sync.synchronize()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.agc_params is not None:
            adaptive_clip_grad_(self.agc_params, self.agc_clip, self.agc_eps, foreach=self.foreach)
        with self.grad_sync.step_context() if self.grad_sync else nullcontext():
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        return loss.detach()


@dataclass(frozen=True)
class SpeedOptions:
    """The switchable speed-ups of the suite's step (each guarded against the plain loop)."""

    foreach: bool = True  # batched AGC and SGD kernels
    fused_sgd: bool = False
    channels_last: bool = False
    compile: bool = False


def build_train_step(
    model: nn.Module,
    loss_fn: LossFn,
    *,
    lr: float,
    precision: str = "fp32",
    env: DistEnv = DistEnv(),
    options: SpeedOptions = SpeedOptions(),
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    agc_clip: float = 0.01,
    agc_eps: float = 1e-3,
    bucket_cap_mb: int = 25,
    static_graph: bool = False,
) -> TrainStep:
    """The suite's step for ``model``: SGD, AGC on all but the head, data-parallel wrapping."""
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_sgd(model, lr, momentum, weight_decay, options.foreach, options.fused_sgd, nesterov)
    agc_params = agc_parameters(model)
    wrapped, optimizer = wrap_for_training(model, optimizer, env, bucket_cap_mb, static_graph)
    if options.compile:
        wrapped = torch.compile(wrapped)
    return TrainStep(
        wrapped, optimizer, loss_fn, precision=precision, device=env.device, agc_params=agc_params,
        agc_clip=agc_clip, agc_eps=agc_eps, foreach=options.foreach, channels_last=options.channels_last,
        grad_sync=GradientSync(env, optimizer),
    )


class Trainer:
    def __init__(self, cfg: ExperimentConfig, env: DistEnv | None = None, loader: Batches | None = None):
        self.cfg = cfg
        self.env = env or init_distributed(cfg.distributed.backend)
        self.out = Path(cfg.output_dir)
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        tc = cfg.train
        if tc.global_batch % self.env.world_size:
            raise ConfigError(f"train.global_batch={tc.global_batch} is not divisible by the {self.env.world_size} ranks")
        self.local_batch = tc.global_batch // self.env.world_size
        configure_matmul(tc.precision)
        torch.manual_seed(tc.seed)  # the same initial weights on every rank
        self.loader = loader or build_loader(
            cfg.data, batch_size=self.local_batch, rank=self.env.rank, world_size=self.env.world_size,
            device=self.env.device, train=True, seed=tc.seed, num_classes=cfg.model.num_classes or 10,
            multilabel=tc.loss == "sigmoid_bce",
        )
        if len(self.loader) == 0:
            raise ConfigError(f"one epoch of {self.loader.num_samples} samples has no full global batch of {tc.global_batch}")
        self.num_classes = self._num_classes()
        model = build_model(cfg.model.name, self.num_classes).to(self.env.device)
        self.model = model  # unwrapped: what checkpoints hold
        self.steps_per_epoch = len(self.loader)
        self.train_samples = self.loader.num_samples  # the source's real size, for the report's power laws
        self.schedule_plan = plan_schedule(cfg, self.steps_per_epoch, self.train_samples).check()
        total = self.schedule_plan.total_steps
        self.total_steps = min(total, tc.max_steps) if tc.max_steps else total
        self.schedule = build_schedule(self.schedule_plan)
        speed = SpeedOptions(cfg.optim.foreach, cfg.optim.fused, cfg.model.channels_last, cfg.model.compile)
        self.step_fn = build_train_step(
            model, LOSSES[tc.loss], lr=self.schedule(0), precision=tc.precision, env=self.env, options=speed,
            momentum=cfg.optim.momentum, nesterov=cfg.optim.nesterov, weight_decay=cfg.optim.weight_decay,
            agc_clip=cfg.optim.agc_clip,
            agc_eps=cfg.optim.agc_eps, bucket_cap_mb=cfg.distributed.bucket_cap_mb,
            static_graph=cfg.distributed.static_graph,
        )
        self.optimizer = self.step_fn.optimizer
        self.step = self.epoch = self.batch_in_epoch = 0
        self._window: _Window | None = None
        self.best_path = self.out / BEST_NAME
        self.validator = (Validator(cfg, self.env, self.local_batch, self.num_classes, cfg.model.channels_last)
                          if cfg.validates else None)
        self.best_val_loss: float | None = None
        self.best_epoch: int | None = None
        # an epoch trained but not yet validated: checkpointed, so a stop during validation redoes it on resume
        self.pending_validation: int | None = None

    def _num_classes(self) -> int:
        dataset_classes = getattr(self.loader, "num_classes", None)
        wanted = self.cfg.model.num_classes
        if wanted is None:
            return dataset_classes
        if self.cfg.data.source == "prepared" and dataset_classes not in (None, wanted):
            raise ConfigError(
                f"model.num_classes={wanted}, but the dataset at {self.cfg.data.path} has {dataset_classes} classes"
            )
        return wanted

    # -- checkpoints -------------------------------------------------------------------
    def weights_state(self) -> dict[str, Any]:
        """The weights and what they were trained on: what transfer reads (``best.pt`` holds only this)."""
        data = self.cfg.data
        return {
            "model": self.model.state_dict(),
            "model_name": self.cfg.model.name,
            "num_classes": self.num_classes,
            "task": self.loader.task,
            "train_samples": self.train_samples,
            "train_data": {"path": str(Path(data.path).resolve()) if data.path else None, "split": data.split,
                           "source": data.source},
            "config": self.cfg.to_dict(),
            "step": self.step,
            "epoch": self.epoch,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.weights_state(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.step_fn.scaler.state_dict() if self.step_fn.scaler else None,
            "batch_in_epoch": self.batch_in_epoch,
            "validation": {"best_loss": self.best_val_loss, "best_epoch": self.best_epoch,
                           "pending_epoch": self.pending_validation},
            "world_size": self.env.world_size,
            # every rank's generators: each rank draws its own augmentation and MixUp stream,
            # so resuming all ranks from rank 0's would change the run
            "rng": gather_objects(rng_state(), self.env),
        }

    def save(self) -> None:
        """Checkpoint, on rank 0; every rank first checks the state it holds for NaN/inf
        (the replicas are equal), so all of them stop together and nothing is written."""
        state = self.state_dict()
        bad = nonfinite_entries(state)
        if bad:
            first = self._window.first_bad_step() if self._window is not None else -1
            raise NonFiniteLossError(self._nonfinite_message(
                first if first >= 0 else None, f"the {' and '.join(bad)} state holds NaN/inf after {self.step} steps"))
        if self.env.is_main:
            save_checkpoint(self.checkpoint_path, state)
        barrier(self.env)

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("model_name") != self.cfg.model.name or state.get("num_classes") != self.num_classes:
            raise ConfigError(
                f"{self.checkpoint_path} holds {state.get('model_name')} with {state.get('num_classes')} classes, "
                f"but the config asks for {self.cfg.model.name} with {self.num_classes}"
            )
        differing = result_key_differences(state.get("config") or {}, self.cfg.to_dict())
        if differing:
            raise ConfigError(
                f"{self.checkpoint_path} was written by another configuration; differing keys: {', '.join(differing)}; "
                "resume with the saved values, or use another output_dir"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.step_fn.scaler and state.get("scaler"):
            self.step_fn.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        validation = state.get("validation") or {}  # older checkpoints: none
        self.best_val_loss, self.best_epoch = validation.get("best_loss"), validation.get("best_epoch")
        self.pending_validation = validation.get("pending_epoch")
        saved = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # older checkpoints: rank 0's
        # at another world size the run cannot be the same anyway: each rank takes a saved stream
        set_rng_state(saved[self.env.rank % len(saved)])

    def save_best(self, result: ValidationResult) -> None:
        """``best.pt``: the weights of the lowest validation loss so far, with their validation."""
        if self.env.is_main:
            save_checkpoint(self.best_path, {**self.weights_state(), "selected_by": result.state()})
        barrier(self.env)

    def _validate(self, stop: StopRequest, meter: "_Throughput", log) -> bool:
        """Validate the pending epoch; False if a stop request came first (it stays pending)."""
        started = time.perf_counter()
        result = self.validator.run(self.model, self.pending_validation, self.step, lambda: stop.signum is not None)
        meter.exclude(time.perf_counter() - started)
        if result is None:
            return False
        best = self.best_val_loss is None or result.loss < self.best_val_loss  # the first of equal losses, as the code
        if best:
            self.best_val_loss, self.best_epoch = result.loss, result.epoch
            self.save_best(result)
        self.pending_validation = None
        if log:
            log.write(json.dumps(result.record(best)) + "\n")
            log.flush()
        if self.env.is_main:
            tqdm.write(result.line(best))
        return True

    # -- the loop ----------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        cfg, env = self.cfg, self.env
        if resume and self.checkpoint_path.exists():
            self.restore(load_checkpoint(self.checkpoint_path, map_location=env.device))
            summary_path = self.out / "summary.json"
            finished = self.step >= self.total_steps and self.pending_validation is None
            if finished and summary_path.is_file():  # a finished run keeps its summary
                summary = json.loads(summary_path.read_text())
                summary.update(already_finished=True, stopped_by_signal=False)
                return summary
        elif env.is_main:  # a fresh run: a best.pt left by an earlier run in this folder is not this run's
            for stale in (self.best_path, digest_path(self.best_path)):
                stale.unlink(missing_ok=True)
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(dump_config(cfg))
        meter = _Throughput(env, self.local_batch, cfg.train.warmup_exclude)
        window = self._window = _Window(env.device)
        poll = _StopPoll(env, cfg.train.stop_check_seconds)
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True, mininterval=1.0,
                   disable=not (env.is_main and cfg.train.progress), desc=f"pretrain {cfg.name}")
        log = open(self.out / "metrics.jsonl", "a") if env.is_main else None
        stopped_by = None
        try:
            with StopRequest() as stop:
                if self.pending_validation is not None:  # resumed where a stop interrupted the validation
                    if not self._validate(stop, meter, log):
                        stopped_by = stop.cause
                    self.save()
                while self.step < self.total_steps and stopped_by is None:
                    for images, targets in self.loader.epoch(self.epoch, self.batch_in_epoch):
                        lr = self.schedule(self.step)
                        set_lr(self.optimizer, lr)
                        window.add(self.step_fn(images, targets), self.step)
                        self.step += 1
                        self.batch_in_epoch += 1
                        meter.tick(self.step)
                        bar.update()
                        last = self.step >= self.total_steps
                        if self.step % cfg.train.log_every == 0 or last:
                            record, stop_votes = window.flush(env, self.step, stop.signum is not None, meter.window_rate())
                            record.update(epoch=self.epoch, lr=lr)
                            self._check_finite(record)
                            poll.retune(record["images_per_s_total"], self.local_batch)
                            if log:
                                log.write(json.dumps({"kind": "train", **record}) + "\n")
                                log.flush()
                            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.3g}")
                            if stop_votes:
                                stopped_by = stop.cause
                        elif poll.due(self.step) and poll.agreed(stop.signum is not None):
                            stopped_by = stop.cause
                        if stopped_by or last:
                            break
                        if self.step % cfg.train.checkpoint_every == 0:
                            self.save()
                    if self.batch_in_epoch >= self.steps_per_epoch:
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                        if self.validator is not None:
                            self.pending_validation = self.epoch - 1
                    if self.pending_validation is not None and stopped_by is None:
                        if not self._validate(stop, meter, log):
                            stopped_by = stop.cause
                    self.save()
        finally:
            bar.close()
            if log:
                log.close()
        summary = meter.summary()
        summary.update(steps=self.step, total_steps=self.total_steps, epoch=self.epoch,
                       checkpoint=str(self.checkpoint_path), stopped_by_signal=stopped_by is not None,
                       finished=stopped_by is None and self.step >= self.total_steps, model=cfg.model.name, world_size=env.world_size,
                       global_batch=cfg.train.global_batch, precision=cfg.train.precision, loss=window.last_loss,
                       best_checkpoint=str(self.best_path) if self.best_epoch is not None else None,
                       best_epoch=self.best_epoch, best_val_loss=self.best_val_loss)
        if env.is_main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _check_finite(self, record: dict[str, Any]) -> None:
        if record["first_bad_step"] >= 0:
            raise NonFiniteLossError(self._nonfinite_message(record["first_bad_step"]))

    def _nonfinite_message(self, first_bad_step: int | None, what: str = "") -> str:
        where = (f"loss became NaN/inf at step {first_bad_step}" if first_bad_step is not None
                 else "the losses so far are finite")
        detail = f", and {what}" if what else ""
        kept = (f"the last checkpoint, {self.checkpoint_path}, holds a finite state" if self.checkpoint_path.exists()
                else "no checkpoint was written")
        return (f"{where} (epoch {self.epoch}){detail}; stopping, nothing non-finite is checkpointed: {kept} "
                "(lower optim.base_lr, raise the warm-up, or use train.precision=amp_bf16/fp32)")


class _StopPoll:
    """Agree on a stop request within about ``seconds`` of the signal, not ``log_every`` steps.

    One process acts on its own flag at every step. Ranks must stop at the same step, so
    they all-reduce their flags every ``interval`` steps, the interval re-tuned at each log
    flush from the step time all ranks agree on (the summed throughput): ~``seconds`` apart,
    and at most one small collective per interval.
    """

    def __init__(self, env: DistEnv, seconds: float):
        self.env, self.seconds, self.interval = env, seconds, 1

    def due(self, step: int) -> bool:
        return self.env.world_size == 1 or step % self.interval == 0

    def agreed(self, requested: bool) -> bool:
        if self.env.world_size == 1:
            return requested
        flag = torch.tensor([float(requested)], device=self.env.device)
        all_reduce(flag, self.env)
        return bool(flag.item() > 0)

    def retune(self, images_per_s_total: float, local_batch: int) -> None:
        if images_per_s_total > 0:
            step_s = local_batch * self.env.world_size / images_per_s_total
            self.interval = max(1, int(self.seconds / step_s))


class _Window:
    """Loss of the steps since the last log, kept on the device so steps never sync the host."""

    def __init__(self, device: torch.device):
        self.device = device
        self.last_loss = float("nan")
        self._reset()

    def _reset(self):
        self.loss_sum = torch.zeros((), device=self.device)
        self.count = 0
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)

    def first_bad_step(self) -> int:
        """The first step of this window whose loss was NaN/inf on this rank, or -1."""
        return int(self.first_bad.item())

    def add(self, loss: torch.Tensor, step: int) -> None:
        finite = torch.isfinite(loss)
        self.loss_sum += torch.where(finite, loss, torch.zeros_like(loss))
        self.count += 1
        self.first_bad = torch.where(~finite & (self.first_bad < 0), torch.tensor(step, device=self.device), self.first_bad)

    def flush(self, env: DistEnv, step: int, stop_requested: bool, rate: float) -> tuple[dict[str, Any], bool]:
        """Reduce the window over ranks: mean loss, any stop request, images/s summed over ranks."""
        extra = torch.tensor([float(stop_requested), rate], device=self.device)
        sums = torch.cat([(self.loss_sum / max(self.count, 1)).reshape(1), extra])
        all_reduce(sums, env)
        bad = all_reduce(self.first_bad.clone(), env, op="max")
        self.last_loss = sums[0].item() / env.world_size
        record = {"step": step, "loss": self.last_loss, "first_bad_step": int(bad.item()),
                  "images_per_s_rank": rate, "images_per_s_total": sums[2].item()}
        self._reset()
        return record, bool(sums[1].item() > 0)


class _Throughput:
    """Images/s of this rank after the warm-up steps, and the total over ranks as measured."""

    def __init__(self, env: DistEnv, local_batch: int, warmup: int):
        self.env, self.local_batch, self.warmup = env, local_batch, warmup
        self.seen = 0  # steps run by this process (a resumed run counts its own)
        self.t0: float | None = time.perf_counter() if warmup == 0 else None
        self.timed_steps = 0
        self.window_t = time.perf_counter()
        self.window_steps = 0

    def _sync(self):
        if self.env.device.type == "cuda":
            torch.cuda.synchronize(self.env.device)

    def tick(self, step: int) -> None:
        self.seen += 1
        self.window_steps += 1
        if self.t0 is not None:
            self.timed_steps += 1
        elif self.seen >= self.warmup:  # the clock starts once the warm-up steps are done
            self._sync()
            self.t0 = time.perf_counter()

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` spent outside training steps (validation) out of the rates."""
        self.window_t += seconds
        if self.t0 is not None:
            self.t0 += seconds

    def window_rate(self) -> float:
        """This rank's images/s since the last call (the log line's figure)."""
        self._sync()
        now = time.perf_counter()
        rate = self.window_steps * self.local_batch / max(now - self.window_t, 1e-9)
        self.window_t, self.window_steps = now, 0
        return rate

    def summary(self) -> dict[str, Any]:
        self._sync()
        elapsed = time.perf_counter() - self.t0 if self.t0 is not None and self.timed_steps else 0.0
        rate = self.timed_steps * self.local_batch / elapsed if elapsed else 0.0
        world = self.env.world_size
        per_rank = torch.zeros(world, dtype=torch.float64, device=self.env.device)
        per_rank[self.env.rank] = rate
        slowest = torch.tensor([elapsed], dtype=torch.float64, device=self.env.device)
        all_reduce(per_rank, self.env)
        all_reduce(slowest, self.env, op="max")
        global_images = self.timed_steps * self.local_batch * world
        return {
            "timed_steps": self.timed_steps,
            "warmup_steps_excluded": self.warmup,
            "images_per_s_per_rank": per_rank.tolist(),
            "images_per_s_total": float(per_rank.sum()),
            "images_per_s_total_slowest_rank": global_images / slowest.item() if slowest.item() else 0.0,
        }
