"""BiT ResNetV2 models from timm, built with random weights and a zero-initialised head."""
from __future__ import annotations

from functools import partial

import timm
import torch
from timm.layers import GroupNormAct, StdConv2d
from timm.models.resnetv2 import ResNetV2
from torch import nn

# The paper's models and their timm names (weight-standardised convs, GroupNorm, pre-activation).
TIMM_NAMES = {"r50x1": "resnetv2_50x1_bit", "r152x4": "resnetv2_152x4_bit"}
MODEL_NAMES = ("tiny", *TIMM_NAMES)


def _tiny_bit(num_classes: int) -> ResNetV2:
    """A few-hundred-thousand-parameter ResNetV2 made of BiT's own block types, for CPU runs."""
    return ResNetV2(
        layers=[1, 1, 1, 1],
        channels=(64, 128, 256, 512),
        num_classes=num_classes,
        stem_chs=32,
        stem_type="fixed",
        conv_layer=partial(StdConv2d, eps=1e-8),
        norm_layer=partial(GroupNormAct, num_groups=8),
    )


def build_model(name: str, num_classes: int) -> nn.Module:
    """A randomly initialised BiT ResNetV2 ('tiny', 'r50x1' or 'r152x4') with a zero head."""
    if name == "tiny":
        model = _tiny_bit(num_classes)
    elif name in TIMM_NAMES:
        model = timm.create_model(TIMM_NAMES[name], pretrained=False, num_classes=num_classes)
    else:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    _zero_init(head_of(model))
    return model


def head_of(model: nn.Module) -> nn.Module:
    """The classifier module (a 1x1 conv in timm's ResNetV2), found by module, not by shape."""
    model = getattr(model, "module", model)  # DDP / compiled wrappers
    model = getattr(model, "_orig_mod", model)
    return model.get_classifier()


def pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The pooled pre-logit features (N, C) that the classifier reads."""
    return model.forward_head(model.forward_features(images), pre_logits=True).flatten(1)


def reset_head(model: nn.Module, num_classes: int) -> None:
    """Replace the classifier by a new zero-initialised one for ``num_classes`` (as BiT does)."""
    device = next(model.parameters()).device
    model.reset_classifier(num_classes)
    head = head_of(model)
    head.to(device)
    _zero_init(head)


def _zero_init(module: nn.Module) -> None:
    with torch.no_grad():
        for param in module.parameters():
            param.zero_()
