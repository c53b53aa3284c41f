"""A formula-driven pre-training source: rendered stroke glyphs, fresh samples every epoch.

Formula-driven supervised pre-training (Kataoka et al., "Pre-training without Natural
Images", ACCV 2020) trains on images made by a formula, labelled by the formula's
parameters. Here each class is a glyph: a few quadratic Bezier strokes with control points
drawn once from the seed. A sample is its class's glyph under a random affine map (rotation,
scale, shear, shift), control-point jitter and stroke width, rasterised anti-aliased as
white ink on black, like a handwritten character. What a network learns to tell the
classes apart (oriented strokes, curves, junctions, their layout) is what a digit is made
of, so the features transfer to handwriting, which random noise patterns do not.

No sample repeats: batch ``b`` of epoch ``e`` is a pure function of ``(seed, e, b)``, drawn
for the whole global batch, of which each rank keeps its slice. The training loss is
therefore a held-out loss, every epoch is new data, and a resume or any number of ranks
sees exactly the batches of an uninterrupted single-process run.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from xferscale.config import ConfigError

CURVE_POINTS = 8  # points per rendered Bezier curve (7 line segments)


@dataclass(frozen=True)
class GlyphStyle:
    """The ranges of a sample's random variation (unit square coordinates)."""

    strokes: tuple[int, int] = (2, 4)  # strokes per glyph, inclusive
    rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.8, 1.1)
    shear: float = 0.15
    shift: float = 0.08
    jitter: float = 0.03  # per control point
    width: tuple[float, float] = (0.05, 0.09)  # stroke half-width
    ink: tuple[float, float] = (0.75, 1.0)


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return torch.rand(shape, generator=gen) * (high - low) + low


def glyph_prototypes(num_classes: int, seed: int, style: GlyphStyle = GlyphStyle()) -> tuple[torch.Tensor, torch.Tensor]:
    """Control points ``(classes, max_strokes, 3, 2)`` in [0.15, 0.85] and a stroke mask."""
    gen = torch.Generator().manual_seed(seed)
    low, high = style.strokes
    points = _uniform(gen, (num_classes, high, 3, 2), 0.15, 0.85)
    counts = torch.randint(low, high + 1, (num_classes,), generator=gen)
    mask = torch.arange(high)[None, :] < counts[:, None]
    return points, mask


def _bezier(points: torch.Tensor) -> torch.Tensor:
    """Quadratic Bezier curves ``(..., 3, 2)`` -> polylines ``(..., CURVE_POINTS, 2)``."""
    t = torch.linspace(0, 1, CURVE_POINTS).view(-1, 1)
    p0, p1, p2 = points[..., 0:1, :], points[..., 1:2, :], points[..., 2:3, :]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def render_glyphs(points: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, image_size: int,
                  gen: torch.Generator, style: GlyphStyle = GlyphStyle()) -> torch.Tensor:
    """One random rendering of each label's glyph: float ``(N, 3, S, S)`` in BiT's [-1, 1]."""
    n = len(labels)
    pts = points[labels] + torch.randn(points[labels].shape, generator=gen) * style.jitter  # (N, K, 3, 2)
    angle = _uniform(gen, (n,), -1, 1) * math.radians(style.rotation_deg)
    scale = _uniform(gen, (n,), *style.scale)
    shear = _uniform(gen, (n,), -style.shear, style.shear)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    affine = torch.stack([torch.stack([cos, -sin + shear * cos], -1), torch.stack([sin, cos + shear * sin], -1)], -2)
    shift = _uniform(gen, (n, 2), -style.shift, style.shift)
    pts = torch.einsum("nij,nksj->nksi", affine, pts - 0.5) + 0.5 + shift[:, None, None, :]
    line = _bezier(pts)  # (N, K, P, 2)
    a, b = line[:, :, :-1].flatten(1, 2), line[:, :, 1:].flatten(1, 2)  # segment ends (N, M, 2)
    live = mask[labels].repeat_interleave(CURVE_POINTS - 1, dim=1)  # (N, M)

    coords = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    pix = torch.stack([xx, yy], -1).view(1, 1, -1, 2)  # (1, 1, S*S, 2)
    ab = (b - a)[:, :, None, :]
    t = (((pix - a[:, :, None, :]) * ab).sum(-1) / ab.pow(2).sum(-1).clamp_min(1e-8)).clamp(0, 1)
    dist = (pix - (a[:, :, None, :] + t[..., None] * ab)).norm(dim=-1)  # (N, M, S*S)
    dist = dist.masked_fill(~live[:, :, None], float("inf")).amin(1)
    width = _uniform(gen, (n, 1), *style.width)
    ink = ((width - dist) * image_size + 0.5).clamp(0, 1) * _uniform(gen, (n, 1), *style.ink)
    grey = ink.view(n, 1, image_size, image_size)
    return (grey * 2 - 1).expand(n, 3, image_size, image_size).contiguous()


class StrokeGlyphBatches:
    """:class:`~xferscale.data.loader.Batches` of freshly rendered glyphs (multiclass)."""

    task = "multiclass"

    def __init__(self, *, num_samples: int, image_size: int, num_classes: int, batch_size: int, rank: int,
                 world_size: int, device: torch.device, seed: int = 0, shuffle: bool = True):
        self.global_batch = batch_size * world_size
        if num_samples < self.global_batch:
            raise ConfigError(f"data.synthetic_samples={num_samples} is smaller than one global batch "
                              f"({self.global_batch}); raise it or lower train.global_batch")
        self.num_samples, self.num_classes, self.image_size = num_samples, num_classes, image_size
        self.batch_size, self.rank, self.device, self.seed = batch_size, rank, device, seed
        # shuffle=False (evaluation): the same samples every epoch, a fixed held-out set
        self.fresh = shuffle
        self.points, self.mask = glyph_prototypes(num_classes, seed)

    def __len__(self) -> int:
        return self.num_samples // self.global_batch

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of global batch ``index`` of ``epoch``."""
        state = np.random.SeedSequence([self.seed, int(self.fresh), epoch if self.fresh else 0, index]).generate_state(1)[0]
        gen = torch.Generator().manual_seed(int(state))
        labels = torch.randint(self.num_classes, (self.global_batch,), generator=gen)
        images = render_glyphs(self.points, self.mask, labels, self.image_size, gen)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return images[mine], labels[mine]

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in range(start_batch, len(self)):
            images, labels = self.batch(epoch, b)
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
