"""``xferscale report results``: records -> tables, figures and power-law fits in one folder."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from xferscale.report import plots, powerlaw, tables
from xferscale.report.aggregate import aggregate, full_shot, shots_of
from xferscale.report.paper import model_params_m, source_images
from xferscale.results import (
    ResultError,
    ResultRecord,
    load_records,
    parse_seeds,
    shots_sort_key,
    write_text_atomic,
)


@dataclass
class ResultsReport:
    out_dir: Path
    markdown: str  # the whole report, as written to report.md
    files: list[Path] = field(default_factory=list)
    cells: int = 0
    records: int = 0


def _sizes(records: Sequence[ResultRecord]) -> tuple[dict[str, float], dict[str, float]]:
    """Pre-training images per source and parameters (M) per model: recorded, else the paper's."""
    images: dict[str, float] = {}
    params: dict[str, float] = {}
    for r in records:
        if r.config.get("source_images"):
            images[r.source] = float(r.config["source_images"])
        if r.config.get("model_params_m"):
            params[r.model] = float(r.config["model_params_m"])
    return images, params


def _seed_summary(cells: dict, expected: Sequence[int]) -> str:
    incomplete = [c for c in cells.values()
                  if c.missing_seeds(expected) or c.undefined_seeds or c.undefined_labels or c.infeasible]
    lines = [f"Expected seeds: {', '.join(map(str, expected))}. "
             f"{len(cells) - len(incomplete)} of {len(cells)} cells have all of them, each a number."]
    for c in sorted(incomplete, key=lambda c: (c.source, c.model, c.target, shots_sort_key(c.shots))):
        notes = []
        if c.missing_seeds(expected):
            notes.append("missing seeds " + ", ".join(map(str, c.missing_seeds(expected))))
        if c.undefined_seeds:
            notes.append("metric undefined for seeds " + ", ".join(map(str, c.undefined_seeds)))
        if c.undefined_labels:
            notes.append("mean AUC without the labels whose AUC is undefined: " + ", ".join(c.undefined_labels))
        if c.infeasible:
            notes.append(f"infeasible: {c.infeasible}")
        lines.append(f"- {c.model} / {c.source} -> {c.target}, shots {c.shots}: {'; '.join(notes)}")
    return "\n".join(lines) + "\n"


def write_results_report(
    records: Sequence[ResultRecord],
    out_dir: Path,
    expected_seeds: Sequence[int] | None = None,
    latex: bool = False,
    with_paper_fits: bool = True,
) -> ResultsReport:
    if not records:
        raise ValueError("no result records found")
    out_dir = Path(out_dir)
    cells = aggregate(records)
    full = full_shot(cells)
    expected = sorted(expected_seeds) if expected_seeds else sorted({r.seed for r in records})
    report = ResultsReport(out_dir, "", cells=len(cells), records=len(records))

    def write(name: str, text: str) -> None:
        path = out_dir / name
        write_text_atomic(path, text)
        report.files.append(path)

    sections = ["# Transfer results", "", f"{len(records)} run records in {len(cells)} cells.", "",
                _seed_summary(cells, expected)]
    for table in tables.build_tables(full):
        md = tables.render_markdown(table, len(expected))
        write(f"{table.name}.md", md)
        write(f"{table.name}.csv", tables.render_csv(table))
        if latex:
            write(f"{table.name}.tex", tables.render_latex(table))
        sections.append(md)
    write("cells.csv", tables.render_long_csv(cells.values(), expected))

    report.files += plots.plot_fewshot(cells, out_dir / "fewshot", shots_of(cells))
    if full:
        report.files += plots.plot_fullshot_bars(cells, out_dir / "fullshot")

    images, params = _sizes(records)
    points = powerlaw.our_points(full) + (powerlaw.paper_points() if with_paper_fits else [])
    fits = powerlaw.fit_all(
        points,
        images_of=lambda s: images.get(s, source_images(s)),
        params_of=lambda m: params.get(m, model_params_m(m)),
    )
    if fits:
        write("powerlaw.csv", powerlaw.render_csv(fits))
        write("powerlaw.md", powerlaw.render_markdown(fits))
        sections.append(powerlaw.render_markdown(fits))
        for axis in ("data", "model"):
            report.files += powerlaw.plot_fits(fits, axis, out_dir / f"powerlaw_{axis}", {t for _, _, t in full})
    report.markdown = "\n".join(sections)
    write("report.md", report.markdown)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", type=Path, metavar="DIR",
                        help="results folder(s) written by `xferscale transfer --results DIR`")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the report (default: DIR/report for one folder)")
    parser.add_argument("--seeds", default=None,
                        help="seeds every cell should have, e.g. 0-4 (default: every seed seen)")
    parser.add_argument("--latex", action="store_true", help="also write the tables as LaTeX")
    parser.add_argument("--no-paper-fits", action="store_true",
                        help="fit power laws to our results only, not to the paper's values too")


def run(args: argparse.Namespace) -> int:
    try:
        records = load_records(args.results)
        expected = parse_seeds(args.seeds) if args.seeds else None
    except ResultError as err:
        raise SystemExit(f"xferscale report results: {err}") from err
    if not records:
        raise SystemExit(f"xferscale report results: no records (seed-*.json) under {', '.join(map(str, args.results))}")
    out = args.out or (args.results[0] / "report" if len(args.results) == 1 else Path("report"))
    report = write_results_report(records, out, expected, latex=args.latex, with_paper_fits=not args.no_paper_fits)
    print(report.markdown)
    print(f"wrote {len(report.files)} files to {out}/")
    return 0
