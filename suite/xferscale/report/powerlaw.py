"""Power laws of transfer error against pre-training data size and model size.

The paper leaves this to future work. Per target, the error (100 − accuracy or AUC, in
percent) is fitted as ``err = a · x^k`` by least squares in log-log space, with ``x`` the
number of pre-training images (one fit per model and source domain: the natural sources
and the growing medical ones are separate ladders) or the model's parameter count (one fit
per source). ``k < 0`` means scale helps; the closer to 0, the less. Two points give an
exact line (no R²); three or more give a fit with R². The same fits of the paper's own
values are written beside ours as the reference.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from matplotlib.ticker import NullFormatter, ScalarFormatter

from xferscale.report.aggregate import Cell
from xferscale.report.paper import (
    TABLE_KEYS,
    load_paper,
    model_params_m,
    source_domain,
    source_images,
)
from xferscale.report.plots import save_figure, subplot_grid


@dataclass(frozen=True)
class Point:
    origin: str  # "ours" or "paper"
    target: str
    source: str
    model: str
    value: float  # metric in percent

    @property
    def error(self) -> float:
        return 100.0 - self.value


@dataclass
class PowerLawFit:
    origin: str
    axis: str  # "data" (pre-training images) or "model" (parameters, millions)
    target: str
    group: str  # the fixed factor: model (+ domain) for "data", source for "model"
    x: list[float]
    error: list[float]
    a: float
    k: float
    r2: float | None

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.a * np.power(x, self.k)


def fit_power_law(x: Iterable[float], error: Iterable[float]) -> tuple[float, float, float | None]:
    """``(a, k, r2)`` of ``error = a · x^k``; needs two distinct positive x and positive errors."""
    xs, ys = np.asarray(list(x), float), np.asarray(list(error), float)
    if len(xs) != len(ys) or len(set(xs.tolist())) < 2:
        raise ValueError("a power law needs at least two distinct sizes")
    if (xs <= 0).any() or (ys <= 0).any():
        raise ValueError("sizes and errors must be positive for a log-log fit")
    lx, ly = np.log(xs), np.log(ys)
    k, log_a = np.polyfit(lx, ly, 1)
    r2 = None
    if len(xs) > 2:
        residual = ly - (log_a + k * lx)
        total = ((ly - ly.mean()) ** 2).sum()
        r2 = float(1 - (residual**2).sum() / total) if total > 0 else None
    return float(np.exp(log_a)), float(k), r2


def paper_points() -> list[Point]:
    """The paper's full-shot values of Tables 1 and 2 as points."""
    paper = load_paper()
    return [
        Point("paper", target, source, model, float(mean))
        for key in TABLE_KEYS.values()
        for model, sources in paper[key].items()
        for source, cells in sources.items()
        for target, (mean, _std) in cells.items()
    ]


def our_points(full: dict[tuple[str, str, str], Cell]) -> list[Point]:
    return [Point("ours", t, s, m, c.mean) for (s, m, t), c in full.items() if c.mean is not None]


SizeOf = Callable[[str], "float | None"]


def fit_all(
    points: list[Point],
    images_of: SizeOf = source_images,
    params_of: SizeOf = model_params_m,
    domain_of: SizeOf = source_domain,
) -> list[PowerLawFit]:
    """Every fit with at least two distinct sizes, along both axes."""
    groups: dict[tuple[str, str, str, str], list[tuple[float, float]]] = {}
    for p in points:
        images, params = images_of(p.source), params_of(p.model)
        if images is not None:
            group = f"{p.model}/{domain_of(p.source) or p.source}"
            groups.setdefault((p.origin, "data", p.target, group), []).append((images, p.error))
        if params is not None:
            groups.setdefault((p.origin, "model", p.target, p.source), []).append((params, p.error))
    fits = []
    for (origin, axis, target, group), pairs in sorted(groups.items()):
        pairs.sort()
        xs, errs = [x for x, _ in pairs], [e for _, e in pairs]
        if len(set(xs)) < 2 or min(errs) <= 0:
            continue
        a, k, r2 = fit_power_law(xs, errs)
        fits.append(PowerLawFit(origin, axis, target, group, xs, errs, a, k, r2))
    return fits


def render_csv(fits: list[PowerLawFit]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["origin", "axis", "target", "group", "points", "a", "exponent_k", "r2", "x", "error"])
    for f in fits:
        writer.writerow([f.origin, f.axis, f.target, f.group, len(f.x), f"{f.a:.6g}", f"{f.k:.4f}",
                         "" if f.r2 is None else f"{f.r2:.4f}",
                         " ".join(f"{v:.6g}" for v in f.x), " ".join(f"{v:.4f}" for v in f.error)])
    return buf.getvalue()


def render_markdown(fits: list[PowerLawFit]) -> str:
    lines = ["### Power laws of transfer error (err = a · x^k; k < 0: scale helps)", "",
             "| origin | axis | target | fixed | points | k | R² |", "|---|---|---|---|---|---|---|"]
    for f in fits:
        r2 = "exact (2 points)" if f.r2 is None else f"{f.r2:.3f}"
        lines.append(f"| {f.origin} | {f.axis} | {f.target} | {f.group} | {len(f.x)} | {f.k:+.4f} | {r2} |")
    return "\n".join(lines) + "\n"


AXIS_LABEL = {"data": "pre-training images", "model": "parameters [M]"}


def plot_fits(fits: list[PowerLawFit], axis: str, out_stem: Path, targets: Iterable[str] | None = None) -> list[Path]:
    """Log-log panels per target: points and fitted lines, ours solid, the paper's dashed.

    ``targets`` limits the panels (the report passes the targets it has results for).
    """
    wanted = None if targets is None else set(targets)
    chosen = [f for f in fits if f.axis == axis and (wanted is None or f.target in wanted)]
    targets = sorted({f.target for f in chosen})
    if not targets:
        return []
    fig, axes = subplot_grid(len(targets))
    for ax, target in zip(axes, targets):
        for f in (f for f in chosen if f.target == target):
            xs = np.geomspace(min(f.x), max(f.x), 50)
            style = "-" if f.origin == "ours" else "--"
            (line,) = ax.plot(xs, f.predict(xs), style, label=f"{f.origin} {f.group} (k={f.k:+.3f})")
            ax.plot(f.x, f.error, "o", color=line.get_color(), ms=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Errors span less than a decade: label a few plain values, not log minor ticks.
        errors = [e for f in chosen if f.target == target for e in f.error]
        ax.set_yticks(np.unique(np.round(np.geomspace(min(errors), max(errors), 4), 2)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(AXIS_LABEL[axis])
        ax.set_ylabel("error [%]")
        ax.set_title(target)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.suptitle(f"Transfer error against {AXIS_LABEL[axis]}")
    return save_figure(fig, out_stem)

