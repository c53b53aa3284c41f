"""Shared converter pieces: patient-level splits, table reading, label vectors."""
from __future__ import annotations

import importlib.util
import re
from collections import Counter
from pathlib import Path

import pytest

from xferscale.data.records import PrepareError
from xferscale.data_prep import padchest
from xferscale.data_prep.common import multi_hot, read_csv, split_by_patient

FRACTIONS = {"train": 0.75, "val": 0.10, "test": 0.15}


def test_split_by_patient_sizes_and_determinism():
    patients = [f"p{i}" for i in range(200)]
    splits = split_by_patient(patients + patients[:50], FRACTIONS, seed=3)  # repeats: one patient, one split
    assert set(splits) == set(patients)
    assert Counter(splits.values()) == {"train": 150, "val": 20, "test": 30}
    assert split_by_patient(reversed(patients), FRACTIONS, seed=3) == splits  # order does not matter
    assert split_by_patient(patients, FRACTIONS, seed=4) != splits  # the seed does


def test_split_by_patient_stratified_keeps_class_balance():
    patients = [f"p{i}" for i in range(100)]
    strata = {p: int(p[1:]) % 4 == 0 for p in patients}  # 25 % positive
    splits = split_by_patient(patients, {"train": 0.8, "test": 0.2}, strata=strata)
    test = [p for p in patients if splits[p] == "test"]
    assert len(test) == 20 and sum(strata[p] for p in test) == 5


def test_split_by_patient_rejects_bad_fractions():
    with pytest.raises(ValueError):
        split_by_patient(["a"], {"train": -1.0, "test": 0.5})


def test_read_csv_checks_the_header_before_any_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(PrepareError, match=r"t\.csv: missing column\(s\) \['c'\]; the header has \['a', 'b'\]"):
        read_csv(path, ("a", "c"))
    assert list(read_csv(path, ("a",))) == [{"a": "1", "b": "2"}]


def test_multi_hot_follows_the_class_order():
    assert multi_hot(("a", "b", "c"), ["c", "a"]) == (1, 0, 1)


def test_padchest_broken_list_covers_torchxrayvisions():
    # Read the library's source rather than importing it (the import pulls in torch and skimage).
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        pytest.skip("torchxrayvision is not installed")
    source = (Path(spec.origin).parent / "datasets.py").read_text()
    pc_dataset = source[source.index("class PC_Dataset"):source.index("class CheX_Dataset")]
    listed = set(re.findall(r'"(\d+_[\d-]+\.png)"', pc_dataset))
    assert listed and listed <= padchest.BROKEN_FILES
