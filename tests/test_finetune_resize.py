"""Fine-tuning resize as the paper's code (``datasets/builder.py:197-204``): training resizes the
shorter side to precrop keeping the aspect ratio, then crops at random; testing squashes to
(crop, crop). Checked on a non-square checkerboard of square cells: a kept aspect ratio keeps
the cells square, a squash makes them twice as tall as wide. And the X-ray affine is bilinear."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from xferscale.config import DataConfig
from xferscale.data import transforms as T
from xferscale.data.loader import build_loader
from xferscale.data.records import DatasetSpec, Reconciliation, Sample
from xferscale.data.writer import write_dataset
from xferscale.hyperrule import HyperRule
from xferscale.transfer.targets import BIT_AUGMENTATION, DIGITS_AUGMENTATION, TensorBatches, augment_train

CELL, HEIGHT, WIDTH = 12, 60, 120  # 5 x 10 square cells
CROP, PRECROP = 32, 40


def checkerboard() -> np.ndarray:
    rows, cols = np.indices((HEIGHT, WIDTH)) // CELL
    return np.where((rows + cols) % 2 == 0, 230, 25).astype(np.uint8)


def cell_aspect(images: torch.Tensor) -> float:
    """Mean vertical run length over mean horizontal run length of the light/dark cells
    (1 when the cells are square, 2 when squashed to half their width)."""
    light = images[:, 0] > 0

    def runs(axis: int) -> float:
        changes = (light.diff(dim=axis) != 0).sum().item()
        return light.numel() / max(changes, 1)

    return runs(1) / runs(2)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A prepared folder of four copies of the board (PNG, lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(checkerboard()).convert("RGB").save(buffer, "PNG")
    samples = [Sample(f"board{i}.png", "train", buffer.getvalue(), (i % 2,), "board") for i in range(4)]
    out = tmp_path_factory.mktemp("board") / "ds"
    write_dataset(DatasetSpec("board", "multiclass", ("a", "b")), samples, out, Reconciliation(),
                  shard_size=4, progress=False)
    return out


def batches(path, backend: str, train: bool):
    cfg = DataConfig(source="prepared", path=str(path), backend=backend, pipeline="finetune",
                     image_size=CROP, precrop=PRECROP, workers=0)
    loader = build_loader(cfg, batch_size=4, rank=0, world_size=1, device="cpu", train=train, seed=3,
                          num_classes=2)
    return torch.cat([images for images, _ in loader.epoch(0)])


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_training_keeps_the_aspect_ratio_and_testing_squashes(board, backend):
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    train = batches(board, backend, train=True)
    assert train.shape == (4, 3, CROP, CROP)
    assert cell_aspect(train) == pytest.approx(1.0, rel=0.25)  # 60x120 -> 40x80: cells stay 8x8
    test = batches(board, backend, train=False)
    assert test.shape == (4, 3, CROP, CROP)
    assert cell_aspect(test) == pytest.approx(2.0, rel=0.25)  # 60x120 -> 32x32: cells 3.2 wide, 6.4 tall


def test_shorter_side_size_as_torchvision():
    assert T.shorter_side_size(60, 120, 40) == (40, 80)
    assert T.shorter_side_size(500, 375, 512) == (682, 512)  # int(512 * 500 / 375) = 682
    assert T.shorter_side_size(32, 32, 160) == (160, 160)


def test_in_memory_targets_keep_the_aspect_ratio():
    images = torch.from_numpy(checkerboard())[None, None].expand(4, 3, HEIGHT, WIDTH).contiguous()
    out = augment_train(images, PRECROP, CROP, torch.Generator().manual_seed(0), BIT_AUGMENTATION)
    assert out.shape == (4, 3, CROP, CROP)
    assert cell_aspect(out) == pytest.approx(1.0, rel=0.25)
    rule = HyperRule(train_size=4, image_size=(HEIGHT, WIDTH), precrop=PRECROP, crop=CROP, boundaries=(1, 2),
                     mixup_alpha=0.0, batch_size=4)
    test = torch.cat([x for x, _ in TensorBatches(images, torch.zeros(4, dtype=torch.long), batch_size=4,
                                                   device=torch.device("cpu"), rule=rule, train=False).epoch(0)])
    assert cell_aspect(test) == pytest.approx(2.0, rel=0.25)


def test_digits_policy_is_unchanged():
    """The digits demo trains at the test scale with a small shift (no precrop, no flip)."""
    images = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).expand(2, 3, 8, 8).contiguous()
    out = augment_train(images, 160, 16, torch.Generator().manual_seed(0), DIGITS_AUGMENTATION)
    assert out.shape == (2, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(images.float(), size=(16, 16), mode="bilinear", align_corners=False,
                                        antialias=True)
    x = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    tops = torch.randint(0, 5, (2,), generator=gen).tolist()
    lefts = torch.randint(0, 5, (2,), generator=gen).tolist()
    expected = torch.stack([x[i, :, t:t + 16, l:l + 16] for i, (t, l) in enumerate(zip(tops, lefts))])
    assert torch.allclose(out, expected / 127.5 - 1.0)


def test_xray_affine_interpolates_bilinearly():
    """A two-level image rotated by the X-ray pipeline: nearest neighbour would keep two levels
    (and the 0 fill); bilinear interpolation, as albumentations and DALI, blends them."""
    torch.manual_seed(0)
    board = torch.from_numpy(np.kron(np.indices((4, 4)).sum(0) % 2, np.ones((8, 8)))).to(torch.uint8) * 255
    image = board[None].expand(3, CROP, CROP).contiguous()
    out = T.build_transform("xray", CROP)(image)
    assert out.shape == (3, CROP, CROP)
    levels = torch.unique(out[0])
    assert len(levels) > 8, levels
