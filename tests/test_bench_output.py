import io
import json
import math

import pytest

from xferscale.kernels.output import SCHEMA, ResultNotFound, emit_result, format_human, parse_result, parse_results


def test_emit_then_parse_round_trip():
    stream = io.StringIO()
    line = emit_result("train", {"images_per_s_total": 12.5, "per_rank": [6.0, 6.5]}, [("images/s", 12.5)], stream)
    text = stream.getvalue()
    assert text.splitlines()[0].startswith("[train] images/s")
    assert text.splitlines()[-1] == line
    result = parse_result(text, "train")
    assert result["schema"] == SCHEMA and result["kernel"] == "train"
    assert result["per_rank"] == [6.0, 6.5]


def test_non_finite_values_become_null_so_the_line_is_strict_json():
    stream = io.StringIO()
    line = emit_result("allreduce", {"mfu": math.nan, "nested": {"x": math.inf}}, stream=stream)
    record = json.loads(line)  # strict: NaN would not parse in other tools
    assert record["mfu"] is None and record["nested"]["x"] is None
    assert "NaN" not in line and "Infinity" not in line


def test_parse_finds_lines_among_noise_and_torchrun_prefixes():
    text = "\n".join([
        "loading...",
        '{"not": "ours"}',
        '{"schema":"other/2","kernel":"train"}',
        '[rank0]: {"schema":"xferscale.bench/1","kernel":"allreduce","busbw_peak_gbps":1.5}',
        '{"schema":"xferscale.bench/1","kernel":"train","images_per_s_total":3.0}',
        '{"schema":"xferscale.bench/1","kernel":"train","images_per_s_total":4.0}',
        '{"schema":"xferscale.bench/1", broken',
    ])
    assert [r["kernel"] for r in parse_results(text)] == ["allreduce", "train", "train"]
    assert parse_result(text, "allreduce")["busbw_peak_gbps"] == 1.5
    assert parse_result(text, "train")["images_per_s_total"] == 4.0  # the last one wins


def test_a_kernel_json_line_without_the_schema_tag_is_read():
    assert parse_result('{"kernel": "loader", "results": {"dali": {"images_per_s": 5.0}}}', "loader")["results"]


def test_missing_result_names_the_kernel():
    with pytest.raises(ResultNotFound, match="loader"):
        parse_result('{"schema":"xferscale.bench/1","kernel":"train"}', "loader")


def test_human_lines_are_aligned():
    text = format_human("k", [("a", 1.23456), ("longer key", "x")])
    first, second = text.splitlines()
    assert first.index(":") == second.index(":")
    assert "1.235" in first
