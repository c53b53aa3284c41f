"""The results store: atomic records, configuration hashes, skip-finished, grid arguments."""
from __future__ import annotations

import json

import pytest

from xferscale.results import (
    ResultError,
    ResultRecord,
    ResultStore,
    RunKey,
    config_hash,
    iter_records,
    parse_seeds,
    parse_shots,
)


def record(seed: int = 0, shots=5, value=80.0, chash="abc") -> ResultRecord:
    return ResultRecord("in21k", "r50x1", "cifar10", shots, seed, "acc", value, 500, 12.5, chash)


def test_parse_grid_arguments():
    assert parse_shots("1,5,10,100,500,full") == [1, 5, 10, 100, 500, "full"]
    assert parse_shots("full, 1,1") == ["full", 1]
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    for bad in ("0", "x", "-1"):
        with pytest.raises(ResultError, match="shots"):
            parse_shots(bad)
    with pytest.raises(ResultError, match="backwards"):
        parse_seeds("4-0")


def test_config_hash_ignores_key_order_and_sees_values():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_save_load_and_finished(tmp_path):
    store = ResultStore(tmp_path)
    key = RunKey("in21k", "r50x1", "cifar10", 5, 0)
    assert not store.is_finished(key, "abc")
    path = store.save(record())
    assert path == tmp_path / "in21k/r50x1/cifar10/shots-5/seed-0.json"
    assert not list(path.parent.glob(".*tmp"))  # no temporary file left behind
    assert store.is_finished(key, "abc")
    assert store.load(key) == record()


def test_record_of_another_configuration_is_an_error_unless_overwritten(tmp_path):
    store = ResultStore(tmp_path)
    store.save(record(chash="old"))
    key = record().key
    with pytest.raises(ResultError, match="--overwrite"):
        store.is_finished(key, "new")
    assert store.is_finished(key, "new", overwrite=True) is False


def test_undefined_value_round_trips_as_null(tmp_path):
    store = ResultStore(tmp_path)
    path = store.save(record(value=None))
    assert json.loads(path.read_text())["value"] is None
    assert store.load(record().key).value is None


def test_bad_records_name_the_file(tmp_path):
    store = ResultStore(tmp_path)
    path = store.save(record())
    data = json.loads(path.read_text())
    del data["metric"]
    path.write_text(json.dumps(data))
    with pytest.raises(ResultError, match=r"seed-0.json: missing field\(s\) metric"):
        list(iter_records(tmp_path))
    path.write_text("{not json")
    with pytest.raises(ResultError, match="not valid JSON"):
        list(iter_records(tmp_path))


def test_resume_state_is_not_a_record(tmp_path):
    store = ResultStore(tmp_path)
    store.save(record())
    work = store.work_dir(record(seed=1).key)
    work.mkdir(parents=True)
    (work / "seed-1.json").write_text("{}")
    assert [r.seed for r in store.records()] == [0]
