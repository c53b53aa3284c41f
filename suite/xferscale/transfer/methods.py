"""How a grid turns pre-trained weights into a result: the transfer methods by name.

``finetune`` is the paper's (every layer trained with the BiT-HyperRule); ``linear_probe``
fits a logistic regression on the frozen features, a baseline. A method's records carry
its own source name, so a results folder, its tables and its few-shot curves hold both
side by side (``in21k`` and ``in21k-linear``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from xferscale.transfer.finetune import RunOutcome, finetune
from xferscale.transfer.linear_probe import PROBE_C, PROBE_MAX_ITER, linear_probe


@dataclass(frozen=True)
class TransferMethod:
    name: str
    run: Callable[..., RunOutcome]  # finetune's signature
    suffix: str = ""  # appended to the source name in the records
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # its own settings, part of each record's configuration

    def source_name(self, source: str) -> str:
        return f"{source}{self.suffix}"


FINETUNE = TransferMethod("finetune", finetune, description="fine-tune every layer with the BiT-HyperRule")
LINEAR_PROBE = TransferMethod("linear_probe", linear_probe, suffix="-linear",
                              description="logistic regression on the frozen pre-logit features",
                              config={"C": PROBE_C, "max_iter": PROBE_MAX_ITER})
METHODS: dict[str, TransferMethod] = {m.name: m for m in (FINETUNE, LINEAR_PROBE)}
