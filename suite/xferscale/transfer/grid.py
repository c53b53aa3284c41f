"""The (shots x seeds) grid of one checkpoint on one target, spread over ranks.

Each rank (``RANK``/``WORLD_SIZE`` from torchrun, or ``SLURM_PROCID``/``SLURM_NTASKS``
under srun) runs its share of the runs on its own device, one run at a time: runs are
independent, so no process group is needed. Shares are dealt longest run first, round
robin, the same on every rank, so the split is deterministic and balanced. A run whose
record exists (same configuration hash) is skipped; an unfinished one resumes from its
state in the results folder's ``.work``; a record is written only when a run has finished.
A run that cannot exist (``k`` shots of a class with fewer examples) is recorded at once as
infeasible, with the reason, and the grid goes on.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from xferscale.preemption import StopRequest
from xferscale.results import FULL, Claim, ResultRecord, ResultStore, RunKey, Shots, config_hash
from xferscale.transfer.finetune import FineTuneSettings, Preempted
from xferscale.transfer.methods import FINETUNE, TransferMethod
from xferscale.transfer.pretrained import Pretrained
from xferscale.transfer.targets import Target


@dataclass(frozen=True)
class PlannedRun:
    key: RunKey
    config: dict[str, Any]
    config_hash: str
    steps: int  # the rule's step count, the cost estimate used to balance ranks
    infeasible: str | None = None  # why the run cannot exist


@dataclass
class GridSummary:
    ran: list[ResultRecord] = field(default_factory=list)
    skipped: list[RunKey] = field(default_factory=list)
    elsewhere: int = 0  # runs of the grid assigned to other ranks
    held: list[RunKey] = field(default_factory=list)  # runs another live job is doing

    def merged(self, other: "GridSummary") -> "GridSummary":
        """Both grids' runs together (the arms of one command)."""
        return GridSummary(self.ran + other.ran, self.skipped + other.skipped, self.elsewhere + other.elsewhere,
                           self.held + other.held)


def plan_grid(pretrained: Pretrained, target: Target, shots: Sequence[Shots], seeds: Sequence[int],
              settings: FineTuneSettings, method: TransferMethod = FINETUNE) -> list[PlannedRun]:
    """Every run of the grid with the configuration that identifies its result."""
    runs = []
    source = method.source_name(pretrained.source)
    for s in shots:
        for seed in seeds:
            config = {
                "pretrained": pretrained.fingerprint,
                "target": target.fingerprint(),
                "shots": s,
                "seed": seed,
                "settings": settings.result_config(),
            }
            if method is not FINETUNE:  # fine-tuning records keep the hashes they had before methods existed
                config["method"] = {"name": method.name, **method.config}
            key = RunKey(source, pretrained.model_name, target.spec.name, s, seed)
            problem = target.fewshot_problem(s, seed)
            if problem is not None:
                config["infeasible"] = problem
                runs.append(PlannedRun(key, config, config_hash(config), 0, problem))
                continue
            rule = settings.rule_for(target.train_size(s, seed), target.spec)
            config["rule"] = rule.to_dict()
            runs.append(PlannedRun(key, config, config_hash(config), rule.steps * rule.batch_size))
    return runs


def assign(runs: Sequence[PlannedRun], rank: int, world_size: int) -> list[PlannedRun]:
    """This rank's runs: longest first, dealt round robin (identical on every rank)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    order = sorted(runs, key=lambda r: (-r.steps, r.key.shots == FULL, str(r.key.shots), r.key.seed))
    return [run for i, run in enumerate(order) if i % world_size == rank]


def run_grid(
    pretrained: Pretrained,
    target: Target,
    shots: Sequence[Shots],
    seeds: Sequence[int],
    settings: FineTuneSettings,
    store: ResultStore,
    device: torch.device,
    *,
    rank: int = 0,
    world_size: int = 1,
    overwrite: bool = False,
    extra_config: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    method: TransferMethod = FINETUNE,
) -> GridSummary:
    runs = plan_grid(pretrained, target, shots, seeds, settings, method)
    mine = assign(runs, rank, world_size)
    summary = GridSummary(elsewhere=len(runs) - len(mine))
    todo = []
    for run in mine:
        if store.is_finished(run.key, run.config_hash, overwrite=overwrite):
            summary.skipped.append(run.key)
        else:
            todo.append(run)
    log(f"[rank {rank}/{world_size}] {len(mine)} of {len(runs)} runs here: {len(summary.skipped)} already done, "
        f"{len(todo)} to run on {device}")
    stop = StopRequest()  # the command's shared record of a stop signal
    for i, run in enumerate(todo, 1):
        if stop.signum is not None:  # e.g. during the last evaluation: its record is written
            raise Preempted(f"stopped by signal {stop.signum} before run {i} of {len(todo)} on this rank; the "
                            "finished runs have their records; run the same command again to continue")
        claim = store.claim(run.key)
        if claim is None:
            log(f"  {run.key}: another job is running it; left to that job")
            summary.held.append(run.key)
            continue
        try:
            if store.is_finished(run.key, run.config_hash, overwrite=overwrite):  # another job finished it meanwhile
                summary.skipped.append(run.key)
                continue
            if run.infeasible is not None:
                summary.ran.append(_record_infeasible(run, target, store, log))
                continue
            summary.ran.append(_run_one(pretrained, target, run, settings, store, device, extra_config, log,
                                        f"[{i}/{len(todo)}]", claim, method))
        finally:
            claim.release()
    return summary


def _run_one(pretrained: Pretrained, target: Target, run: PlannedRun, settings: FineTuneSettings, store: ResultStore,
             device: torch.device, extra_config: dict[str, Any] | None, log: Callable[[str], None], position: str,
             claim: Claim, method: TransferMethod) -> ResultRecord:
    """Run and evaluate one claimed run, write its record, remove its resume state."""
    work = store.work_dir(run.key)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    out = method.run(pretrained, target, run.key.shots, run.key.seed, settings, device, work,
                     desc=f"{position} {run.key.source} -> {run.key.target} shots={run.key.shots} seed={run.key.seed}",
                     heartbeat=claim.refresh)
    m = out.metric
    record = ResultRecord(
        source=run.key.source, model=run.key.model, target=run.key.target, shots=run.key.shots,
        seed=run.key.seed, metric=m.name, value=m.value, steps=out.steps, time_s=round(out.time_s, 3),
        config_hash=run.config_hash,
        config={**run.config, **(extra_config or {}), "source_images": pretrained.source_images,
                "model_params_m": pretrained.params_m,
                "checkpoint": str(pretrained.path) if pretrained.path else None,
                "checkpoint_file": pretrained.path.name if pretrained.path else None,
                "checkpoint_sha256": pretrained.sha256, "device": str(device), "started": started},
        detail={**m.to_dict(), "final_train_loss": out.final_loss, "resumed_from_step": out.resumed_from,
                "train_size": out.rule.train_size},
    )
    store.save(record)
    shutil.rmtree(work, ignore_errors=True)
    value = "undefined" if m.value is None else f"{m.value:.2f}"
    log(f"  {run.key}: {m.name} {value} ({out.steps} steps, {out.time_s:.1f} s"
        + (f", resumed at step {out.resumed_from}" if out.resumed_from else "") + ")")
    return record


def _record_infeasible(run: PlannedRun, target: Target, store: ResultStore,
                       log: Callable[[str], None]) -> ResultRecord:
    k = run.key
    record = ResultRecord(source=k.source, model=k.model, target=k.target, shots=k.shots, seed=k.seed,
                          metric=target.spec.metric, value=None, steps=0, time_s=0.0, config_hash=run.config_hash,
                          config=run.config, infeasible=run.infeasible)
    store.save(record)
    log(f"  {k}: infeasible ({run.infeasible}); recorded, not retried")
    return record
