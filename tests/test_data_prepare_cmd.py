"""`xferscale prepare` end to end with converters discovered from a plug-in folder."""
from __future__ import annotations

import csv

import pytest

import xferscale.data_prep
from _data_fixtures import jpeg_bytes
from xferscale.cli import main
from xferscale.data.manifest import load_dataset_info

CSV_CONVERTER = '''
"""Test converter: labels.csv (file,label,split) next to an images/ folder."""
import csv
from pathlib import Path
from xferscale.data.converters import ConverterOption, register_converter
from xferscale.data.records import DatasetSpec, Sample

NAME = "tinycsv"
DESCRIPTION = "test images listed in labels.csv"
SOURCES = {"a": "b"}  # a module constant of the converter's own: never read as the protocol
NAMES = ConverterOption("names", ("short", "long"), "short", "class names")

@register_converter(NAME, DESCRIPTION, options=(NAMES,))
def read(raw, log, *, names="short"):
    spec = DatasetSpec(NAME, "multiclass", ("cat", "dog") if names == "short" else ("felis", "canis"))
    def samples():
        with open(Path(raw) / "labels.csv", newline="") as f:
            for row in csv.DictReader(f):
                log.row()
                if row["label"] not in ("cat", "dog"):
                    log.skip(row["file"], "unknown label")
                    continue
                yield Sample(row["file"], row["split"], Path(raw) / "images" / row["file"],
                             (("cat", "dog").index(row["label"]),), "tinycsv")
    return spec, samples()
'''

MERGED_CONVERTER = '''
from pathlib import Path
from xferscale.data.converters import register_converter
from xferscale.data.records import DatasetSpec, Sample

SOURCES = ("left", "right")

@register_converter("merged", "two sources in one dataset", sources=SOURCES)
def read(raw, log):
    spec = DatasetSpec("merged", "multiclass", SOURCES)
    def samples():
        for c, source in enumerate(SOURCES):
            for path in sorted(Path(raw[source]).glob("*.jpg")):
                log.row()
                yield Sample(f"{source}/{path.name}", "train", path, (c,), source)
    return spec, samples()
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "tinycsv.py").write_text(CSV_CONVERTER)
    (folder / "merged.py").write_text(MERGED_CONVERTER)
    # Looks like the old module protocol (NAME, DESCRIPTION, read, SOURCES) but registers nothing: ignored.
    (folder / "helpers.py").write_text('NAME = "helpers"\nDESCRIPTION = "x"\nSOURCES = {"a": 1}\n'
                                       'def read(raw, log):\n    raise AssertionError("not a converter")\n')
    monkeypatch.setattr(xferscale.data_prep, "__path__", [*xferscale.data_prep.__path__, str(folder)])
    yield
    import sys
    for name in ("tinycsv", "merged", "helpers"):
        sys.modules.pop(f"xferscale.data_prep.{name}", None)


def _raw_csv(root, n=12):
    (root / "images").mkdir(parents=True)
    with open(root / "labels.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["file", "label", "split"])
        for i in range(n):
            (root / "images" / f"{i}.jpg").write_bytes(jpeg_bytes(20 * i, (16, 16)))
            out.writerow([f"{i}.jpg", ("cat", "dog")[i % 2], "train" if i < 8 else "test"])
        out.writerow(["bird.jpg", "bird", "train"])


def test_prepare_end_to_end(plugins, tmp_path, capsys):
    _raw_csv(tmp_path / "raw")
    out = tmp_path / "out"
    rc = main(["prepare", "tinycsv", "--raw", str(tmp_path / "raw"), "--out", str(out), "--shard-size", "3", "--no-progress"])
    assert rc == 0
    info = load_dataset_info(out)
    assert {s: i.count for s, i in info.splits.items()} == {"test": 4, "train": 8}
    assert len(info.splits["train"].shards) == 3
    text = capsys.readouterr().out
    assert "13 rows read, 12 images written, 1 skipped" in text and "unknown label" in text

    rc = main(["prepare", "fewshot", "--dataset", str(out), "--shots", "1,3", "--seeds", "0-1"])
    assert rc == 0
    three = (out / "fewshot" / "3shot_seed1.txt").read_text().split()
    assert len(three) == 6 and len((out / "fewshot" / "1shot_seed0.txt").read_text().split()) == 2
    assert main(["prepare", "fewshot", "--dataset", str(out), "--shots", "5"]) == 2
    assert "class 'cat' has 4 samples, fewer than 5 shots" in capsys.readouterr().err


def test_converter_options_reach_read_and_bad_ones_are_one_line(plugins, tmp_path, capsys):
    _raw_csv(tmp_path / "raw")
    base = ["prepare", "tinycsv", "--raw", str(tmp_path / "raw"), "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "o1"), "--names", "long"]) == 0
    assert load_dataset_info(tmp_path / "o1").spec.classes == ("felis", "canis")
    assert main(base + ["--out", str(tmp_path / "o2"), "--names", "medium"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'tinycsv': --names 'medium' is not one of short, long" in err and "Traceback" not in err
    assert main(base + ["--out", str(tmp_path / "o3"), "--split", "official"]) == 2
    assert "dataset 'tinycsv' takes no --split" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_one_folder_converter_refuses_source_form(plugins, tmp_path, capsys):
    assert main(["prepare", "tinycsv", "--raw", f"x={tmp_path}", "--out", str(tmp_path / "o")]) == 2
    assert "takes one raw folder (--raw DIR), not SOURCE=DIR" in capsys.readouterr().err


def test_prepare_multi_source(plugins, tmp_path):
    for side in ("left", "right"):
        (tmp_path / side).mkdir()
        for i in range(2):
            (tmp_path / side / f"{i}.jpg").write_bytes(jpeg_bytes(50, (8, 8)))
    args = ["prepare", "merged", "--raw", f"left={tmp_path / 'left'}", "--raw", f"right={tmp_path / 'right'}",
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 0
    assert load_dataset_info(tmp_path / "out").splits["train"].count == 4
    assert main(args[:4] + ["--out", str(tmp_path / "o2")]) == 2  # right= missing


def test_prepare_errors_are_one_line(plugins, tmp_path, capsys):
    assert main(["prepare", "nosuch", "--raw", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nosuch'; available:" in err and "merged" in err and "tinycsv" in err
    assert "Traceback" not in err
    assert main(["prepare", "tinycsv", "--raw", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    assert f"{tmp_path / 'absent'}: missing folder (raw data of tinycsv)" in capsys.readouterr().err
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "labels.csv").write_text("file,label,split\n")
    assert main(["prepare", "tinycsv", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "o")]) == 2
    assert "no samples" in capsys.readouterr().err


def test_help_lists_converters(plugins, capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = capsys.readouterr().out
    assert "tinycsv" in text and "(sources: left, right)" in text and "helpers" not in text
    assert "[--names short|long]" in text and "flowers102" in text and "[--split paper|official]" in text


def test_prepare_real_converter_then_load(tmp_path):
    """The shipped CIFAR-10 converter on its real pickle layout, then both loaders."""
    from _data_fixtures import write_cifar10_release
    from xferscale.config import DataConfig
    from xferscale.data.loader import build_loader

    write_cifar10_release(tmp_path / "cifar-10-batches-py", per_batch=4)
    assert main(["prepare", "cifar10", "--raw", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    for backend in ("dali", "torch"):
        cfg = DataConfig(source="prepared", path=str(tmp_path / "out"), split="test", backend=backend,
                         image_size=32, workers=0)
        batches = build_loader(cfg, batch_size=4, rank=0, world_size=1, device="cpu", train=False, seed=0,
                               num_classes=10)
        (images, targets), = list(batches.epoch(0))
        assert images.shape == (4, 3, 32, 32) and batches.num_classes == 10


def test_raw_may_name_the_parent_folder_where_it_is_unambiguous(tmp_path, capsys):
    """--raw pointing one or two levels above the release folder: the folder with the marker is read."""
    import shutil

    import xray_layouts as layouts

    release = layouts.chexpert_raw(tmp_path / "downloads")  # downloads/CheXpert-v1.0-small/train.csv
    out = tmp_path / "out"
    assert main(["prepare", "chexpert", "--raw", str(tmp_path), "--out", str(out), "--no-progress"]) == 0
    assert f"chexpert: reading {release}" in capsys.readouterr().out
    assert load_dataset_info(out).splits["val"].count > 0
    shutil.copytree(release, tmp_path / "downloads" / "CheXpert-v1.0")  # two releases side by side
    assert main(["prepare", "chexpert", "--raw", str(tmp_path / "downloads"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "several folders hold chexpert's train.csv" in err and "pass one of them as --raw" in err
