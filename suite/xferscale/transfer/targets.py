"""Fine-tuning targets: a train and a test :class:`~xferscale.data.loader.Batches` plus a spec.

A target hands out, for one run, the training batches of its few-shot subset (or of the
full training split) at the resolution the BiT-HyperRule picked, and the test batches at
the crop size. Two kinds live here:

- :class:`TensorTarget`, images held in memory: the ``digits`` target (scikit-learn's
  8x8 handwritten digits, real data that ships with a dependency) for the embedded demo,
  and any small tensor data set (the tests);
- :class:`PreparedTarget`, a folder written by ``xferscale prepare``, read through the
  data loader (``xferscale.data.loader.build_loader``) with its ``finetune`` pipeline.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from xferscale.data.transforms import shorter_side_size
from xferscale.hyperrule import HyperRule
from xferscale.report.paper import target_metric, uses_oversampling
from xferscale.results import FULL, Shots
from xferscale.transfer.subsets import balanced_order, fewshot_indices

# Original image sizes of the paper's targets, for the rule's resolution (H, W).
KNOWN_IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "cifar10": (32, 32), "cifar100": (32, 32), "digits": (8, 8),
    "flowers102": (500, 500), "pets": (500, 500),
    "covidx": (1024, 1024), "tuberculosis": (512, 512), "padchest_cl": (1024, 1024),
    "padchest": (1024, 1024), "chexpert": (390, 320), "mimic_cxr": (512, 512), "nih_cxr": (1024, 1024),
}


class TargetError(ValueError):
    """A target that cannot be used as asked; the message says what is wrong and where."""


@dataclass(frozen=True)
class Augmentation:
    """A target's training transform, applied to in-memory targets (:class:`TensorBatches`).

    The default is the paper's code's (``datasets/builder.py:197-199``): resize the shorter
    side to the rule's precrop keeping the aspect ratio, random crop at the crop size, random
    horizontal flip. ``precrop=False`` trains at the scale the test set is seen at: resize
    to the crop size, pad the border by ``shift`` of the crop (edge pixels repeated) and
    crop back, a random shift with no change of scale. Prepared targets are augmented by
    their loader's ``pipeline`` (``finetune`` is this transform, ``xray`` the paper's X-ray one).
    """

    flip: bool = True
    precrop: bool = True
    shift: float = 0.0  # with precrop=False: the largest shift, as a fraction of the crop size


BIT_AUGMENTATION = Augmentation()  # the BiT-HyperRule's precrop/crop, resized as the paper's code
DIGITS_AUGMENTATION = Augmentation(flip=False, precrop=False, shift=0.125)


@dataclass(frozen=True)
class TargetSpec:
    name: str
    task: str  # "multiclass" or "multilabel"
    num_classes: int
    metric: str  # "acc" or "auc" (paper.yaml's names)
    image_size: tuple[int, int]  # original (H, W), which the HyperRule reads
    label_names: tuple[str, ...] | None = None
    oversample: bool = False  # class-balanced epochs in full-shot training (Flowers-102, COVIDx)
    pipeline: str = "finetune"  # the prepared-data pipeline that trains it (xferscale.data.transforms)
    crop: int | None = None  # a fixed training/test resolution instead of the rule's
    augmentation: Augmentation = BIT_AUGMENTATION


# Targets the paper's code fine-tuned through its X-ray pipeline at a fixed 224 px instead of
# BiT's resize/crop/flip: configs/finetune/padchest.yaml (augmentation type "chexpert",
# cohen_chexpert_aug, image_size 224), which PadChest-Cl is made from.
XRAY_TARGETS: dict[str, int] = {"padchest_cl": 224, "padchest": 224}


class Target(Protocol):
    spec: TargetSpec

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data (enters each run's configuration hash)."""

    def train_size(self, shots: Shots, seed: int) -> int:
        """Training examples of a run (the few-shot subset's size for a few-shot run)."""

    def fewshot_problem(self, shots: Shots, seed: int) -> str | None:
        """Why this many shots cannot be drawn (a class with fewer examples), or None."""

    def train_batches(self, shots: Shots, seed: int, rule: HyperRule, device: torch.device) -> Any:
        """Batches of augmented training images (precrop resize, random crop, flip)."""

    def test_batches(self, rule: HyperRule, batch_size: int, device: torch.device) -> Any:
        """Batches of the whole test split, resized to the crop size, in a fixed order."""

    def train_eval_batches(self, shots: Shots, seed: int, rule: HyperRule, batch_size: int,
                           device: torch.device) -> Any:
        """The run's training examples at the test transform, once each, in a fixed order
        (the linear probe's features)."""


def normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    """BiT's input normalisation: (x/255 - 0.5) / 0.5."""
    return images_uint8.float().div_(127.5).sub_(1.0)


def augment_train(images: torch.Tensor, precrop: int, crop: int, generator: torch.Generator,
                  policy: Augmentation = BIT_AUGMENTATION) -> torch.Tensor:
    """A training transform on a uint8 batch; by default the paper's code's (shorter side to
    precrop, aspect ratio kept, random crop, random flip), else as ``policy`` says."""
    if policy.precrop:
        size = shorter_side_size(*images.shape[-2:], precrop)
        x = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    else:
        x = F.interpolate(images.float(), size=(crop, crop), mode="bilinear", align_corners=False, antialias=True)
        pad = round(policy.shift * crop)
        x = F.pad(x, (pad, pad, pad, pad), mode="replicate") if pad else x
    height, width = x.shape[-2:]
    n = len(x)
    tops = torch.randint(0, height - crop + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(0, width - crop + 1, (n,), generator=generator).tolist()
    flips = torch.rand(n, generator=generator) < 0.5  # drawn either way: the other draws stay put
    out = torch.stack([x[i, :, t : t + crop, l : l + crop] for i, (t, l) in enumerate(zip(tops, lefts))])
    if policy.flip:
        out = torch.where(flips.view(-1, 1, 1, 1), out.flip(-1), out)
    return out.div_(127.5).sub_(1.0)


def resize_eval(images: torch.Tensor, crop: int) -> torch.Tensor:
    x = F.interpolate(images.float(), size=(crop, crop), mode="bilinear", align_corners=False, antialias=True)
    return x.div_(127.5).sub_(1.0)


class TensorBatches:
    """:class:`Batches` over uint8 images in memory; every epoch a pure function of (seed, epoch).

    Training keeps the last partial batch (as BiT's loader, ``drop_last=False``). A training
    set smaller than one batch (a few-shot subset) gives epochs of one full batch drawn with
    replacement, so every step sees ``batch_size`` images. The paper's code (``finetune.py:183-206``)
    draws with replacement only below its micro-batch (batch / ``batch_split``) and cycles
    larger sets without replacement (``docs/fidelity.md``, "Few-shot batch").
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, *, batch_size: int, device: torch.device,
                 rule: HyperRule, train: bool, seed: int = 0, oversample: bool = False, task: str = "multiclass",
                 num_classes: int | None = None, augmentation: Augmentation = BIT_AUGMENTATION):
        self.images, self.targets = images, targets
        self.batch_size, self.device, self.rule = batch_size, device, rule
        self.train, self.seed, self.oversample = train, seed, oversample and targets.ndim == 1
        self.task, self.num_classes, self.augmentation = task, num_classes, augmentation
        self.with_replacement = train and len(images) < batch_size
        self.num_samples = batch_size if self.with_replacement else len(images)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.train:
            return np.arange(self.num_samples)
        if self.with_replacement:
            return np.random.default_rng([self.seed, epoch, 2]).integers(0, len(self.images), self.batch_size)
        if self.oversample:
            return balanced_order(self.targets.numpy(), self.seed, epoch)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.from_numpy(self._order(epoch))
        for b in range(start_batch, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            raw = self.images[idx]
            if self.train:
                gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch, b]).generate_state(1)[0]))
                x = augment_train(raw, self.rule.precrop, self.rule.crop, gen, self.augmentation)
            else:
                x = resize_eval(raw, self.rule.crop)
            yield x.to(self.device, non_blocking=True), self.targets[idx].to(self.device, non_blocking=True)


@dataclass
class TensorTarget:
    """A target whose train and test images (uint8 N x C x H x W) are held in memory."""

    spec: TargetSpec
    train_images: torch.Tensor
    train_targets: torch.Tensor  # int64 (N,) or float32 (N, C) with 1/0/-1
    test_images: torch.Tensor
    test_targets: torch.Tensor
    origin: str = "in-memory tensors"

    def __post_init__(self) -> None:
        for split, images, targets in (("train", self.train_images, self.train_targets),
                                       ("test", self.test_images, self.test_targets)):
            if images.dtype != torch.uint8 or images.ndim != 4:
                raise TargetError(f"{self.spec.name} {split}: images must be uint8 N x C x H x W, "
                                  f"got {images.dtype} {tuple(images.shape)}")
            if len(images) != len(targets):
                raise TargetError(f"{self.spec.name} {split}: {len(images)} images but {len(targets)} targets")

    def fingerprint(self) -> dict[str, Any]:
        digest = torch.cat([self.train_images.flatten()[:4096].long(), self.train_targets.flatten()[:4096].long()])
        return {"name": self.spec.name, "origin": self.origin, "train": len(self.train_images),
                "test": len(self.test_images), "checksum": int(digest.sum()), "spec": dataclasses.asdict(self.spec)}

    def _subset(self, shots: Shots, seed: int) -> np.ndarray:
        if shots == FULL:
            return np.arange(len(self.train_images))
        try:
            return fewshot_indices(self.train_targets.numpy(), int(shots), seed,
                                   list(self.spec.label_names) if self.spec.label_names else None)
        except ValueError as err:
            raise TargetError(f"{self.spec.name}: {err}") from err

    def train_size(self, shots: Shots, seed: int) -> int:
        return len(self._subset(shots, seed))

    def fewshot_problem(self, shots: Shots, seed: int) -> str | None:
        try:
            self._subset(shots, seed)
        except TargetError as err:
            return str(err)
        return None

    def train_batches(self, shots: Shots, seed: int, rule: HyperRule, device: torch.device) -> TensorBatches:
        idx = torch.from_numpy(self._subset(shots, seed))
        return TensorBatches(self.train_images[idx], self.train_targets[idx], batch_size=rule.batch_size,
                             device=device, rule=rule, train=True, seed=seed,
                             oversample=self.spec.oversample and shots == FULL, task=self.spec.task,
                             num_classes=self.spec.num_classes, augmentation=self.spec.augmentation)

    def test_batches(self, rule: HyperRule, batch_size: int, device: torch.device) -> TensorBatches:
        return TensorBatches(self.test_images, self.test_targets, batch_size=batch_size, device=device, rule=rule,
                             train=False, task=self.spec.task, num_classes=self.spec.num_classes)

    def train_eval_batches(self, shots: Shots, seed: int, rule: HyperRule, batch_size: int,
                           device: torch.device) -> TensorBatches:
        idx = torch.from_numpy(self._subset(shots, seed))
        return TensorBatches(self.train_images[idx], self.train_targets[idx], batch_size=batch_size, device=device,
                             rule=rule, train=False, task=self.spec.task, num_classes=self.spec.num_classes)


def digits_target(test_fraction: float = 0.3) -> TensorTarget:
    """scikit-learn's handwritten digits (1797 real 8x8 images, 10 classes), split stratified.

    Pixel values 0..16 are scaled to 0..255 and the grey channel repeated to RGB; the
    split is fixed (``random_state=0``) so every run of every seed sees the same test set.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None].repeat(3, axis=1)
    x_tr, x_te, y_tr, y_te = train_test_split(images, digits.target, test_size=test_fraction,
                                              stratify=digits.target, random_state=0)
    # no flip (a mirrored digit is another glyph or none) and training at the test scale:
    # the rule's 160 -> 128 precrop trains on digits 1.25x larger than they are tested at
    spec = TargetSpec("digits", "multiclass", 10, "acc", (8, 8), tuple(str(i) for i in range(10)),
                      augmentation=DIGITS_AUGMENTATION)
    return TensorTarget(spec, torch.from_numpy(x_tr), torch.from_numpy(y_tr).long(),
                        torch.from_numpy(x_te), torch.from_numpy(y_te).long(), origin="sklearn.datasets.load_digits")


class PreparedTarget:
    """A dataset folder written by ``xferscale prepare``, read through ``build_loader``.

    Few-shot subsets, class-balanced oversampling and the precrop/crop resolution are
    asked of the loader through ``DataConfig`` (``fewshot``, ``fewshot_seed``,
    ``oversample``, ``precrop``, ``image_size`` with ``pipeline="finetune"``).
    """

    NEEDED_FIELDS = ("fewshot", "fewshot_seed", "oversample", "precrop")

    def __init__(self, name: str, path: str | Path, *, backend: str = "torch", workers: int = 4,
                 image_size: tuple[int, int] | None = None):
        self.path = Path(path)
        if not (self.path / "dataset.json").is_file():
            from xferscale.data.converters import prepare_command
            raise TargetError(f"target {name!r}: {self.path} is not a prepared dataset (no dataset.json); "
                              f"make it with `{prepare_command(name, str(self.path))}`")
        try:
            from xferscale.data.manifest import load_dataset_info
        except ImportError as err:
            raise TargetError(f"target {name!r}: the prepared-dataset reader is not installed ({err})") from err
        from xferscale.config import DataConfig

        missing = [f for f in self.NEEDED_FIELDS if f not in {x.name for x in dataclasses.fields(DataConfig)}]
        if missing:
            raise TargetError(f"target {name!r}: this installation's data loader lacks few-shot/fine-tune support "
                              f"(DataConfig has no {', '.join(missing)})")
        try:
            info = load_dataset_info(self.path)
        except ValueError as err:  # PrepareError: a folder from another version, a broken dataset.json
            raise TargetError(f"target {name!r}: {err}") from err
        size = image_size or KNOWN_IMAGE_SIZES.get(name)
        if size is None:
            raise TargetError(f"target {name!r}: original image size unknown; pass --image-size H W")
        self.info, self.backend, self.workers = info, backend, workers
        self._train_rows = None
        xray_crop = XRAY_TARGETS.get(name)
        self.spec = TargetSpec(name, info.spec.task, info.spec.num_classes,
                               target_metric(name, "acc" if info.spec.task == "multiclass" else "auc"),
                               tuple(size), tuple(info.spec.classes), uses_oversampling(name),
                               pipeline="xray" if xray_crop else "finetune", crop=xray_crop)

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.spec.name, "path": str(self.path.resolve()),
                "dataset_json_mtime": (self.path / "dataset.json").stat().st_mtime,
                "spec": dataclasses.asdict(self.spec)}

    def _config(self, split: str, shots: Shots, seed: int, rule: HyperRule, train: bool):
        from xferscale.config import DataConfig

        return DataConfig(source="prepared", path=str(self.path), split=split, backend=self.backend,
                          pipeline=self.spec.pipeline, image_size=rule.crop,
                          precrop=rule.precrop if self.spec.pipeline == "finetune" else None,
                          workers=self.workers, fewshot=None if shots == FULL else int(shots), fewshot_seed=seed,
                          oversample=train and self.spec.oversample and shots == FULL)

    def _loader(self, cfg, batch_size: int, train: bool, seed: int, device: torch.device):
        from xferscale.data.loader import build_loader

        return build_loader(cfg, batch_size=batch_size, rank=0, world_size=1, device=device, train=train,
                            seed=seed, num_classes=self.spec.num_classes, multilabel=self.spec.task == "multilabel")

    def train_size(self, shots: Shots, seed: int) -> int:
        if shots == FULL:
            return self.info.split("train").count
        return int(shots) * self.spec.num_classes

    def fewshot_problem(self, shots: Shots, seed: int) -> str | None:
        if shots == FULL:
            return None
        from xferscale.data.fewshot import fewshot_keys

        if self._train_rows is None:
            self._train_rows = self.info.manifest("train")
        try:
            fewshot_keys(self._train_rows, int(shots), seed, task=self.spec.task, classes=self.spec.label_names)
        except ValueError as err:
            return f"{self.spec.name} train: {err}"
        return None

    def train_batches(self, shots: Shots, seed: int, rule: HyperRule, device: torch.device):
        # A set smaller than one batch gives one full batch drawn with replacement per epoch.
        return self._loader(self._config("train", shots, seed, rule, True), rule.batch_size, True, seed, device)

    def test_batches(self, rule: HyperRule, batch_size: int, device: torch.device):
        return self._loader(self._config("test", FULL, 0, rule, False), batch_size, False, 0, device)

    def train_eval_batches(self, shots: Shots, seed: int, rule: HyperRule, batch_size: int, device: torch.device):
        return self._loader(self._config("train", shots, seed, rule, False), batch_size, False, seed, device)
