"""``xferscale report scaling PERFLOG_DIR``: the scaling table and figure from perflogs.

Reads the ``ScalingSweep`` perflogs (see ``checks/scaling.py``), and for each system,
partition, model and precision writes a table (N, total and per-GPU images/s, E(N),
reference, verdict) and the figure of the paper's Fig. 4: throughput against N with the
ideal line and efficiency labels, plus E(N) beside the scaling model's prediction (and
the paper's published values for R152x4). E(N) = 100 T(N) / (N T(1)) is recomputed
from the logged throughputs when the 1-GPU run is in the perflogs.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Iterable

import yaml

from xferscale.report.perflog import PerflogError, number, read_perflogs
from xferscale.scaling_model import (
    JUWELS_BOOSTER_LINKS, Interconnect, ScalingModel, comparison_table, gradient_bytes, paper_comparison,
)


@dataclass
class Point:
    n: int
    total: float  # images/s over all ranks
    efficiency: float  # percent
    step_ms: float | None
    reference: float | None
    lower: float | None  # relative lower threshold of the reference
    result: str  # ReFrame's verdict: pass / fail

    @property
    def per_gpu(self) -> float:
        return self.total / self.n

    @property
    def verdict(self) -> str:
        if self.reference is None:
            return f"{self.result} (no ref)"
        floor = self.reference * (1 + (self.lower or 0.0))
        return "pass" if self.efficiency >= floor else f"FAIL (< {floor:.2f} %)"


@dataclass
class Series:
    system: str
    partition: str
    model: str
    precision: str
    framework: str = "torch"  # torch.distributed or horovod (the paper's Fig. 4)
    points: list[Point] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.system}_{self.partition}_{self.model}_{self.precision}_{self.framework}"


def _reference(row: dict[str, str]) -> tuple[float | None, float | None]:
    # ReFrame logs ref 0 and thresholds None for a variable without a reference.
    ref = number(row.get("efficiency_ref"))
    if not ref:
        return None, None
    return ref, number(row.get("efficiency_lower_thres"))


def scaling_series(rows: Iterable[dict[str, str]]) -> list[Series]:
    """Group perflog rows into series; the latest row of each N wins; E(N) from T(1)."""
    latest: dict[tuple, dict[int, dict[str, str]]] = {}
    for row in rows:
        if number(row.get("throughput_total_value")) is None:
            continue  # a failed run logs no throughput
        key = (row.get("system", "?"), row.get("partition", "?"), row.get("model", "?"), row.get("precision", "?"),
               row.get("framework") or "torch")
        n = int(row["num_workers"])
        seen = latest.setdefault(key, {})
        if n not in seen or row.get("job_completion_time", "") >= seen[n].get("job_completion_time", ""):
            seen[n] = row
    out = []
    for (system, partition, model, precision, framework), by_n in sorted(latest.items()):
        series = Series(system, partition, model, precision, framework)
        single = number(by_n[1]["throughput_total_value"]) if 1 in by_n else None
        for n in sorted(by_n):
            row = by_n[n]
            total = number(row["throughput_total_value"])
            logged = number(row.get("efficiency_value"))
            efficiency = 100.0 * total / (n * single) if single else logged
            if efficiency is None:
                continue
            ref, lower = _reference(row)
            series.points.append(Point(n, total, efficiency, number(row.get("step_time_p50_value")), ref, lower,
                                       row.get("result", "?")))
        out.append(series)
    return out


def measured_links(rows: Iterable[dict[str, str]], system: str, partition: str, gpus_per_node: int) -> Interconnect | None:
    """Bus bandwidths from the AllReduceSweep perflogs of the same partition, if any."""
    by_n: dict[int, float] = {}
    for row in rows:
        bw = number(row.get("busbw_gradient_value"))
        if bw and row.get("system") == system and row.get("partition") == partition and row.get("framework", "torch") == "torch":
            by_n[int(row["num_workers"])] = bw
    if not by_n:
        return None
    intra = [bw for n, bw in by_n.items() if n <= gpus_per_node]
    inter = [bw for n, bw in by_n.items() if n > gpus_per_node]
    intra_bw = max(intra) if intra else max(by_n.values())
    return Interconnect(gpus_per_node, intra_bw, min(inter) if inter else intra_bw)


def paper_efficiencies() -> dict[int, float]:
    text = resources.files("xferscale").joinpath("reference/paper.yaml").read_text()
    return {int(n): float(e) for n, e in yaml.safe_load(text)["scaling"]["efficiency_percent"].items()}


def markdown_table(series: Series, predicted: dict[int, float] | None = None) -> str:
    head = "| N | images/s total | images/s per GPU | E(N) % | model E(N) % | reference % | verdict |"
    lines = [f"### {series.system}:{series.partition} {series.model} {series.precision} {series.framework}", "", head,
             "|---:|---:|---:|---:|---:|---:|---|"]
    for p in series.points:
        model = f"{predicted[p.n]:.2f}" if predicted and p.n in predicted else "-"
        ref = f"{p.reference:.2f}" if p.reference is not None else "-"
        lines.append(f"| {p.n} | {p.total:.1f} | {p.per_gpu:.2f} | {p.efficiency:.2f} | {model} | {ref} | {p.verdict} |")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def plot(series: Series, predicted: dict[int, float] | None, paper: dict[int, float] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ns = [p.n for p in series.points]
    single = next((p.total for p in series.points if p.n == 1), None)
    fig, (ax, ax_e) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax.plot(ns, [p.total for p in series.points], "o-", label="measured")
    if single:
        ax.plot(ns, [n * single for n in ns], "k--", lw=1, label="ideal N x T(1)")
        if predicted:
            ax.plot(ns, [n * single * predicted[n] / 100 for n in ns], ":", label="scaling model")
    for p in series.points:
        ax.annotate(f"{p.efficiency:.1f}%", (p.n, p.total), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=7)
    ax.set(xscale="log", yscale="log", xlabel="GPUs (processes) N", ylabel="images/s (total)",
           title=f"{series.model} {series.precision} ({series.framework}) on {series.system}:{series.partition}")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.legend(fontsize=8)
    ax_e.plot(ns, [p.efficiency for p in series.points], "o-", label="measured E(N)")
    if predicted:
        ax_e.plot(ns, [predicted[n] for n in ns], ":", label="scaling model")
    if paper:
        ax_e.plot(list(paper), list(paper.values()), "s", mfc="none", label="paper (R152x4 FP32)")
    ax_e.set(xscale="log", xlabel="GPUs (processes) N", ylabel="E(N) %", title="scaling efficiency")
    ax_e.set_xticks(ns, [str(n) for n in ns])
    ax_e.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    _write_atomic(path, buffer.getvalue())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("perflog_dir", nargs="?", help="ReFrame perflog folder (--perflogdir / XFERSCALE_PERFLOGS)")
    parser.add_argument("--paper", action="store_true",
                        help="print the scaling model beside the paper's Fig. 4 efficiencies (no perflogs needed)")
    parser.add_argument("--out", default=None, help="where to write scaling.md/.csv/.png (default: PERFLOG_DIR/report)")
    parser.add_argument("--check", default="ScalingSweep", help="the scaling check's class name")
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--overlap", type=float, default=0.5, help="scaling model: fraction of a step hiding the all-reduce")
    parser.add_argument("--bucket-mb", type=float, default=25.0, help="scaling model: gradient bucket (DDP 25, Horovod 64)")
    parser.add_argument("--latency-us", type=float, default=None,
                        help="scaling model: latency per tree level per message (default: the links'; "
                             "126 fits the paper's Horovod runs)")
    parser.add_argument("--num-classes", type=int, default=1000, help="head size for the gradient size")
    parser.add_argument("--no-figure", action="store_true")


def _model_for(series: Series, links: Interconnect, args: argparse.Namespace) -> ScalingModel | None:
    single = next((p for p in series.points if p.n == 1 and p.step_ms), None)
    if single is None:
        return None
    return ScalingModel(step_time_s=single.step_ms / 1e3, gradient_bytes=gradient_bytes(series.model, args.num_classes),
                        links=links, overlap=args.overlap, bucket_bytes=args.bucket_mb * 2**20)


def run(args: argparse.Namespace) -> int:
    if args.paper:
        print(comparison_table(*paper_comparison(paper_efficiencies())))
        if not args.perflog_dir:
            return 0
    if not args.perflog_dir:
        print("xferscale report scaling: give PERFLOG_DIR (or --paper)", file=sys.stderr)
        return 2
    try:
        rows = read_perflogs(args.perflog_dir, args.check)
        allreduce_rows = read_perflogs(args.perflog_dir, "AllReduceSweep")
    except PerflogError as err:
        print(f"xferscale report scaling: {err}", file=sys.stderr)
        return 2
    all_series = scaling_series(rows)
    if not all_series:
        print(f"xferscale report scaling: no {args.check} results with a throughput under {args.perflog_dir}",
              file=sys.stderr)
        return 1
    out = Path(args.out or Path(args.perflog_dir) / "report")
    out.mkdir(parents=True, exist_ok=True)
    paper = paper_efficiencies()
    markdown, table = [], io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["system", "partition", "model", "precision", "n", "images_per_s_total", "images_per_s_per_gpu",
                     "efficiency_percent", "model_efficiency_percent", "reference_percent", "verdict"])
    for series in all_series:
        links = measured_links(allreduce_rows, series.system, series.partition, args.gpus_per_node) or JUWELS_BOOSTER_LINKS
        if args.latency_us is not None:
            links = replace(links, latency_us=args.latency_us)
        model = _model_for(series, links, args)
        predicted = model.efficiencies(p.n for p in series.points) if model else None
        markdown.append(markdown_table(series, predicted))
        if model:
            markdown.append(f"Scaling model: t1 = {model.step_time_s * 1e3:.1f} ms, gradient "
                            f"{model.gradient_bytes / 1e9:.3f} GB, busbw {links.intra_busbw_gbps:.1f} GB/s in a node / "
                            f"{links.inter_busbw_gbps:.1f} GB/s across nodes, overlap {model.overlap:.2f}.\n")
        for p in series.points:
            writer.writerow([series.system, series.partition, series.model, series.precision, p.n, f"{p.total:.3f}",
                             f"{p.per_gpu:.3f}", f"{p.efficiency:.3f}",
                             f"{predicted[p.n]:.3f}" if predicted else "", p.reference if p.reference is not None else "",
                             p.verdict])
        if not args.no_figure:
            plot(series, predicted, paper if series.model == "r152x4" else None, out / f"scaling_{series.key}.png")
    text = "\n".join(markdown)
    _write_atomic(out / "scaling.md", text.encode())
    _write_atomic(out / "scaling.csv", table.getvalue().encode())
    print(text)
    print(f"wrote {out / 'scaling.md'}, {out / 'scaling.csv'}" + ("" if args.no_figure else " and the figures"))
    failed = any(p.verdict.startswith("FAIL") for s in all_series for p in s.points)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m xferscale.report.scaling``: the same as ``xferscale report scaling``."""
    parser = argparse.ArgumentParser(prog="xferscale report scaling", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
