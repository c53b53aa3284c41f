import functools
from pathlib import Path

import pytest
import torch

from xferscale.config import ConfigError, builtin_configs, load_config, parse_overrides
from xferscale.models import build_model, head_of

PAPER_RUNS = [f"{m}_{s}" for m in ("r50x1", "r152x4")
              for s in ("in1k", "in21k", "chexpert", "chexpert_mimic", "chexpert_mimic_nih", "chexpert_mimic_nih_padchest")]
PARAMS_M = {"r50x1": 25.5, "r152x4": 936.5}


def test_every_paper_run_has_a_config():
    assert set(PAPER_RUNS) <= set(builtin_configs())


@pytest.mark.parametrize("name", PAPER_RUNS)
def test_paper_config_loads_and_builds(name):
    cfg = load_config(name, require_data=False)
    medical = "chexpert" in name
    assert cfg.name == name and cfg.train.precision == "amp_fp16" and cfg.optim.nesterov  # the paper's code
    if medical:  # the paper's code: 16 per GPU on 64 GPUs, warm-up 15 epochs
        assert cfg.train.global_batch == 1024 and cfg.schedule.warmup_epochs == 15 and cfg.schedule.warmup_steps is None
    elif name.endswith("in1k"):  # the text's batch; the code's recipe (imagenet1k_bit*_optimized.yaml): 15 warm-up epochs
        assert cfg.train.global_batch == 4096 and cfg.schedule.warmup_epochs == 15 and cfg.schedule.warmup_steps is None
    else:  # the paper's text
        assert cfg.train.global_batch == 4096 and cfg.schedule.warmup_steps == 5000
    if name.endswith("in21k"):
        assert cfg.model.num_classes is None  # read from the prepared release
    assert cfg.train.loss == ("sigmoid_bce" if medical else "softmax_ce")
    assert cfg.optim.base_lr == (0.03 if name.endswith("in1k") else 0.01)
    assert cfg.schedule.kind == ("cosine" if name.endswith("in1k") else "step")
    with torch.device("meta"):  # the full architecture, without allocating its weights
        model = build_model(cfg.model.name, cfg.model.num_classes or 7)
    assert head_of(model).out_channels == (cfg.model.num_classes or 7)
    assert _params_m_with_1000_classes(cfg.model.name) == pytest.approx(PARAMS_M[cfg.model.name], rel=0.01)


@functools.cache
def _params_m_with_1000_classes(name: str) -> float:
    """The published parameter counts are for a 1000-class head."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(name, 1000).parameters()) / 1e6


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("modle:\n  name: tiny\n", "unknown key 'modle' (did you mean 'model'?)"),
    ("train:\n  global_bach: 8\n", "unknown key 'train.global_bach' (did you mean 'global_batch'?)"),
    ("train:\n  global_batch: eight\n", "train.global_batch: expected int, got str 'eight'"),
    ("train:\n  global_batch: true\n", "train.global_batch: expected int"),
    ("train:\n  precision: fp64\n", "train.precision: 'fp64' is not one of 'fp32', 'tf32', 'amp_fp16', 'amp_bf16'"),
    ("model: r50x1\n", "model: expected a mapping"),
    ("schedule:\n  milestones: [60, 30]\n", "schedule.milestones: must be increasing"),
    ("data:\n  source: prepared\n", "data.path: required"),
    ("data:\n  source: prepared\n  path: /no/such/dataset\n", "data.path: dataset folder /no/such/dataset does not exist"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("train: [\n", "not valid YAML"),
])
def test_bad_config_names_file_and_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_overrides_are_typed_and_checked(tmp_path):
    cfg = load_config(None, ["train.seed=7", "optim.base_lr=1e-3", "schedule.milestones=[1, 2]", "model.name=r50x1"])
    assert (cfg.train.seed, cfg.optim.base_lr, cfg.schedule.milestones, cfg.model.name) == (7, 1e-3, [1.0, 2.0], "r50x1")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["train.seed"])
    with pytest.raises(ConfigError, match="unknown key 'train.sed'"):
        load_config(None, ["train.sed=1"])
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.yaml does not exist"):
        load_config(str(tmp_path / "nope.yaml"))
