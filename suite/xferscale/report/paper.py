"""The paper's reference values (``xferscale/reference/paper.yaml``) as look-ups.

Source names are the paper's keys: ``in1k``, ``in21k`` for the natural sources and
``chexpert``, ``chexpert_mimic``, ``chexpert_mimic_nih``, ``chexpert_mimic_nih_padchest``
for the growing medical ones (the poster's ``s_med`` and ``l_med`` are aliases of the
first and the last; on the PadChest targets the poster's ``l_med`` is ``chexpert_mimic_nih``,
as ``poster_sources`` in the YAML says). A cell the paper prints as ``--`` (``paper_no_run``)
has no value, from the paper or the poster.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

# Which paper table a (model, source) row belongs to, in the paper's row order.
TABLE_KEYS = {"table1": "paper_table1", "table2": "paper_table2"}
TABLE_TITLES = {
    "table1": "Table 1: full-shot transfer from natural sources",
    "table2": "Table 2: full-shot transfer from growing medical sources",
}
SOURCE_ALIASES = {"s_med": "chexpert", "l_med": "chexpert_mimic_nih_padchest"}
# BiT's published weights (xferscale.transfer.public_weights) -> the paper's source they stand beside:
# their rows sit under the paper's row and are compared with its values, labelled as BiT's.
PUBLIC_WEIGHT_SOURCES = {"bit_s": "in1k", "bit_m": "in21k"}
# Tokens of a medical source name -> keys of pretraining.sources.medical.datasets.
MEDICAL_TOKENS = {"chexpert": "chexpert", "mimic": "mimic_cxr", "nih": "nih", "padchest": "padchest"}


@functools.lru_cache(maxsize=1)
def load_paper() -> dict[str, Any]:
    text = resources.files("xferscale").joinpath("reference/paper.yaml").read_text()
    return yaml.safe_load(text)


def canonical_source(source: str) -> str:
    return SOURCE_ALIASES.get(source, source)


# The paper's ± is pandas' std (n-1) over its code's result rows, which hold each of the 5 runs
# twice (e.g. results/finetuning_results_padchest_test_mean_auc.csv): sqrt(sum 2d^2 / 9) =
# sqrt(8/9) * sqrt(sum d^2 / 4), about 6 % below the 5-seed std, which is the printed one times this.
PAPER_STD_TO_SEED_STD = math.sqrt(9 / 8)
# A difference to the paper is within its spread if |Δ| <= max(2 seed stds, 1 point) (as the checks).
WITHIN_STDS, WITHIN_POINTS = 2.0, 1.0


@dataclass(frozen=True)
class PaperValue:
    mean: float
    std: float  # as printed
    where: str  # "paper_table1", "paper_table2" or "poster_table1"

    @property
    def seed_std(self) -> float:
        """The std over the 5 seeds that the printed one understates."""
        return self.std * PAPER_STD_TO_SEED_STD

    def within(self, ours: float) -> bool:
        return abs(ours - self.mean) <= max(WITHIN_STDS * self.seed_std, WITHIN_POINTS)


def paper_source(source: str) -> str:
    """The paper's source a row is compared with: itself, its alias, or what BiT's weights stand beside."""
    return canonical_source(PUBLIC_WEIGHT_SOURCES.get(source, source))


def paper_has_no_run(source: str, target: str) -> bool:
    """The paper prints ``--`` for this cell: neither it nor its code has such a run."""
    return target in load_paper().get("paper_no_run", {}).get(paper_source(source), ())


def poster_source(name: str, target: str) -> str:
    """The paper's source a poster row stands for on a target."""
    sources = load_paper()["poster_sources"].get(name)
    return name if sources is None else sources.get(target, sources["all"])


def paper_value(model: str, source: str, target: str) -> PaperValue | None:
    """The paper's full-shot value for a model, source and target; the poster's if only it has one.
    For BiT's published weights (``bit_s`` / ``bit_m``): the value of the source they stand beside."""
    paper = load_paper()
    source = paper_source(source)
    if paper_has_no_run(source, target):
        return None
    for key in TABLE_KEYS.values():
        cells = paper[key].get(model, {}).get(source, {})
        if target in cells:
            mean, std = cells[target]
            return PaperValue(float(mean), float(std), key)
    for name, cells in paper["poster_table1"].get(model, {}).items():
        if poster_source(name, target) == source and target in cells:
            mean, std = cells[target]
            return PaperValue(float(mean), float(std), "poster_table1")
    return None


def table_rows(table: str) -> list[tuple[str, str]]:
    """The (model, source) rows of a paper table, in its order."""
    data = load_paper()[TABLE_KEYS[table]]
    return [(model, source) for model, sources in data.items() for source in sources]


def table_targets(table: str) -> list[str]:
    """The target columns of a paper table, in its order."""
    seen: dict[str, None] = {}
    for _, sources in load_paper()[TABLE_KEYS[table]].items():
        for cells in sources.values():
            seen.update(dict.fromkeys(cells))
    return list(seen)


def table_of(model: str, source: str) -> str | None:
    """Which paper table holds a (model, source) row (or the row BiT's weights stand beside), if any."""
    for table in TABLE_KEYS:
        if (model, paper_source(source)) in table_rows(table):
            return table
    return None


def target_metric(target: str, default: str = "acc") -> str:
    return load_paper()["targets"].get(target, {}).get("metric", default)


def target_domain(target: str) -> str | None:
    return load_paper()["targets"].get(target, {}).get("domain")


def uses_oversampling(target: str) -> bool:
    """Flowers-102 and COVIDx were fine-tuned with class-balanced oversampling."""
    return bool(load_paper()["targets"].get(target, {}).get("oversampling", False))


def source_images(source: str) -> float | None:
    """Number of pre-training images of a paper source (medical sources add their datasets)."""
    pre = load_paper()["pretraining"]["sources"]
    source = paper_source(source)
    if source in pre and "images" in pre[source]:
        return float(pre[source]["images"])
    datasets = pre["medical"]["datasets"]
    tokens = source.split("_")
    if tokens and all(t in MEDICAL_TOKENS for t in tokens):
        return sum(float(datasets[MEDICAL_TOKENS[t]]) for t in tokens)  # YAML 1.1 reads 224e3 as a string
    return None


def source_domain(source: str) -> str | None:
    source = canonical_source(source)
    if source in ("in1k", "in21k"):
        return "natural"
    if source_images(source) is not None:
        return "medical"
    return None


def model_params_m(model: str) -> float | None:
    models = load_paper()["pretraining"]["models"]
    return float(models[model]["params_m"]) if model in models else None
