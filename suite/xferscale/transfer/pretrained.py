"""A pre-trained checkpoint as the starting point of fine-tuning runs.

Which file of a pre-training run transfer starts from (:func:`resolve_checkpoint`): a run
that validated keeps ``best.pt``, its weights of the lowest validation loss, beside
``checkpoint.pt``, its last state. Naming the run folder or its ``checkpoint.pt`` selects
``best.pt`` where it exists (the paper's ``finetune.py`` loads the ``model.pth.tar`` that
``pretrain.py`` ``save_best`` wrote), else ``checkpoint.pt``; ``last=True`` (the command's
``--last-checkpoint``) keeps ``checkpoint.pt``; any other file is used as named.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xferscale.checkpoint import CHECKPOINT_NAME, file_digest, load_checkpoint_and_digest
from xferscale.models import build_model, reset_head
from xferscale.report.paper import source_images
from xferscale.results import config_hash
from xferscale.transfer.public_weights import WeightsError, is_weight_file, load_public_weights, source_of
from xferscale.validation import BEST_NAME

REQUIRED_KEYS = ("model", "model_name", "num_classes")


class CheckpointError(ValueError):
    """A checkpoint that cannot start fine-tuning; the message names the file."""


SCRATCH = "scratch"  # the source name of the random-init baseline


@dataclass
class Pretrained:
    """Weights to start fine-tuning from; ``state=None`` is the random-init baseline
    (:meth:`random_init`), drawn by :meth:`build` from torch's generator, which each run seeds."""

    path: Path | None
    model_name: str
    num_classes: int
    state: dict[str, torch.Tensor] | None
    config: dict[str, Any]
    step: int
    source: str
    train_samples: int | None = None  # images per epoch of the pre-training run (its checkpoint says)
    sha256: str | None = None  # of the checkpoint file (suite checkpoints)
    selected_by: dict[str, Any] | None = None  # best.pt: the validation that selected it (epoch, val_loss, ...)
    train_data: dict[str, Any] | None = None  # what it trained on: {"path", "split", "source"} (its checkpoint says)

    @classmethod
    def random_init(cls, model_name: str) -> "Pretrained":
        """The same network with random weights: what pre-training is measured against."""
        return cls(path=None, model_name=model_name, num_classes=1, state=None, config={}, step=0, source=SCRATCH)

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Identifies the weights without hashing gigabytes: model, pre-training config, step."""
        if self.state is None:
            return {"model": self.model_name, "init": "random"}
        return {"model": self.model_name, "num_classes": self.num_classes, "step": self.step,
                "pretrain_config": config_hash(self.config)}

    @property
    def params_m(self) -> float:
        """Parameters of the pre-trained network (its pre-training head included), in millions."""
        if self.state is None:  # counted on the meta device, once per model: no weights are built
            from xferscale.scaling_model import parameter_count

            return parameter_count(self.model_name, self.num_classes) / 1e6
        return sum(t.numel() for t in self.state.values() if t.is_floating_point()) / 1e6

    @property
    def source_images(self) -> float | None:
        """Pre-training images: what the run trained on (its prepared source's real size), else
        the paper's nominal figure for its source, else the images a synthetic source made: one
        epoch's worth for the fixed noise patterns, every epoch's for the fresh stroke glyphs."""
        if self.state is None:
            return None
        if self.train_samples:
            return float(self.train_samples)
        known = source_images(self.source)
        if known is not None:
            return known
        data = self.config.get("data", {})
        if data.get("source") == "synthetic":
            return float(data["synthetic_samples"])
        if data.get("source") == "strokes":
            return float(data["synthetic_samples"]) * float(self.config.get("schedule", {}).get("epochs", 1))
        return None

    def build(self, num_classes: int, device: torch.device) -> nn.Module:
        """The pre-trained network with a new zero-initialised head of ``num_classes``."""
        if self.state is None:
            return build_model(self.model_name, num_classes).to(device)
        model = build_model(self.model_name, self.num_classes)
        model.load_state_dict(self.state)
        reset_head(model, num_classes)
        return model.to(device)


def source_name(config: dict[str, Any], model_name: str) -> str:
    """``r50x1_in21k`` -> ``in21k``: the run name without its model prefix."""
    name = str(config.get("name") or "unknown")
    prefix = f"{model_name}_"
    return name[len(prefix):] if name.startswith(prefix) else name


def _from_public_weights(path: Path, source: str | None) -> Pretrained:
    """BiT's published weights (``.npz``) or timm's copies (``.safetensors``/``.pth``)."""
    try:
        info, model = load_public_weights(path)
        source = source or source_of(path, info)
    except WeightsError as err:
        raise CheckpointError(str(err)) from err
    # what identifies the weights in the records: the file's content, not its path
    digest = file_digest(path)
    config = {"name": source, "public_weights": {"file": path.name, "sha256": digest}}
    # train_samples unknown: source_images is the paper's figure for ImageNet-1k / -21k
    return Pretrained(path=path, model_name=info.model, num_classes=info.num_classes, state=model.state_dict(),
                      config=config, step=0, source=source, sha256=digest)


def resolve_checkpoint(path: str | Path, last: bool = False) -> Path:
    """The file to start from: ``best.pt`` for a run folder or its ``checkpoint.pt`` where the
    run validated and kept one, unless ``last``; otherwise the file named (or the folder's
    ``checkpoint.pt``)."""
    path = Path(path)
    if path.is_dir():
        folder, named = path, path / CHECKPOINT_NAME
    elif path.name == CHECKPOINT_NAME:
        folder, named = path.parent, path
    else:
        return path
    best = folder / BEST_NAME
    return best if not last and best.is_file() else named


def describe_choice(pretrained: Pretrained) -> str:
    """One line: which file of the run is used, and why."""
    if pretrained.path is None:
        return "random init"
    if pretrained.selected_by:
        sel = pretrained.selected_by
        return (f"{pretrained.path} (lowest validation loss {sel['val_loss']:.4f}, after epoch {sel['epoch']}, "
                f"step {sel['step']}; --last-checkpoint for {CHECKPOINT_NAME})")
    return str(pretrained.path)


def load_pretrained(path: str | Path, source: str | None = None) -> Pretrained:
    """A suite checkpoint (``xferscale pretrain``'s ``checkpoint.pt``) or a published weight file."""
    path = Path(path)
    if is_weight_file(path):
        return _from_public_weights(path, source)
    try:
        ckpt, digest = load_checkpoint_and_digest(path)
    except (FileNotFoundError, ValueError) as err:
        raise CheckpointError(str(err)) from err
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a pre-training checkpoint (missing {', '.join(missing)})")
    config = ckpt.get("config") or {}
    return Pretrained(path=path, model_name=ckpt["model_name"], num_classes=int(ckpt["num_classes"]),
                      state=ckpt["model"], config=config, step=int(ckpt.get("step", 0)),
                      source=source or source_name(config, ckpt["model_name"]),
                      train_samples=ckpt.get("train_samples"), sha256=digest,
                      selected_by=ckpt.get("selected_by"), train_data=ckpt.get("train_data"))
