"""The formula-driven stroke-glyph source: fresh, deterministic, the same on any number of ranks."""
from __future__ import annotations

import pytest
import torch

from xferscale.config import ConfigError, DataConfig, load_config
from xferscale.data.loader import build_loader
from xferscale.data.strokes import StrokeGlyphBatches

CPU = torch.device("cpu")


def glyphs(**kw) -> StrokeGlyphBatches:
    args = dict(num_samples=64, image_size=16, num_classes=8, batch_size=16, rank=0, world_size=1, device=CPU, seed=3)
    return StrokeGlyphBatches(**{**args, **kw})


def test_images_are_white_strokes_on_black_in_bits_range():
    images, labels = glyphs().batch(0, 0)
    assert images.shape == (16, 3, 16, 16) and labels.shape == (16,)
    assert images.min() == -1 and images.max() > 0.4
    ink = (images[:, 0] > 0).float().mean((1, 2))
    assert (ink > 0.03).all() and (ink < 0.6).all()  # every glyph drawn, none a filled square
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])


def test_every_epoch_is_new_data_but_a_pure_function_of_seed_epoch_batch():
    a, b = glyphs(), glyphs()
    assert torch.equal(a.batch(2, 1)[0], b.batch(2, 1)[0])
    assert not torch.equal(a.batch(0, 1)[0], a.batch(1, 1)[0])
    assert not torch.equal(a.batch(0, 0)[0], glyphs(seed=4).batch(0, 0)[0])
    resumed = list(a.epoch(1, start_batch=2))
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(resumed, list(b.epoch(1))[2:]))


def test_evaluation_batches_are_a_fixed_held_out_set():
    held = glyphs(shuffle=False)
    assert torch.equal(held.batch(0, 0)[0], held.batch(5, 0)[0])
    assert not torch.equal(held.batch(0, 0)[0], glyphs().batch(0, 0)[0])


def test_ranks_take_slices_of_the_single_process_global_batch():
    whole = glyphs(batch_size=16)
    images, labels = whole.batch(1, 0)
    for rank in range(2):
        part = glyphs(batch_size=8, world_size=2, rank=rank)
        x, y = part.batch(1, 0)
        assert torch.equal(x, images[rank * 8 : rank * 8 + 8]) and torch.equal(y, labels[rank * 8 : rank * 8 + 8])


def test_a_sample_varies_around_its_class_glyph():
    source = glyphs(num_classes=4, batch_size=256, num_samples=512)
    images, labels = source.batch(0, 0)
    means = torch.stack([images[labels == c].mean(0) for c in range(4)])
    fresh, truth = source.batch(1, 0)  # samples never seen: the class mean still tells them apart
    nearest = ((fresh[:, None] - means[None]) ** 2).flatten(2).sum(-1).argmin(1)
    assert (nearest == truth).float().mean() > 0.8
    same_class = images[labels == 0]
    assert (same_class[0] - same_class[1]).abs().max() > 0.5  # but no two samples are the same image


def test_default_config_is_the_glyph_source_and_the_loader_builds_it():
    cfg = load_config(None, [])
    assert (cfg.data.source, cfg.data.image_size, cfg.model.num_classes) == ("strokes", 16, 128)
    loader = build_loader(DataConfig(source="strokes", image_size=16, synthetic_samples=32), batch_size=8, rank=0,
                          world_size=1, device=CPU, train=True, seed=0, num_classes=5)
    assert len(loader) == 4 and next(iter(loader.epoch(0)))[1].max() < 5
    with pytest.raises(ConfigError, match="single-label"):
        build_loader(DataConfig(source="strokes"), batch_size=8, rank=0, world_size=1, device=CPU, train=True,
                     seed=0, num_classes=5, multilabel=True)
    with pytest.raises(ConfigError, match="model.num_classes: required with the strokes data source"):
        load_config(None, ["model.num_classes=null"])
