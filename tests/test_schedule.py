"""Pre-training schedules checked against the dataset's real size, and --print-schedule."""
from __future__ import annotations

import pytest

from _data_fixtures import write_tiny
from xferscale.cli import main
from xferscale.config import ConfigError, builtin_configs, load_config
from xferscale.schedule import plan_for_size

# Training-split sizes on the real releases, the paper's code's training sets: ImageNet-1k train;
# ImageNet-21k winter21; CheXpert's PA/AP rows of train.csv, 191,010 (measured on the real table,
# test_prep_medical.py::test_chexpert_on_the_real_label_table), 223,397 with the laterals the 4-set
# keeps; MIMIC-CXR PA/AP train about 238,000 (not measured: its tables are credentialed; 243,334
# PA/AP images in all, 97.8 % of MIMIC-CXR-JPG's images are in the train split); NIH train_val_list
# 86,524; PadChest's 90 %, 144,574 per patient (the code: 144,638).
CHEXPERT, CHEXPERT_ALL_VIEWS, MIMIC, NIH, PADCHEST = 191_010, 223_397, 238_000, 86_524, 144_574
REAL_TRAIN_SIZES = {
    "in1k": 1_281_167, "in21k": 13_150_000,
    "chexpert": CHEXPERT, "chexpert_mimic": CHEXPERT + MIMIC, "chexpert_mimic_nih": CHEXPERT + MIMIC + NIH,
    "chexpert_mimic_nih_padchest": CHEXPERT_ALL_VIEWS + MIMIC + NIH + PADCHEST,
}


def _plan(cfg, samples):
    return plan_for_size(cfg, samples)


@pytest.mark.parametrize("name", sorted(n for n in builtin_configs() if n.startswith(("r50x1_", "r152x4_"))))
def test_every_shipped_config_has_a_valid_schedule_at_the_real_size(name):
    cfg = load_config(name, require_data=False)
    source = name.split("_", 1)[1]
    plan = _plan(cfg, REAL_TRAIN_SIZES[source]).check()
    assert plan.warmup_steps < plan.total_steps
    if plan.decay_steps:
        assert plan.warmup_steps < plan.decay_steps[0] < plan.decay_steps[-1] < plan.total_steps
    # also at a tenth of the size (a partial download): the warm-up in epochs keeps its place
    if cfg.schedule.warmup_epochs is not None:
        _plan(cfg, REAL_TRAIN_SIZES[source] // 10).check()


def test_the_papers_text_settings_break_on_medical_sources_and_the_error_names_both_steps():
    text = ["train.global_batch=4096", "schedule.warmup_steps=5000", "schedule.warmup_epochs=null"]
    chexpert = _plan(load_config("r50x1_chexpert", text, require_data=False), REAL_TRAIN_SIZES["chexpert"])
    assert chexpert.steps_per_epoch == 46  # all 90 epochs are warm-up
    with pytest.raises(ConfigError, match=r"the run is 4140 steps but its warm-up is 5000 steps"):
        chexpert.check()
    mimic = _plan(load_config("r50x1_chexpert_mimic", text, require_data=False), REAL_TRAIN_SIZES["chexpert_mimic"])
    assert mimic.steps_per_epoch == 104 and mimic.decay_steps[0] == 3120
    with pytest.raises(ConfigError, match=r"warm-up ends at step 5000 but the first decay is at step 3120"):
        mimic.check()
    short = load_config("r50x1_in1k", ["schedule.epochs=1", *text[1:]], require_data=False)
    with pytest.raises(ConfigError, match=r"the run is 312 steps but its warm-up is 5000 steps"):
        _plan(short, 1_281_000).check()


def test_warmup_in_epochs_follows_the_dataset_size():
    cfg = load_config("r50x1_chexpert", require_data=False)
    assert _plan(cfg, 102_400).warmup_steps == 15 * 100
    assert _plan(cfg, 204_800).warmup_steps == 15 * 200


def test_exactly_one_warmup_form():
    with pytest.raises(ConfigError, match="set exactly one of them"):
        load_config("r50x1_chexpert", ["schedule.warmup_steps=10"], require_data=False)


def test_print_schedule_reads_the_prepared_size(tmp_path, capsys):
    write_tiny(tmp_path / "ds", tmp_path / "raw", n_jpeg=40, n_png=0)
    args = ["pretrain", "-c", "r50x1_chexpert", f"data.path={tmp_path / 'ds'}", "train.global_batch=4",
            "--print-schedule"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "samples per epoch : 40" in out and "steps per epoch   : 10" in out
    assert "warm-up ends      : step 150 (epoch 15.00)" in out and "decay /10         : step 300 (epoch 30.00)" in out
    assert "total             : 900 steps" in out and "ok:" in out
    assert main(args[:-1] + ["schedule.warmup_epochs=40", "--print-schedule"]) == 2
    err = capsys.readouterr().err
    assert "warm-up ends at step 400 but the first decay is at step 300" in err and "Traceback" not in err
