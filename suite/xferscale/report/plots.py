"""Figures as the paper's: few-shot curves (Figs. 1 and 3) and full-shot bars (Fig. 2).

Every figure is written as PNG and PDF with matplotlib's Agg backend (no display needed).
A missing (source, model, target, shots) point is a gap in its line and a missing bar is
an empty slot, so nothing that was not run is drawn as a value.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from xferscale.report.aggregate import Cell, CellKey  # noqa: E402
from xferscale.report.paper import paper_value, target_metric  # noqa: E402
from xferscale.results import FULL, Shots, shots_sort_key  # noqa: E402

METRIC_LABEL = {"acc": "top-1 accuracy [%]", "auc": "mean ROC-AUC [%]"}


def save_figure(fig: "plt.Figure", out_stem: Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf``; return both paths."""
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out_stem.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


def subplot_grid(n: int, width: float = 4.0, height: float = 3.2) -> tuple["plt.Figure", list["plt.Axes"]]:
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _targets(cells: dict[CellKey, Cell]) -> list[str]:
    return sorted({k[2] for k in cells})


def _lines(cells: dict[CellKey, Cell], target: str) -> list[tuple[str, str]]:
    return sorted({(k[0], k[1]) for k in cells if k[2] == target})


def plot_fewshot(cells: dict[CellKey, Cell], out_stem: Path, shots: Sequence[Shots] | None = None) -> list[Path]:
    """One panel per target: metric against shots, one line per (source, model), ± std bars."""
    shots = list(shots) if shots else sorted({k[3] for k in cells}, key=shots_sort_key)
    targets = _targets(cells)
    if not targets:
        raise ValueError("no results to plot")
    fig, axes = subplot_grid(len(targets))
    x = np.arange(len(shots))
    for ax, target in zip(axes, targets):
        for source, model in _lines(cells, target):
            got = [cells.get((source, model, target, s)) for s in shots]
            # NaN breaks the line where a point is missing or undefined: a gap, not a value.
            y = np.array([c.mean if c is not None and c.mean is not None else np.nan for c in got])
            err = np.array([c.std if c is not None and c.std is not None else 0.0 for c in got])
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=2, label=f"{model} / {source}")
        ax.set_xticks(x, [str(s) for s in shots])
        ax.set_xlabel("examples per class")
        ax.set_ylabel(METRIC_LABEL.get(target_metric(target), "metric"))
        ax.set_title(target)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Few-shot transfer (mean ± std over seeds)")
    return save_figure(fig, out_stem)


def plot_fullshot_bars(cells: dict[CellKey, Cell], out_stem: Path) -> list[Path]:
    """One panel per target: a bar per (source, model), ours ± std, the paper's value as a marker."""
    full = {k: c for k, c in cells.items() if k[3] == FULL}
    targets = _targets(full)
    if not targets:
        raise ValueError("no full-shot results to plot")
    fig, axes = subplot_grid(len(targets))
    for ax, target in zip(axes, targets):
        bars = _lines(full, target)
        x = np.arange(len(bars))
        means = [full[(s, m, target, FULL)].mean for s, m in bars]
        stds = [full[(s, m, target, FULL)].std or 0.0 for s, m in bars]
        heights = [np.nan if v is None else v for v in means]
        ax.bar(x, heights, yerr=stds, capsize=3, color="tab:blue", label="ours")
        papers = [paper_value(m, s, target) for s, m in bars]
        px = [i for i, p in enumerate(papers) if p is not None]
        if px:
            ax.errorbar(px, [papers[i].mean for i in px], yerr=[papers[i].std for i in px],
                        fmt="D", color="tab:red", ms=5, capsize=3, label="paper")
        ax.set_xticks(x, [f"{m}\n{s}" for s, m in bars], fontsize=7)
        ax.set_ylabel(METRIC_LABEL.get(target_metric(target), "metric"))
        ax.set_title(target)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Full-shot transfer (mean ± std over seeds)")
    return save_figure(fig, out_stem)
