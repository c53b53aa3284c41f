"""Validation after each pre-training epoch: its rows, best.pt, ranks, a stop mid-validation,
and which checkpoint transfer starts from."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from _data_fixtures import jpeg_bytes, write_tiny
from _transfer_fixtures import one_thread, write_checkpoint  # noqa: F401
from conftest import run_xferscale
from xferscale.checkpoint import file_digest, load_checkpoint, save_checkpoint
from xferscale.cli import main
from xferscale.config import ConfigError, builtin_configs, load_config
from xferscale.data.loader import build_loader
from xferscale.data.records import NEGATIVE, POSITIVE, UNKNOWN, DatasetSpec, Reconciliation, Sample
from xferscale.data.writer import write_dataset
from xferscale.losses import masked_sigmoid_bce
from xferscale.metrics import mean_roc_auc
from xferscale.models import build_model
from xferscale.results import ResultStore
from xferscale.trainer import Trainer
from xferscale.transfer.pretrained import resolve_checkpoint
from xferscale.validation import Validator, validation_data


def rows(run: Path, kind: str = "validation") -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if row["kind"] == kind]


def model_of(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"weights differ at {key}"


def in_process(out: Path, tiny_args: list[str], *extra: str):
    return load_config(None, [*tiny_args, "distributed.backend=none", f"output_dir={out}", *extra])


def test_a_tiny_run_validates_each_epoch_and_keeps_best_pt(tmp_path, tiny_args):
    proc = run_xferscale("pretrain", *tiny_args, "schedule.epochs=3", f"output_dir={tmp_path}")
    val = rows(tmp_path)
    assert [(r["epoch"], r["step"], r["val_samples"]) for r in val] == [(0, 8, 128), (1, 16, 128), (2, 24, 128)]
    assert all(0 <= r["val_top1"] <= 100 for r in val)
    losses = [r["val_loss"] for r in val]
    assert [r["best"] for r in val] == [loss < min(losses[:i], default=float("inf")) for i, loss in enumerate(losses)]
    chosen = losses.index(min(losses))
    best = load_checkpoint(tmp_path / "best.pt")  # verified against best.pt.sha256
    assert (tmp_path / "best.pt.sha256").read_text().split() == [file_digest(tmp_path / "best.pt")]
    assert best["selected_by"]["epoch"] == chosen and best["selected_by"]["val_loss"] == losses[chosen]
    assert best["step"] == 8 * (chosen + 1) and "optimizer" not in best
    last = load_checkpoint(tmp_path / "checkpoint.pt")
    assert last["validation"] == {"best_loss": losses[chosen], "best_epoch": chosen, "pending_epoch": None}
    assert last["train_data"] == {"path": None, "split": "train", "source": "strokes"}
    assert f"best: {tmp_path / 'best.pt'}" in proc.stdout
    assert proc.stdout.count("validation after epoch") == 3


def test_best_pt_holds_the_weights_of_the_lowest_validation_loss(tmp_path, tiny_args, monkeypatch):
    """Validation losses 2, 1, 1.5: best.pt is epoch 1's weights, which a 2-epoch run ends with
    (a constant schedule, so the first two epochs of both runs are the same)."""
    constant = ["schedule.kind=constant", "train.validate=false"]
    Trainer(in_process(tmp_path / "two", tiny_args, *constant, "schedule.epochs=2")).fit()
    scripted = iter([2.0, 1.0, 1.5])
    real_run = Validator.run

    def run(self, *args, **kwargs):
        result = real_run(self, *args, **kwargs)
        return dataclasses.replace(result, loss=next(scripted))

    monkeypatch.setattr(Validator, "run", run)
    three = tmp_path / "three"
    Trainer(in_process(three, tiny_args, "schedule.kind=constant", "schedule.epochs=3")).fit()
    assert [r["best"] for r in rows(three)] == [True, True, False]
    assert_same(model_of(three / "best.pt"), model_of(tmp_path / "two" / "checkpoint.pt"))
    assert load_checkpoint(three / "best.pt")["selected_by"]["epoch"] == 1


@pytest.mark.parametrize("interrupted_pass", [2, 3], ids=["mid-run", "last-epoch"])
def test_a_stop_during_validation_resumes_to_the_uninterrupted_run(tmp_path, tiny_args, interrupted_pass):
    extra = ["schedule.epochs=3", "train.log_every=1"]
    Trainer(in_process(tmp_path / "full", tiny_args, *extra)).fit()

    cut = tmp_path / "cut"
    trainer = Trainer(in_process(cut, tiny_args, *extra))
    real_epoch, passes = trainer.validator.loader.epoch, []

    def epoch(number: int, start_batch: int = 0):
        passes.append(number)
        for index, batch in enumerate(real_epoch(number, start_batch)):
            if len(passes) == interrupted_pass and index == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # a real signal, caught by the trainer's handler
            yield batch

    trainer.validator.loader.epoch = epoch
    summary = trainer.fit()
    assert summary["stopped_by_signal"] and summary["steps"] == 8 * interrupted_pass
    assert load_checkpoint(cut / "checkpoint.pt")["validation"]["pending_epoch"] == interrupted_pass - 1
    assert [r["epoch"] for r in rows(cut)] == list(range(interrupted_pass - 1))

    resumed = Trainer(in_process(cut, tiny_args, *extra)).fit(resume=True)
    assert resumed["finished"] and not resumed.get("already_finished")
    assert_same(model_of(cut / "checkpoint.pt"), model_of(tmp_path / "full" / "checkpoint.pt"))
    assert_same(model_of(cut / "best.pt"), model_of(tmp_path / "full" / "best.pt"))
    assert rows(cut) == rows(tmp_path / "full")  # same figures, each epoch once
    assert [r["step"] for r in rows(cut, "train")] == list(range(1, 25))


def _multilabel_source(root: Path) -> Path:
    """A prepared multilabel source in the writer's real format: 32 train, 9 val images (two
    ranks: shards of 5 and 4, batches of 4, so one rank has a batch more); unknown labels, and
    a label whose known val entries are all negative (its AUC undefined)."""
    spec = DatasetSpec("xray3", "multilabel", ("Edema", "Effusion", "Fracture"))
    raw = root / "raw"
    raw.mkdir(parents=True)
    samples = []
    for split, count in (("train", 32), ("val", 9)):
        for i in range(count):
            edema, effusion = i % 2, (i // 2) % 2
            fracture = NEGATIVE if split == "val" else i % 3 == 0
            labels = (POSITIVE if edema else NEGATIVE, UNKNOWN if i % 4 == 3 else (POSITIVE if effusion else NEGATIVE),
                      UNKNOWN if i % 5 == 4 else int(fracture))
            path = raw / f"{split}{i:02d}.jpg"
            path.write_bytes(jpeg_bytes(40 + 120 * edema + 60 * effusion, (20, 18)))
            samples.append(Sample(f"{split}/{i:02d}", split, path, labels, "xray3", patient=f"{split}{i}"))
    write_dataset(spec, samples, root / "prepared", Reconciliation(), shard_size=5, progress=False)
    return root / "prepared"


def test_two_ranks_validate_a_multilabel_source_as_one_process(tmp_path):
    """Each run's last row is the masked training loss and mean AUC of its final weights over
    all 9 images, computed here in one pass: the ranks' shards are reduced and gathered whole."""
    data = _multilabel_source(tmp_path)
    args = ["train.progress=false", "data.source=prepared", f"data.path={data}", "model.num_classes=null",
            "data.image_size=16", "data.workers=0", "train.loss=sigmoid_bce", "train.global_batch=8",
            "schedule.epochs=2", "schedule.warmup_steps=2", "train.log_every=2", "train.validate=true"]
    cfg = load_config(None, args)
    loader = build_loader(validation_data(cfg.data), batch_size=9, rank=0, world_size=1, device=torch.device("cpu"),
                          train=False, seed=0, num_classes=3, multilabel=True)
    (images, targets), = list(loader.epoch(0))
    for run, nproc in (("one", 1), ("two", 2)):
        run_xferscale("pretrain", *args, f"output_dir={tmp_path / run}", nproc=nproc)
        val = rows(tmp_path / run)
        assert [(r["epoch"], r["val_samples"], r["val_auc_undefined_labels"]) for r in val] == [(0, 9, [2]), (1, 9, [2])]
        model = build_model("tiny", 3)
        model.load_state_dict(model_of(tmp_path / run / "checkpoint.pt"))
        with torch.no_grad():
            logits = model.eval()(images)
        assert val[-1]["val_loss"] == pytest.approx(masked_sigmoid_bce(logits, targets).item(), rel=1e-5), run
        assert val[-1]["val_mean_auc"] == pytest.approx(mean_roc_auc(logits, targets).value, abs=1e-6), run


def test_a_prepared_source_without_its_val_split_stops_at_start_in_one_line(tmp_path, tiny_args):
    data = write_tiny(tmp_path / "ds", tmp_path / "raw")  # a train split only
    proc = run_xferscale("pretrain", *tiny_args, "data.source=prepared", f"data.path={data}", "model.num_classes=null",
                         "train.global_batch=4", "data.workers=0", f"output_dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"data.val_split: the prepared folder {data} has no split 'val'" in proc.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_validation_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="train.validate: the synthetic source has no held-out set"):
        load_config(None, ["data.source=synthetic", "train.validate=true"])
    assert not load_config(None, ["data.source=synthetic"]).validates
    assert load_config(None, []).validates  # the embedded strokes source: a fixed held-out set
    with pytest.raises(ConfigError, match="data.val_split: 'train' is the training split itself"):
        load_config(None, ["data.source=prepared", f"data.path={tmp_path}", "data.val_split=train"])
    assert not load_config(None, ["train.validate=false"]).validates
    with pytest.raises(ConfigError, match=r"data.val_samples: 16 held-out glyphs are fewer than one global batch \(32\)"):
        load_config(None, ["data.val_samples=16"])


def test_transfer_starts_from_best_pt_and_records_which_file(tmp_path, capsys):
    run = tmp_path / "run"
    last = write_checkpoint(run / "checkpoint.pt", name="tiny_strokes", seed=0)
    assert resolve_checkpoint(run) == resolve_checkpoint(last) == last  # no best.pt: the last state
    best = write_checkpoint(run / "best.pt", name="tiny_strokes", seed=1)
    state = load_checkpoint(best)
    save_checkpoint(best, {**state, "selected_by": {"epoch": 3, "step": 7, "val_loss": 0.25, "metric": "top1",
                                                    "value": 50.0, "samples": 8}})
    assert resolve_checkpoint(run) == resolve_checkpoint(last) == best
    assert resolve_checkpoint(last, last=True) == resolve_checkpoint(run, last=True) == last
    other = write_checkpoint(tmp_path / "elsewhere.pt")
    assert resolve_checkpoint(other) == other

    common = ["--shots", "full", "--seeds", "0", "--schedule-scale", "0.01", "--crop", "8", "--baselines", "none",
              "--no-progress", "--no-report"]
    for extra, chosen in (([], best), (["--last-checkpoint"], last)):
        results = tmp_path / f"res-{chosen.stem}"
        assert main(["transfer", "--checkpoint", str(run), "--results", str(results), *common, *extra]) == 0
        out = capsys.readouterr().out
        (record,) = ResultStore(results).records()
        assert record.config["checkpoint_file"] == chosen.name
        assert record.config["checkpoint_sha256"] == file_digest(chosen)
        assert f"checkpoint: {chosen}" in out
        assert ("lowest validation loss 0.2500, after epoch 3" in out) == (chosen == best)


@pytest.mark.parametrize("name", sorted(n for n in builtin_configs() if n.startswith(("r50x1_", "r152x4_"))))
def test_shipped_configs_validate_as_the_papers_code(name):
    cfg = load_config(name, require_data=False)
    assert cfg.validates == (not name.endswith("in21k")) and cfg.data.val_split == "val"
    if name.endswith("in1k"):  # imagenet1k_bit{50x1,152x4}_optimized.yaml: cosine + RandAugment
        epochs = 120 if name.startswith("r50x1") else 90
        assert (cfg.schedule.epochs, cfg.schedule.warmup_epochs, cfg.schedule.warmup_steps) == (epochs, 15, None)
        assert cfg.schedule.kind == "cosine" and cfg.data.pipeline == "natural_randaugment"
        assert cfg.train.global_batch == 4096
