"""``xferscale report proximity``: how far a source is from a target, beside the transfer gain.

The distance is the Fréchet distance between Gaussians fitted to the two data sets'
features under one backbone (the pre-logit, globally pooled features of a pre-trained
checkpoint), as FID does with Inception features:

    d² = ||mu_s - mu_t||² + Tr(S_s + S_t - 2 (S_s S_t)^½)

Beside it go, from a results folder, the target's full-shot value for the source and the
gains the paper's claim is about: ``model_gain`` (largest minus smallest model pre-trained
on that source) and ``source_gain`` (this source minus a baseline source, e.g. a smaller
one, for the same model). Each call adds or updates its rows in ``proximity.csv`` so that
pairs accumulate; the claim "scale helps less when domains are far apart" then reads as
gains falling as distances grow.
"""
from __future__ import annotations

import argparse
import csv
import io
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from xferscale.report.aggregate import aggregate, full_shot
from xferscale.results import ResultError, load_records, write_text_atomic


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues from
    rounding are clipped to 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Tr((S1 S2)^½) is computed as the sum of square roots of the eigenvalues of the
    symmetric S1^½ S2 S1^½ (the same spectrum), which stays real and exact for the
    singular covariances of few images in many feature dimensions.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least two feature vectors, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def extract_features(model: Any, batches: Any, max_images: int, size: int) -> np.ndarray:
    """Pooled pre-logit features of up to ``max_images`` images resized to ``size``."""
    import torch
    import torch.nn.functional as F

    from xferscale.models import pooled_features

    model.eval()
    out, seen = [], 0
    with torch.no_grad():
        for images, _ in batches.epoch(0):
            if images.shape[-1] != size or images.shape[-2] != size:
                images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            out.append(pooled_features(model, images).double().cpu().numpy())
            seen += len(images)
            if seen >= max_images:
                break
    if not out:
        raise ValueError("no images to take features of")
    return np.concatenate(out)[:max_images]


@dataclass
class ProximityRow:
    source: str
    target: str
    backbone: str  # model / source of the checkpoint whose features are compared
    frechet_distance: float
    source_images: int
    target_images: int
    full_shot_value: float | None = None  # ours, the checkpoint's model on this source
    model_gain: float | None = None  # largest - smallest model on this source
    source_gain: float | None = None  # this source - the baseline source, same model
    baseline_source: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.source, self.target, self.backbone


def attach_gains(row: ProximityRow, model: str, full: dict[tuple[str, str, str], Any],
                 params_of: dict[str, float], baseline: str | None) -> ProximityRow:
    """Fill the full-shot value and the gains from aggregated results (source, model, target)."""
    def value(source: str, m: str) -> float | None:
        cell = full.get((source, m, row.target))
        return None if cell is None else cell.mean

    row.full_shot_value = value(row.source, model)
    models = sorted((m for (s, m, t), c in full.items() if s == row.source and t == row.target and c.mean is not None),
                    key=lambda m: params_of.get(m, 0.0))
    if len(models) >= 2 and params_of.get(models[0]) != params_of.get(models[-1]):
        row.model_gain = value(row.source, models[-1]) - value(row.source, models[0])
    if baseline:
        base = value(baseline, model)
        if base is not None and row.full_shot_value is not None:
            row.source_gain, row.baseline_source = row.full_shot_value - base, baseline
    return row


COLUMNS = [f.name for f in fields(ProximityRow)]


def read_rows(path: Path) -> list[ProximityRow]:
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != COLUMNS:
            raise ValueError(f"{path}: expected columns {', '.join(COLUMNS)}")
        for line, raw in enumerate(reader, 2):
            try:
                rows.append(ProximityRow(
                    raw["source"], raw["target"], raw["backbone"], float(raw["frechet_distance"]),
                    int(raw["source_images"]), int(raw["target_images"]),
                    *(float(raw[k]) if raw[k] else None for k in ("full_shot_value", "model_gain", "source_gain")),
                    raw["baseline_source"] or None))
            except ValueError as err:
                raise ValueError(f"{path}:{line}: {err}") from err
    return rows


def merge_rows(old: Iterable[ProximityRow], new: Iterable[ProximityRow]) -> list[ProximityRow]:
    merged = {r.key: r for r in old}
    merged.update({r.key: r for r in new})
    return sorted(merged.values(), key=lambda r: (r.backbone, r.frechet_distance))


def render_csv(rows: list[ProximityRow]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(r).items()})
    return buf.getvalue()


def render_markdown(rows: list[ProximityRow]) -> str:
    def num(v: float | None, signed: bool = False) -> str:
        return "—" if v is None else (f"{v:+.2f}" if signed else f"{v:.2f}")

    lines = ["### Source–target proximity and transfer gain", "",
             "Fréchet distance of pooled features under the backbone (smaller: closer); gains in metric points.", "",
             "| backbone | source | target | Fréchet distance | full-shot | model gain | source gain (vs) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = f" ({r.baseline_source})" if r.baseline_source else ""
        lines.append(f"| {r.backbone} | {r.source} | {r.target} | {r.frechet_distance:.4g} | {num(r.full_shot_value)} "
                     f"| {num(r.model_gain, True)} | {num(r.source_gain, True)}{vs} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# The subcommand


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="runs/default/checkpoint.pt",
                        help="backbone whose features are compared, and whose pre-training data is the source")
    parser.add_argument("--source", help="source name (default: the checkpoint's run name without model prefix)")
    parser.add_argument("--target", action="append", default=[], metavar="NAME[=PATH]",
                        help="target: 'digits', or a prepared dataset's name with its folder (repeatable; default digits)")
    parser.add_argument("--results", type=Path, action="append", default=[],
                        help="results folder(s) for the full-shot values and gains (repeatable)")
    parser.add_argument("--baseline-source", help="source to compute the source gain against (same model)")
    parser.add_argument("--max-images", type=int, default=1000, help="images per data set (default %(default)s)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize both data sets to this side (default: the checkpoint's pre-training size)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("results/proximity"),
                        help="folder of proximity.csv / proximity.md, updated per call (default: %(default)s)")


def _source_batches(pretrained: Any, batch_size: int, device: Any) -> Any:
    """The checkpoint's own pre-training data, read in evaluation order."""
    from xferscale.config import DataConfig
    from xferscale.data.loader import build_loader

    cfg = dict(pretrained.config.get("data") or {})
    known = {f.name for f in fields(DataConfig)}
    data = DataConfig(**{k: v for k, v in cfg.items() if k in known})
    if data.source == "prepared":
        data.pipeline = "eval"
    return build_loader(data, batch_size=batch_size, rank=0, world_size=1, device=device, train=False,
                        seed=int(pretrained.config.get("train", {}).get("seed", 0)),
                        num_classes=pretrained.num_classes)


def run(args: argparse.Namespace) -> int:
    import torch

    from xferscale.hyperrule import hyperrule
    from xferscale.transfer.pretrained import CheckpointError, load_pretrained
    from xferscale.transfer.targets import PreparedTarget, TargetError, digits_target

    try:
        pretrained = load_pretrained(args.checkpoint, args.source)
    except CheckpointError as err:
        raise SystemExit(f"xferscale report proximity: {err} (make one with `xferscale pretrain`)") from err
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = pretrained.build(pretrained.num_classes, device)
    size = args.image_size or int(pretrained.config.get("data", {}).get("image_size", 224))
    backbone = f"{pretrained.model_name}/{pretrained.source}"
    source_feats = extract_features(model, _source_batches(pretrained, args.batch_size, device), args.max_images, size)
    mu_s, sigma_s = feature_stats(source_feats)

    full: dict = {}
    params_of: dict[str, float] = {}
    if args.results:
        try:
            records = load_records(args.results)
        except ResultError as err:
            raise SystemExit(f"xferscale report proximity: {err}") from err
        full = full_shot(aggregate(records))
        params_of = {r.model: float(r.config.get("model_params_m") or 0.0) for r in records}

    rows = []
    for spec in args.target or ["digits"]:
        name, _, path = spec.partition("=")
        try:
            target = digits_target() if name == "digits" and not path else PreparedTarget(name, path or f"data/prepared/{name}")
        except TargetError as err:
            raise SystemExit(f"xferscale report proximity: {err}") from err
        rule = hyperrule(target.train_size("full", 0), target.spec.image_size, crop=size)
        feats = extract_features(model, target.test_batches(rule, args.batch_size, device), args.max_images, size)
        distance = frechet_distance(mu_s, sigma_s, *feature_stats(feats))
        row = ProximityRow(pretrained.source, target.spec.name, backbone, distance, len(source_feats), len(feats))
        rows.append(attach_gains(row, pretrained.model_name, full, params_of, args.baseline_source))

    csv_path = args.out / "proximity.csv"
    try:
        merged = merge_rows(read_rows(csv_path), rows)
    except ValueError as err:
        raise SystemExit(f"xferscale report proximity: {err}") from err
    write_text_atomic(csv_path, render_csv(merged))
    write_text_atomic(args.out / "proximity.md", render_markdown(merged))
    print(render_markdown(merged))
    print(f"wrote {csv_path} and {args.out / 'proximity.md'}")
    return 0
