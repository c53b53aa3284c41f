"""Few-shot grids end to end on tiny synthetic targets: records, restarts, resumes, ranks."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from _transfer_fixtures import FAST, multilabel_target, one_thread, pattern_images, tensor_target, write_checkpoint  # noqa: F401
from xferscale.results import FULL, ResultError, ResultStore
from xferscale.transfer.finetune import STATE_NAME, finetune
from xferscale.transfer.grid import assign, plan_grid, run_grid
from xferscale.transfer.mixup import mixup_batch
from xferscale.transfer.pretrained import load_pretrained
from xferscale.transfer.targets import TargetSpec, TensorTarget

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return load_pretrained(write_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"))


def quiet(_msg: str) -> None:
    pass


def test_grid_writes_one_record_per_run_and_a_restart_repeats_none(pretrained, tmp_path):
    target = tensor_target()
    store = ResultStore(tmp_path)
    first = run_grid(pretrained, target, [1, FULL], [0, 1], FAST, store, CPU, log=quiet)
    assert len(first.ran) == 4 and not first.skipped
    records = {(r.shots, r.seed): r for r in store.records()}
    assert set(records) == {(s, seed) for s in (1, FULL) for seed in (0, 1)}
    for r in records.values():
        assert (r.source, r.model, r.target, r.metric) == ("synth", "tiny", "synth", "acc")
        assert 0.0 <= r.value <= 100.0 and r.steps == 5 and r.time_s > 0
        assert r.config["settings"]["schedule_scale"] == 0.01  # the demo scale is recorded
        assert r.detail["num_samples"] == 12
    assert records[(1, 0)].detail["train_size"] == 3 and records[(FULL, 0)].detail["train_size"] == 18
    assert not (tmp_path / ".work").exists() or not any((tmp_path / ".work").rglob(STATE_NAME))

    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("seed-*.json")}
    again = run_grid(pretrained, target, [1, FULL], [0, 1], FAST, store, CPU, log=quiet)
    assert not again.ran and len(again.skipped) == 4
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("seed-*.json")}

    changed = dataclasses.replace(FAST, base_lr=0.002)
    with pytest.raises(ResultError, match="--overwrite"):
        run_grid(pretrained, target, [1], [0], changed, store, CPU, log=quiet)
    redo = run_grid(pretrained, target, [1], [0], changed, store, CPU, overwrite=True, log=quiet)
    assert len(redo.ran) == 1 and store.load(redo.ran[0].key).config["settings"]["base_lr"] == 0.002


def test_more_shots_than_a_class_has_is_recorded_infeasible_and_the_grid_goes_on(pretrained, tmp_path):
    from xferscale.report.aggregate import aggregate
    from xferscale.report.tables import cell_text

    target = tensor_target(per_class=6)
    store = ResultStore(tmp_path)
    out = run_grid(pretrained, target, [5, 10], [0, 1], FAST, store, CPU, log=quiet)
    assert len(out.ran) == 4
    records = {(r.shots, r.seed): r for r in store.records()}
    assert all(records[(5, s)].infeasible is None and records[(5, s)].value is not None for s in (0, 1))
    for s in (0, 1):
        r = records[(10, s)]
        assert r.value is None and r.steps == 0 and "class '0' has 6 samples, fewer than 10 shots" in r.infeasible
    again = run_grid(pretrained, target, [5, 10], [0, 1], FAST, store, CPU, log=quiet)
    assert not again.ran and len(again.skipped) == 4  # an infeasible cell is not retried
    cell = aggregate(store.records())[("synth", "tiny", "synth", 10)]
    assert cell.infeasible and cell.mean is None and cell.seeds == [0, 1]
    assert cell_text(cell, 2).startswith("infeasible (") and "fewer than 10 shots" in cell_text(cell, 2)


def test_source_images_are_the_pretraining_runs_real_count(tmp_path):
    """The power laws' x-axis: the prepared source's actual size, not the paper's nominal one."""
    winter21 = load_pretrained(write_checkpoint(tmp_path / "a.pt", name="tiny_in21k", train_samples=13_150_000))
    assert winter21.source == "in21k" and winter21.source_images == 13_150_000
    older = load_pretrained(write_checkpoint(tmp_path / "b.pt", name="tiny_in21k"))  # no count recorded
    assert older.source_images == 14e6  # the paper's figure, as a fallback


class Interrupted(Exception):
    pass


class InterruptAfter:
    """Wraps a target so that its training stops (as a killed job would) after ``n`` batches."""

    def __init__(self, target, n: int):
        self.target, self.n, self.spec = target, n, target.spec

    def __getattr__(self, name):
        return getattr(self.target, name)

    def train_batches(self, *args, **kwargs):
        inner = self.target.train_batches(*args, **kwargs)
        outer = self

        class Batches:
            num_samples = inner.num_samples

            def __len__(self):
                return len(inner)

            def epoch(self, epoch, start_batch=0):
                for batch in inner.epoch(epoch, start_batch):
                    if outer.n == 0:
                        raise Interrupted
                    outer.n -= 1
                    yield batch

        return Batches()


def test_interrupted_run_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(pretrained, tmp_path):
    target = tensor_target()
    reference = finetune(pretrained, target, FULL, 3, FAST, CPU)
    with pytest.raises(Interrupted):
        finetune(pretrained, InterruptAfter(target, 3), FULL, 3, FAST, CPU, work_dir=tmp_path)
    assert torch.load(tmp_path / STATE_NAME, weights_only=False)["step"] == 2  # checkpoint_every=2
    resumed = finetune(pretrained, target, FULL, 3, FAST, CPU, work_dir=tmp_path)
    assert resumed.resumed_from == 2 and resumed.steps == 5 and reference.resumed_from == 0
    assert resumed.final_loss == reference.final_loss
    assert resumed.metric.value == reference.metric.value


def test_runs_spread_over_ranks_cover_the_grid_once(pretrained, tmp_path):
    target = tensor_target()
    plan = plan_grid(pretrained, target, [1, 2, FULL], [0, 1, 2], FAST)
    shares = [assign(plan, r, 2) for r in range(2)]
    keys = [run.key for share in shares for run in share]
    assert sorted(map(str, keys)) == sorted(str(r.key) for r in plan) and len(set(keys)) == 9
    assert abs(len(shares[0]) - len(shares[1])) <= 1
    store = ResultStore(tmp_path)
    done = [run_grid(pretrained, target, [1], [0, 1, 2], FAST, store, CPU, rank=r, world_size=2, log=quiet)
            for r in range(2)]
    assert [len(d.ran) for d in done] == [2, 1] and done[0].elsewhere == 1
    assert sorted(r.seed for r in store.records()) == [0, 1, 2]


def test_multilabel_target_is_scored_with_mean_auc(pretrained, tmp_path):
    store = ResultStore(tmp_path)
    out = run_grid(pretrained, multilabel_target(), [FULL], [0], FAST, store, CPU, log=quiet)
    record = out.ran[0]
    assert record.metric == "auc" and set(record.detail["per_label"]) == {"L0", "L1", "L2"}
    assert record.value is None or 0.0 <= record.value <= 100.0


def test_large_target_trains_with_mixup(pretrained):
    n = 20_000  # the rule's threshold for MixUp (alpha 0.1) and the 10k-step schedule
    labels = torch.arange(n) % 2
    spec = TargetSpec("big", "multiclass", 2, "acc", (8, 8))
    target = TensorTarget(spec, pattern_images(labels, 2, 8, 1), labels, pattern_images(labels[:20], 2, 8, 2), labels[:20])
    settings = dataclasses.replace(FAST, schedule_scale=0.0005)  # 10k steps -> 5
    out = finetune(pretrained, target, FULL, 0, settings, CPU)
    assert out.rule.mixup_alpha == 0.1 and out.rule.boundaries == (1, 2, 3, 4, 5) and out.steps == 5


def test_mixup_mixes_images_and_targets_with_one_lambda():
    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 2, 2).clone()
    mixed, soft, lam = mixup_batch(images, torch.tensor([0, 1, 2, 0]), 0.1, 3, seed=5, step=7)
    assert soft.shape == (4, 3) and torch.allclose(soft.sum(1), torch.ones(4))
    again = mixup_batch(images, torch.tensor([0, 1, 2, 0]), 0.1, 3, seed=5, step=7)
    assert torch.equal(mixed, again[0]) and lam == again[2]
    # each image is lam * itself + (1 - lam) * a partner, and its target mixes the same way
    partner = (mixed[:, 0, 0, 0] - lam * images[:, 0, 0, 0]) / (1 - lam)
    assert torch.allclose(partner.round(), partner, atol=1e-4)
    multi = torch.tensor([[1.0, -1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    _, soft_ml, _ = mixup_batch(images, multi, 0.1, 2, seed=5, step=7)
    assert (soft_ml[:, 1][multi[:, 1] < 0] == -1).all()  # unknown stays unknown
