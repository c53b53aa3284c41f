"""Image transforms of the prepared-data pipelines, for the torch backend, and the
constants both backends share (the DALI graphs in :mod:`xferscale.data.dali_pipelines`
implement the same steps with DALI operators).

``natural``             random resized crop (area 8-100 %, aspect 3/4-4/3) to image_size, flip
``natural_randaugment`` RandAugment (2 ops, magnitude 9) on the decoded image, then the same
                        (the paper's code inserts RandAugment before the crop)
``eval``                resize the shorter side to image_size / 0.875, centre crop image_size
``xray``                centre square crop on the shorter side, resize to image_size, random
                        affine (rotation, translation, scale) and flip: the paper's
                        ``cohen_aug`` ranges
``finetune``            BiT-HyperRule resolution, the paper's code's transform
                        (``datasets/builder.py:197-199``): resize the shorter side to precrop
                        keeping the aspect ratio, random crop image_size, flip

Evaluation (``train=False``) uses the deterministic part of the training pipeline
(:func:`pipeline_for`): ``eval`` after the natural pipelines, ``eval_finetune`` (resize to
(image_size, image_size), squashed, as the paper's code and BiT evaluate) after ``finetune``,
``eval_xray`` (square centre crop, resize) after ``xray``.

Every pipeline ends with grey -> 3 channels and BiT normalisation ``(x/255 - 0.5)/0.5``
(``(x - 0.5)/0.5`` on the [0, 1] scale), CHW float32. 16-bit PNGs are scaled by 65535, so
their full range survives (X-ray pipelines work in float throughout).
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

PIPELINES = ("natural", "natural_randaugment", "eval", "xray", "finetune")
EVAL_PIPELINES = {"finetune": "eval_finetune", "xray": "eval_xray"}  # others: "eval"
RRC_AREA = (0.08, 1.0)
RRC_ASPECT = (3 / 4, 4 / 3)
EVAL_CROP_FRACTION = 0.875
RANDAUGMENT_OPS, RANDAUGMENT_MAGNITUDE = 2, 9
# The paper's cohen_aug (transfer_learning/datasets/chexpert.py): albumentations
# ShiftScaleRotate(shift_limit=0.25, rotate_limit=45, scale_limit=0.1), HorizontalFlip(0.5);
# albumentations interpolates bilinearly (its default), as DALI's warp_affine.
XRAY_ROTATION_DEG, XRAY_TRANSLATE, XRAY_SCALE = 45.0, 0.25, 0.1
NORM_MEAN = NORM_STD = 0.5
# BiT-HyperRule resolution pairs (crop -> precrop); other crops scale precrop by 160/128.
BIT_PRECROP = {128: 160, 480: 512}


def eval_resize(image_size: int) -> int:
    return round(image_size / EVAL_CROP_FRACTION)


def default_precrop(image_size: int, precrop: int | None) -> int:
    if precrop is not None:
        if precrop < image_size:
            raise ValueError(f"data.precrop ({precrop}) must be >= data.image_size ({image_size})")
        return precrop
    return BIT_PRECROP.get(image_size, round(image_size * 160 / 128))


def shorter_side_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(H, W) with the shorter side at ``side`` and the aspect ratio kept, as torchvision's
    ``Resize(side)`` computes it (the longer side truncated)."""
    if height <= width:
        return side, int(side * width / height)
    return int(side * height / width), side


def pipeline_for(pipeline: str, train: bool) -> str:
    """The pipeline a loader runs: ``pipeline`` for training, its evaluation form otherwise."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; choose one of {', '.join(PIPELINES)}")
    return pipeline if train else EVAL_PIPELINES.get(pipeline, "eval")


def _to_float() -> v2.Transform:
    return v2.ToDtype(torch.float32, scale=True)


def build_transform(pipeline: str, image_size: int, precrop: int | None = None) -> v2.Compose:
    """Transform for one decoded image (uint8 or uint16 CHW tensor, 3 channels); ``pipeline``
    is one of :data:`PIPELINES` or an evaluation form from :func:`pipeline_for`."""
    size = (image_size, image_size)
    flip = v2.RandomHorizontalFlip()
    if pipeline == "natural":
        steps = [v2.RandomResizedCrop(size, scale=RRC_AREA, ratio=RRC_ASPECT, antialias=True), flip]
    elif pipeline == "natural_randaugment":
        steps = [
            v2.RandAugment(num_ops=RANDAUGMENT_OPS, magnitude=RANDAUGMENT_MAGNITUDE),
            v2.RandomResizedCrop(size, scale=RRC_AREA, ratio=RRC_ASPECT, antialias=True),
            flip,
        ]
    elif pipeline == "eval":
        steps = [v2.Resize(eval_resize(image_size), antialias=True), v2.CenterCrop(size)]
    elif pipeline == "eval_finetune":
        steps = [v2.Resize(size, antialias=True)]
    elif pipeline == "eval_xray":
        steps = [_to_float(), SquareCentreCrop(), v2.Resize(size, antialias=True)]
    elif pipeline == "finetune":
        side = default_precrop(image_size, precrop)
        steps = [v2.Resize(side, antialias=True), v2.RandomCrop(size), flip]
    elif pipeline == "xray":
        steps = [
            _to_float(),
            SquareCentreCrop(),
            v2.Resize(size, antialias=True),
            v2.RandomAffine(
                degrees=XRAY_ROTATION_DEG,
                translate=(XRAY_TRANSLATE, XRAY_TRANSLATE),
                scale=(1 - XRAY_SCALE, 1 + XRAY_SCALE),
                interpolation=v2.InterpolationMode.BILINEAR,
            ),
            flip,
        ]
    else:
        raise ValueError(f"unknown pipeline {pipeline!r}; choose one of {', '.join(PIPELINES)}")
    return v2.Compose([*steps, _to_float(), v2.Normalize([NORM_MEAN] * 3, [NORM_STD] * 3)])


class SquareCentreCrop(torch.nn.Module):
    """Centre crop to a square on the shorter side (X-rays: keep the thorax, drop the edges)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        side = min(image.shape[-2:])
        return v2.functional.center_crop(image, [side, side])
