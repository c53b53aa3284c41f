"""Full-shot tables in the layout of the paper's Tables 1 and 2, ours beside the paper's.

Rows are (model, source) as in the paper, columns are targets; each cell holds our mean ±
std, the number of seeds it rests on, the paper's value and our difference to it, judged
against the paper's 5-seed spread (``PaperValue.within``). A run that is missing leaves a gap
("—"), never a zero; a cell the paper prints as ``--`` (no such run) says so. Rows of ours
that the paper has no table for (another source or model) go to a third table with the same
layout and no paper column.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from xferscale.report.aggregate import Cell
from xferscale.report.paper import (
    PAPER_STD_TO_SEED_STD,
    PUBLIC_WEIGHT_SOURCES,
    TABLE_TITLES,
    WITHIN_POINTS,
    WITHIN_STDS,
    PaperValue,
    canonical_source,
    paper_has_no_run,
    paper_value,
    table_of,
    table_rows,
    table_targets,
)

GAP = "—"
NO_RUN = "--"  # as the paper prints a cell it has no run for
OTHER = "other"
STD_NOTE = (
    f"The paper's ± is the std over its code's result rows, which hold each run twice (n−1 over 10 "
    f"rows): {1 / PAPER_STD_TO_SEED_STD:.3f} of the 5-seed std, about "
    f"{100 * (1 - 1 / PAPER_STD_TO_SEED_STD):.0f} % smaller. Δ is within the paper's spread when "
    f"|Δ| ≤ max({WITHIN_STDS:g} × its ± × {PAPER_STD_TO_SEED_STD:.3f}, {WITHIN_POINTS:g} point)."
)


@dataclass
class TableCell:
    ours: Cell | None
    paper: PaperValue | None
    no_run: bool = False  # the paper prints "--": it has no such run

    @property
    def diff(self) -> float | None:
        if self.ours is None or self.ours.mean is None or self.paper is None:
            return None
        return self.ours.mean - self.paper.mean

    @property
    def verdict(self) -> str:
        """Whether Δ is "within" or "outside" the paper's spread; empty without both values."""
        if self.diff is None:
            return ""
        return "within" if self.paper.within(self.ours.mean) else "outside"


@dataclass
class Table:
    name: str  # "table1", "table2" or "other"
    title: str
    targets: list[str]
    rows: list[tuple[str, str]]  # (model, source)
    cells: dict[tuple[str, str, str], TableCell] = field(default_factory=dict)  # (model, source, target)

    def cell(self, model: str, source: str, target: str) -> TableCell:
        return self.cells.get((model, source, target), TableCell(None, None))


def build_tables(full: dict[tuple[str, str, str], Cell]) -> list[Table]:
    """Tables 1 and 2 (with every paper row, ours or not) and, if needed, the table of other rows."""
    ours_by_row: dict[tuple[str, str], dict[str, Cell]] = {}
    for (source, model, target), cell in full.items():
        ours_by_row.setdefault((model, canonical_source(source)), {})[target] = cell

    tables = []
    for name, title in TABLE_TITLES.items():
        rows = _with_public_weight_rows(table_rows(name), ours_by_row)
        targets = table_targets(name)
        extra = [t for row in rows for t in ours_by_row.get(row, {}) if t not in targets]
        tables.append(Table(name, title, targets + sorted(set(extra)), rows))
    other_rows = sorted(row for row in ours_by_row if table_of(*row) is None)
    if other_rows:
        targets = sorted({t for row in other_rows for t in ours_by_row[row]})
        tables.append(Table(OTHER, "Other sources and models (no paper value)", targets, other_rows))

    for table in tables:
        for model, source in table.rows:
            for target in table.targets:
                ours = ours_by_row.get((model, source), {}).get(target)
                paper = paper_value(model, source, target) if table.name != OTHER else None
                no_run = table.name != OTHER and paper_has_no_run(source, target)
                if ours is not None or paper is not None or no_run:
                    table.cells[(model, source, target)] = TableCell(ours, paper, no_run)
    return tables


def _with_public_weight_rows(rows: list[tuple[str, str]], ours: dict) -> list[tuple[str, str]]:
    """The paper's rows, each followed by ours from BiT's published weights that stand beside it."""
    out = []
    for model, source in rows:
        out.append((model, source))
        out += [(model, public) for public, beside in PUBLIC_WEIGHT_SOURCES.items()
                if beside == source and (model, public) in ours]
    return out


def source_label(source: str) -> str:
    """A row's source as printed: BiT's published weights say so."""
    return f"{source} (BiT's weights)" if source in PUBLIC_WEIGHT_SOURCES else source


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return GAP
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def cell_text(cell: Cell | None, expected_seeds: int) -> str:
    """``mean ± std [seeds/expected]``, with what the cell leaves out: undefined seeds, the
    labels a mean AUC is not over, or why the cell is infeasible."""
    if cell is None:
        return f"{GAP} [0/{expected_seeds}]"
    if cell.infeasible is not None:
        return f"infeasible ({cell.infeasible})"
    count = f"[{len(cell.seeds)}/{expected_seeds}]"
    undefined = f", {len(cell.undefined_seeds)} undefined" if cell.undefined_seeds else ""
    if cell.undefined_labels:
        undefined += f"; AUC undefined for {', '.join(cell.undefined_labels)}"
    if cell.mean is None:
        return f"undefined {count}"
    std = f" ± {cell.std:.2f}" if cell.std is not None else ""
    return f"{cell.mean:.2f}{std} {count}{undefined}"


def render_markdown(table: Table, expected_seeds: int) -> str:
    """One Markdown table; a cell reads ``ours ± std [seeds] · paper · Δ``."""
    out = [f"### {table.title}", "", "Ours: mean ± std over seeds [seeds with a record / expected]."]
    if table.name != OTHER:
        out[-1] += (" Then the paper's mean ± std and our difference (Δ = ours − paper), within or outside"
                    f" the paper's spread; `{NO_RUN}`: the paper has no such run. {STD_NOTE}")
    out += ["", "| model | source | " + " | ".join(table.targets) + " |",
            "|---|---|" + "---|" * len(table.targets)]
    for model, source in table.rows:
        texts = []
        for target in table.targets:
            tc = table.cell(model, source, target)
            text = cell_text(tc.ours, expected_seeds) if tc.ours or tc.paper else GAP
            if tc.no_run:
                text = NO_RUN if tc.ours is None else f"{text} · paper {NO_RUN}"
            if tc.paper is not None:
                text += f" · paper {tc.paper.mean:.2f} ± {tc.paper.std:.2f} · Δ {_num(tc.diff, signed=True)}"
                text += f" ({tc.verdict})" if tc.verdict else ""
            texts.append(text)
        out.append(f"| {model} | {source_label(source)} | " + " | ".join(texts) + " |")
    return "\n".join(out) + "\n"


CSV_FIELDS = ("mean", "std", "seeds", "undefined", "undefined_labels", "infeasible", "paper", "paper_std",
              "paper_seed_std", "diff", "verdict")


def render_csv(table: Table) -> str:
    """The same layout, one column per target and quantity (``cifar10_mean``, ``cifar10_paper`` ...)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "source"] + [f"{t}_{f}" for t in table.targets for f in CSV_FIELDS])
    for model, source in table.rows:
        row: list[object] = [model, source]
        for target in table.targets:
            tc = table.cell(model, source, target)
            o, p = tc.ours, tc.paper
            row += [
                "" if o is None or o.mean is None else f"{o.mean:.4f}",
                "" if o is None or o.std is None else f"{o.std:.4f}",
                0 if o is None else len(o.seeds),
                0 if o is None else len(o.undefined_seeds),
                "" if o is None else " ".join(o.undefined_labels),
                "" if o is None or o.infeasible is None else o.infeasible,
                NO_RUN if tc.no_run else "" if p is None else p.mean,
                "" if p is None else p.std,
                "" if p is None else f"{p.seed_std:.4f}",
                "" if tc.diff is None else f"{tc.diff:.4f}",
                tc.verdict,
            ]
        writer.writerow(row)
    return buf.getvalue()


def _latex_escape(text: str) -> str:
    return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def render_latex(table: Table) -> str:
    """A booktabs tabular: ``ours ± std`` over ``(paper, Δ)`` in each cell."""
    cols = "ll" + "c" * len(table.targets)
    lines = [r"\begin{tabular}{" + cols + "}", r"\toprule",
             "Model & Source & " + " & ".join(_latex_escape(t) for t in table.targets) + r" \\", r"\midrule"]
    for model, source in table.rows:
        cells = []
        for target in table.targets:
            tc = table.cell(model, source, target)
            o = tc.ours
            text = GAP if o is None or o.mean is None else f"{o.mean:.2f}"
            if o is not None and o.std is not None:
                text += rf"$\pm${o.std:.2f}"
            if tc.paper is not None:
                text += rf" ({tc.paper.mean:.2f}, {_num(tc.diff, signed=True)})"
            elif tc.no_run:
                text += f" (paper {NO_RUN})"
            cells.append(text.replace(GAP, "--"))
        lines.append(f"{_latex_escape(model)} & {_latex_escape(source)} & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


LONG_FIELDS = ["source", "model", "target", "shots", "metric", "mean", "std", "seeds", "seed_list",
               "undefined_seeds", "undefined_labels", "infeasible", "missing_seeds", "paper", "paper_std", "diff"]


def render_long_csv(cells: Iterable[Cell], expected: Sequence[int]) -> str:
    """Every cell of every shot count, one row each (for further analysis)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LONG_FIELDS)
    writer.writeheader()
    for c in cells:
        paper = paper_value(c.model, c.source, c.target) if c.shots == "full" else None
        diff = c.mean - paper.mean if paper is not None and c.mean is not None else None
        writer.writerow({
            "source": c.source, "model": c.model, "target": c.target, "shots": c.shots, "metric": c.metric,
            "mean": "" if c.mean is None else f"{c.mean:.4f}",
            "std": "" if c.std is None else f"{c.std:.4f}",
            "seeds": len(c.seeds),
            "seed_list": " ".join(map(str, c.seeds)),
            "undefined_seeds": " ".join(map(str, c.undefined_seeds)),
            "undefined_labels": " ".join(c.undefined_labels),
            "infeasible": c.infeasible or "",
            "missing_seeds": " ".join(map(str, c.missing_seeds(expected))),
            "paper": "" if paper is None else paper.mean,
            "paper_std": "" if paper is None else paper.std,
            "diff": "" if diff is None else f"{diff:.4f}",
        })
    return buf.getvalue()
