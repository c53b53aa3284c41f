"""Which shards of a prepared dataset one ``xferscale prepare`` task writes.

A dataset's shards are numbered across its splits (sorted by name); task ``index`` of
``count`` writes the shards whose number is ``index`` modulo ``count``, so the tasks get
equal shares whatever the split sizes. Under SLURM the slice comes from the environment:

- ``srun -n K xferscale prepare ...``: task ``SLURM_PROCID`` of ``SLURM_STEP_NUM_TASKS``;
- ``sbatch --array=0-3``: array task ``(SLURM_ARRAY_TASK_ID - MIN) / STEP`` of
  ``SLURM_ARRAY_TASK_COUNT``;
- both (an array of multi-task steps): the step's tasks subdivide the array task's slice.

A batch script's own shell (no ``srun``) is one task: ``SLURM_STEP_NUM_TASKS`` is set by
``srun`` only.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

from xferscale.data.records import PrepareError

_FORM = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class Slice:
    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise PrepareError(f"--slice {self.index}/{self.count}: need 0 <= index < count")

    def owns(self, shard_number: int) -> bool:
        return shard_number % self.count == self.index

    @property
    def whole(self) -> bool:
        return self.count == 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Slice(0, 1)


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise PrepareError(f"environment variable {name}={env[name]!r} is not a number") from None


def slice_from_environment(env: Mapping[str, str] | None = None) -> Slice:
    """The slice of this process under ``srun`` and/or a SLURM job array; the whole dataset otherwise."""
    env = os.environ if env is None else env
    index, count = 0, 1
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        step = _int(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
        first = _int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        index, count = (_int(env, "SLURM_ARRAY_TASK_ID") - first) // step, _int(env, "SLURM_ARRAY_TASK_COUNT")
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        tasks = _int(env, "SLURM_STEP_NUM_TASKS")
        index, count = index * tasks + _int(env, "SLURM_PROCID"), count * tasks
    return Slice(index, count)


def parse_slice(text: str) -> Slice:
    """``auto`` (from the SLURM environment), ``all``, or ``I/K``."""
    if text == "auto":
        return slice_from_environment()
    if text == "all":
        return WHOLE
    match = _FORM.match(text)
    if not match:
        raise PrepareError(f"--slice {text!r}: expected auto, all or INDEX/COUNT such as 0/4")
    return Slice(int(match[1]), int(match[2]))
