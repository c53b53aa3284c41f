"""Typed experiment configuration: YAML files validated against dataclasses.

Every key is checked on load: an unknown or mistyped key, a value of the wrong type, a
value outside its choices or a missing dataset path raises :class:`ConfigError` naming the
file and the dotted key. ``key.sub=value`` overrides from the command line go through the
same checks.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

Precision = Literal["fp32", "tf32", "amp_fp16", "amp_bf16"]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and key."""


@dataclass
class ModelConfig:
    name: Literal["tiny", "r50x1", "r152x4"] = "tiny"
    num_classes: Optional[int] = 128  # null: take it from the prepared dataset
    channels_last: bool = False
    compile: bool = False


@dataclass
class DataConfig:
    # the embedded default: formula-driven stroke glyphs (xferscale.data.strokes); "synthetic"
    # is fixed noise patterns (throughput runs); "prepared" a folder of `xferscale prepare`
    source: Literal["synthetic", "strokes", "prepared"] = "strokes"
    path: Optional[str] = None  # prepared dataset folder (xferscale prepare --out)
    split: str = "train"
    val_split: str = "val"  # the held-out split of the same folder validated on (train.validate)
    backend: Literal["dali", "torch"] = "torch"
    pipeline: Literal["natural", "natural_randaugment", "xray", "eval", "finetune"] = "natural"
    image_size: int = 16
    workers: int = 2
    prefetch: int = 2
    on_corrupt: Literal["error", "skip"] = "error"
    synthetic_samples: int = 1024  # images per epoch of the synthetic and strokes sources
    val_samples: int = 128  # the strokes source's fixed held-out glyphs that train.validate evaluates
    precrop: Optional[int] = None  # finetune pipeline: resize side before the random crop (None: BiT pair)
    fewshot: Optional[int] = None  # train on this many examples per class (prepared data)
    fewshot_seed: int = 0  # which few-shot subset
    oversample: bool = False  # class-balanced epochs (multiclass prepared data, training only)


@dataclass
class OptimConfig:
    base_lr: float = 0.4  # scaled by global_batch / 256
    momentum: float = 0.9
    nesterov: bool = True  # the paper's code uses Nesterov momentum throughout
    weight_decay: float = 1e-4
    agc_clip: float = 0.01  # 0 disables adaptive gradient clipping
    agc_eps: float = 1e-3
    foreach: bool = True  # batched (foreach) AGC and SGD kernels
    fused: bool = False  # fused SGD kernel (one kernel for all parameters)


@dataclass
class ScheduleConfig:
    kind: Literal["step", "cosine", "constant"] = "cosine"
    warmup_steps: Optional[int] = 20  # linear warm-up, in steps ...
    warmup_epochs: Optional[float] = None  # ... or in epochs of the dataset (set one; null the other)
    epochs: float = 32
    # Step decays (/10) at these epochs of a `milestone_base`-epoch run, scaled to `epochs`.
    milestones: list[float] = field(default_factory=lambda: [30.0, 60.0, 80.0])
    milestone_base: float = 90


@dataclass
class TrainConfig:
    global_batch: int = 32
    precision: Precision = "fp32"
    loss: Literal["softmax_ce", "sigmoid_bce"] = "softmax_ce"
    seed: int = 0
    max_steps: Optional[int] = None  # stop early (benchmarks, smoke runs)
    log_every: int = 10  # steps between host syncs for loss/metrics
    stop_check_seconds: float = 5.0  # a stop signal is acted on within about this long
    checkpoint_every: int = 100  # steps; a checkpoint is also written at each epoch end
    warmup_exclude: int = 5  # steps excluded from throughput
    progress: bool = True
    # Validate after every epoch and keep best.pt, the lowest validation loss (the paper's code,
    # `logging.validate`). null: where the source has a held-out set (strokes, prepared), not on
    # the synthetic source, whose evaluation samples are its training samples.
    validate: Optional[bool] = None


@dataclass
class DistributedConfig:
    backend: Literal["auto", "ddp", "horovod", "none"] = "auto"
    bucket_cap_mb: int = 25
    static_graph: bool = False


@dataclass
class ExperimentConfig:
    name: str = "default"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    output_dir: str = "runs/default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def validates(self) -> bool:
        """Whether the run validates after each epoch (``train.validate``, null resolved by the source)."""
        if self.train.validate is not None:
            return self.train.validate
        return self.data.source != "synthetic"


# ---------------------------------------------------------------------------------------
# Building dataclasses from plain data, with errors that name the key.


def _check_value(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(hint, value, where)
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(map(repr, typing.get_args(hint)))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_value(value, inner, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" as a string
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {path!r}{hint}; known keys: {', '.join(known)}")
        kwargs[key] = _check_value(value, hints[key], path)
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.seed=3", "model.name=r50x1"]`` -> nested dict, values parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.seed=1")
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        try:
            node[leaf] = parse_yaml(raw) if raw else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: not valid YAML: {yaml_problem(err)}") from None
    return nested


# A config is a few kB; the bound and the refusal of aliases keep a hostile file from
# expanding into gigabytes (nested aliases: the "billion laughs").
MAX_CONFIG_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.safe_load`` without aliases (``*name``): every value is written out where it is used."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} refused (a config repeats no "
                                                          "node by reference; write the value out)", event.start_mark)
        return super().compose_node(parent, index)


def parse_yaml(text: str) -> Any:
    """Plain YAML data (mappings, lists, scalars), aliases refused."""
    return yaml.load(text, Loader=_NoAliasLoader)


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line:column) and what."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None and err.problem:
        mark = err.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {' '.join(err.problem.split())}"
    return " ".join(str(err).split())


def read_yaml_file(path: Path) -> Any:
    """A YAML file of at most :data:`MAX_CONFIG_BYTES`, aliases refused; errors name the file."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read: {err.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB, not a config")
    try:
        return parse_yaml(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(err)}") from None


def builtin_configs() -> dict[str, Path]:
    """The shipped experiment configs by name (``configs/<group>/<name>.yaml``)."""
    root = resources.files("xferscale.configs")
    found = {}
    for group in root.iterdir():
        if group.is_dir():
            for item in group.iterdir():
                if item.name.endswith(".yaml"):
                    found[item.name[: -len(".yaml")]] = Path(str(item))
    return found


def resolve_config_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    shipped = builtin_configs()
    if name_or_path not in shipped:
        close = difflib.get_close_matches(name_or_path, shipped, n=3)
        raise ConfigError(
            f"no config file or shipped config named {name_or_path!r}"
            + (f"; did you mean {', '.join(close)}?" if close else f"; shipped: {', '.join(sorted(shipped))}")
        )
    return shipped[name_or_path]


def load_config(
    name_or_path: str | None = None,
    overrides: list[str] | None = None,
    require_data: bool = True,
) -> ExperimentConfig:
    """Load and validate a config (a file path or a shipped name) with overrides applied."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if name_or_path:
        path = resolve_config_path(name_or_path)
        origin = str(path)
        loaded = read_yaml_file(path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of keys")
        data = loaded
    if overrides:
        try:
            data = _merge(data, parse_overrides(overrides))
        except ConfigError as err:
            raise ConfigError(f"{origin}: {err}") from err
    try:
        cfg = _build(ExperimentConfig, data, "")
        validate(cfg, require_data=require_data)
    except ConfigError as err:
        raise ConfigError(f"{origin}: {err}") from err
    return cfg


def validate(cfg: ExperimentConfig, require_data: bool = True) -> None:
    """Cross-field checks that types alone cannot express."""
    positive = {
        "data.image_size": cfg.data.image_size,
        "train.global_batch": cfg.train.global_batch,
        "train.log_every": cfg.train.log_every,
        "train.checkpoint_every": cfg.train.checkpoint_every,
        "train.stop_check_seconds": cfg.train.stop_check_seconds,
        "schedule.epochs": cfg.schedule.epochs,
        "schedule.milestone_base": cfg.schedule.milestone_base,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")
    if cfg.model.num_classes is not None and cfg.model.num_classes <= 0:
        raise ConfigError(f"model.num_classes: must be > 0 or null, got {cfg.model.num_classes}")
    if cfg.model.num_classes is None and cfg.data.source != "prepared":
        raise ConfigError(f"model.num_classes: required with the {cfg.data.source} data source")
    if cfg.optim.base_lr <= 0:
        raise ConfigError(f"optim.base_lr: must be > 0, got {cfg.optim.base_lr}")
    if cfg.train.max_steps is not None and cfg.train.max_steps <= 0:
        raise ConfigError(f"train.max_steps: must be > 0 or null, got {cfg.train.max_steps}")
    if (cfg.schedule.warmup_steps is None) == (cfg.schedule.warmup_epochs is None):
        raise ConfigError("schedule.warmup_steps / schedule.warmup_epochs: set exactly one of them, the other to null "
                          f"(got {cfg.schedule.warmup_steps} and {cfg.schedule.warmup_epochs})")
    for key, value in (("schedule.warmup_steps", cfg.schedule.warmup_steps),
                       ("schedule.warmup_epochs", cfg.schedule.warmup_epochs)):
        if value is not None and value < 0:
            raise ConfigError(f"{key}: must be >= 0, got {value}")
    if sorted(cfg.schedule.milestones) != cfg.schedule.milestones:
        raise ConfigError(f"schedule.milestones: must be increasing, got {cfg.schedule.milestones}")
    if cfg.data.fewshot is not None and cfg.data.fewshot <= 0:
        raise ConfigError(f"data.fewshot: must be > 0 or null, got {cfg.data.fewshot}")
    if cfg.data.precrop is not None and cfg.data.precrop < cfg.data.image_size:
        raise ConfigError(f"data.precrop: must be >= data.image_size ({cfg.data.image_size}), got {cfg.data.precrop}")
    if cfg.train.validate and cfg.data.source == "synthetic":
        raise ConfigError("train.validate: the synthetic source has no held-out set (its evaluation samples are its "
                          "training samples); set train.validate=false, or use data.source=strokes")
    if cfg.validates and cfg.data.source == "strokes" and cfg.data.val_samples < cfg.train.global_batch:
        raise ConfigError(f"data.val_samples: {cfg.data.val_samples} held-out glyphs are fewer than one global batch "
                          f"({cfg.train.global_batch}); raise it, or set train.validate=false")
    if cfg.validates and cfg.data.source == "prepared" and cfg.data.val_split == cfg.data.split:
        raise ConfigError(f"data.val_split: {cfg.data.val_split!r} is the training split itself; validate on a "
                          "held-out split, or set train.validate=false")
    if cfg.data.source == "prepared":
        if not cfg.data.path:
            raise ConfigError("data.path: required when data.source is 'prepared'")
        if require_data and not Path(cfg.data.path).is_dir():
            raise ConfigError(
                f"data.path: dataset folder {cfg.data.path} does not exist "
                "(make it with `xferscale prepare`, or override data.path=...)"
            )


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
