"""The published BiT weights of the paper's architectures, as starting points of transfer.

BiT's authors released BiT-S (ImageNet-1k) and BiT-M (ImageNet-21k) ResNetV2 weights as
``.npz`` files in their own TensorFlow key layout; timm serves converted copies as
``.safetensors``. Both load through timm's own code: ``timm.create_model(...,
pretrained=True, pretrained_cfg_overlay=dict(file=PATH))`` runs timm's ``.npz`` reader for
BiT's layout (``custom_load``) and its state-dict loader otherwise. The architecture
(R50x1 / R152x4) and the head size are read off the file before anything is built.

The source name in the records is ``bit_s`` or ``bit_m``: BiT's weights, not the paper's own
pre-training, reported beside the paper's ``in1k`` / ``in21k`` cells.
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors import SafetensorError, safe_open

from xferscale.checkpoint import UnpicklingRefused, load_tensors
from xferscale.models import TIMM_NAMES

WEIGHT_SUFFIXES = (".npz", ".safetensors", ".pth", ".bin")
_HEAD_SOURCE = {1000: "bit_s", 21843: "bit_m"}
# (width, blocks in stage 3) of the two architectures the paper runs
_ARCHITECTURES = {(1, 6): "r50x1", (4, 36): "r152x4"}
_STEM_WIDTH = 64


class WeightsError(ValueError):
    """A weight file the suite cannot start from; the message names the file."""


@dataclass(frozen=True)
class PublicCheckpoint:
    """One published weight file and where to get it (on a login node: compute nodes are offline)."""

    name: str  # e.g. bit_m_r50x1: what `-S pretrained=` and `xferscale weights` call it
    file: str
    model: str
    source: str
    url: str

    @property
    def download(self) -> str:
        return f"wget -O $SCRATCH/bit/{self.file} {self.url}"


def _bit(kind: str, model: str) -> PublicCheckpoint:
    arch = {"r50x1": "R50x1", "r152x4": "R152x4"}[model]
    file = f"BiT-{kind}-{arch}.npz"
    return PublicCheckpoint(f"bit_{kind.lower()}_{model}", file, model, f"bit_{kind.lower()}",
                            f"https://storage.googleapis.com/bit_models/{file}")


def _timm(model: str) -> PublicCheckpoint:
    repo = f"timm/{TIMM_NAMES[model]}.goog_in21k"
    return PublicCheckpoint(f"timm_{model}_in21k", f"{TIMM_NAMES[model]}.goog_in21k.safetensors", model, "bit_m",
                            f"https://huggingface.co/{repo}/resolve/main/model.safetensors")


# BiT's own files (big_transfer README) and timm's converted BiT-M copies (Hugging Face hub).
KNOWN: tuple[PublicCheckpoint, ...] = (
    _bit("S", "r50x1"), _bit("M", "r50x1"), _bit("S", "r152x4"), _bit("M", "r152x4"),
    _timm("r50x1"), _timm("r152x4"),
)


def known(name: str) -> PublicCheckpoint:
    for entry in KNOWN:
        if entry.name == name:
            return entry
    raise WeightsError(f"unknown public checkpoint {name!r}; known: {', '.join(e.name for e in KNOWN)}")


def is_weight_file(path: Path) -> bool:
    """A published weight file (by suffix), not one of the suite's own ``checkpoint.pt``."""
    return path.suffix in WEIGHT_SUFFIXES


@dataclass(frozen=True)
class WeightFileInfo:
    model: str  # r50x1 | r152x4
    num_classes: int  # of the file's head
    layout: str  # "bit-npz" | "timm"


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a weight file, without loading it whole where the format allows."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k].shape for k in npz.files}
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        state = load_tensors(path)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except UnpicklingRefused as err:
        raise WeightsError(f"{path}: refused: {err}") from None
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile, KeyError, SafetensorError) as err:
        raise WeightsError(f"{path}: not a readable weight file, truncated or corrupt "
                           f"({type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict of weights")
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def inspect_weights(path: Path) -> WeightFileInfo:
    """Which BiT ResNetV2 a weight file holds (R50x1 or R152x4) and its head size."""
    shapes = _shapes(path)
    if "resnet/root_block/standardized_conv2d/kernel" in shapes:  # BiT's own layout (HWIO kernels)
        layout, stem = "bit-npz", shapes["resnet/root_block/standardized_conv2d/kernel"][-1]
        stage3 = {m[1] for k in shapes if (m := re.match(r"resnet/block3/unit(\d+)/", k))}
        head = shapes.get("resnet/head/conv2d/kernel", (0,))[-1]
    elif "stem.conv.weight" in shapes:  # timm's ResNetV2
        layout, stem = "timm", shapes["stem.conv.weight"][0]
        stage3 = {m[1] for k in shapes if (m := re.match(r"stages\.2\.blocks\.(\d+)\.", k))}
        head = shapes.get("head.fc.weight", (0,))[0]
    else:
        raise WeightsError(f"{path}: not BiT ResNetV2 weights (no root/stem convolution among {len(shapes)} tensors)")
    width, depth = stem // _STEM_WIDTH, len(stage3)
    model = _ARCHITECTURES.get((width, depth))
    if model is None:
        raise WeightsError(f"{path}: a BiT ResNetV2 of width {width} with {depth} blocks in stage 3, which is "
                           f"neither R50x1 nor R152x4 (the paper's models)")
    if not head:
        raise WeightsError(f"{path}: {model} weights without a classification head")
    return WeightFileInfo(model, int(head), layout)


def source_of(path: Path, info: WeightFileInfo) -> str:
    """``bit_s`` / ``bit_m``: from the published file's name, else from the head size."""
    for entry in KNOWN:
        if path.name == entry.file:
            return entry.source
    if re.search(r"BiT-M|in21k", path.name):
        return "bit_m"
    if "BiT-S" in path.name:
        return "bit_s"
    if info.num_classes in _HEAD_SOURCE:
        return _HEAD_SOURCE[info.num_classes]
    raise WeightsError(f"{path}: cannot tell BiT-S from BiT-M (head of {info.num_classes} classes); pass --source")


def load_public_weights(path: Path) -> tuple[WeightFileInfo, torch.nn.Module]:
    """The network of a public weight file, with the file's head, loaded by timm."""
    info = inspect_weights(path)
    overlay = {"file": str(path), "num_classes": info.num_classes, "custom_load": info.layout == "bit-npz"}
    try:
        model = timm.create_model(TIMM_NAMES[info.model], pretrained=True, num_classes=info.num_classes,
                                  pretrained_cfg_overlay=overlay)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        raise WeightsError(f"{path}: timm could not load it as {info.model} "
                           f"({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    return info, model
