"""summary.md and acceptance.json of scripts/gpu/acceptance.sh, from its items and logs.

Every item has a status (ok, skipped with the reason, failed with its log's tail, timed
out); the node groups add their items' figures, the ReFrame run its perflog lines, the
pre-training its summary, the train items the energy projection.
"""
from __future__ import annotations

import argparse
import json
import platform
import socket
import sys
from pathlib import Path
from typing import Any

TAIL_LINES = 15


def read_items(path: Path) -> list[dict[str, Any]]:
    items = []
    for line in path.read_text().splitlines():
        name, status, seconds, note = (line.split("\t") + [""] * 4)[:4]
        items.append({"name": name, "status": status, "seconds": int(seconds or 0), "note": note})
    return items


def log_tail(logs: Path, name: str) -> str:
    path = logs / f"{name.replace('/', '-')}.log"
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-TAIL_LINES:])


def node_detail(logs: Path, group: str) -> dict[str, Any] | None:
    path = logs / f"node-{group}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def perflog_lines(perflogs: Path) -> list[str]:
    """Every perflog's lines, each file's header first (its ``|``-separated field names)."""
    return [line for log in sorted(perflogs.rglob("*.log")) for line in log.read_text().splitlines() if line]


def transfer_table(logs: Path) -> list[str]:
    """The results table ``xferscale transfer`` printed at its end."""
    path = logs / "transfer.log"
    if not path.is_file():
        return []
    return [line for line in path.read_text(errors="replace").splitlines() if line.startswith("|")]


def environment(node: list[dict[str, Any]]) -> dict[str, Any]:
    first = node[0] if node else {}
    env = {"host": socket.gethostname(), "python": platform.python_version()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda"] = torch.version.cuda
        env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:
        env["torch"] = None
    env.update({k: first[k] for k in ("device_name", "gpus") if k in first})
    return env


def build(args: argparse.Namespace) -> dict[str, Any]:
    items = read_items(args.items)
    nodes = []
    for item in items:
        if item["status"] != "ok" and item["status"] != "skipped":
            item["log_tail"] = log_tail(args.logs, item["name"])
        if item["name"].startswith("node/"):
            detail = node_detail(args.logs, item["name"].split("/", 1)[1])
            if detail is not None:
                item["node"] = {name: {k: v for k, v in i.items() if k != "detail"} | _energy(i)
                                for name, i in detail["items"].items()}
                nodes.append(detail)
                if detail.get("energy_projection"):
                    item["energy_projection"] = detail["energy_projection"]
    perflogs = perflog_lines(args.logs.parent / "perflogs") if (args.logs.parent / "perflogs").is_dir() else []
    run = args.logs.parent / "run" / "summary.json"
    return {
        "mode": args.mode, "budget_s": args.budget, "seconds": args.seconds, "environment": environment(nodes),
        "counts": {s: sum(i["status"] == s for i in items) for s in ("ok", "skipped", "failed", "timed out")},
        "items": items, "perflog_lines": perflogs,
        "pretrain_summary": json.loads(run.read_text()) if run.is_file() else None,
        "transfer_table": transfer_table(args.logs),
    }


def _energy(item: dict[str, Any]) -> dict[str, Any]:
    d = item.get("detail", {})
    return {k: d[k] for k in ("images_per_s_total", "mfu", "watts", "images_per_joule", "energy_counter") if k in d}


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    c = result["counts"]
    out = [f"# GPU acceptance ({result['mode']} mode)", "",
           f"{env.get('device')} on {env['host']}, Python {env['python']}, torch {env.get('torch')} "
           f"(CUDA {env.get('cuda')}); {result['seconds']} s of a {result['budget_s']} s budget.", "",
           f"{c['ok']} ok, {c['skipped']} skipped, {c['failed']} failed, {c['timed out']} timed out.", "",
           "| item | status | s | note |", "|---|---|---:|---|"]
    out += [f"| {i['name']} | {i['status']} | {i['seconds']} | {i['note']} |" for i in result["items"]]
    for item in result["items"]:
        if "node" in item:
            out += ["", f"## {item['name']}", "", "| item | status | result |", "|---|---|---|"]
            out += [f"| {n} | {i['status']} | {i['figure'] or i['reason']} |" for n, i in item["node"].items()]
        if item.get("energy_projection"):
            out += ["", "Projected GPU energy of the paper's pre-training runs (measured J/image x images):", "",
                    "| config | images | J/image | kWh | basis |", "|---|---:|---:|---:|---|"]
            out += [f"| {p['config']} | {p['images']:,} | {_num(p['joules_per_image'], '.3f')} | "
                    f"{_num(p['kwh'], ',.1f')} | {p['basis']} |" for p in item["energy_projection"]]
        if item.get("log_tail"):
            out += ["", f"## {item['name']}: {item['status']}, the log's last lines", "", "```",
                    item["log_tail"], "```"]
    if result["perflog_lines"]:
        out += ["", "## ReFrame perflogs", "", "```", *result["perflog_lines"], "```"]
    if result["pretrain_summary"]:
        s = result["pretrain_summary"]
        out += ["", "## Pre-training", "",
                f"{s.get('model')} {s.get('precision')}: {s.get('steps')} of {s.get('total_steps')} steps, "
                f"finished {s.get('finished')}, loss {s.get('loss')}"]
    if result["transfer_table"]:
        out += ["", "## Transfer from it", "", *result["transfer_table"]]
    return "\n".join(out) + "\n"


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)  # the basis column says why


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=Path, required=True, help="the items' TSV: name, status, seconds, note")
    parser.add_argument("--logs", type=Path, required=True, help="logs/ of the run (NAME.log, node-GROUP.json)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mode", required=True)
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--seconds", type=int, required=True)
    args = parser.parse_args(argv)
    result = build(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "acceptance.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.out / "summary.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
