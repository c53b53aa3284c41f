import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xferscale.kernels.allreduce import _size, bus_bandwidth, sweep_sizes
from xferscale.kernels.output import parse_result


def test_sizes_parse_units():
    assert _size("4096") == 4096
    assert _size("64K") == 65536
    assert _size("16MiB") == 16 * 2**20
    assert _size("1.5G") == int(1.5 * 2**30)
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        _size("lots")


def test_sweep_is_geometric_whole_elements_and_ends_at_the_gradient_size():
    gradient = 936_533_224 * 4  # R152x4 in fp32
    sizes = sweep_sizes(1024, gradient, 2, 4)
    assert sizes[0] == 1024 and sizes[-1] == gradient
    assert all(b == 2 * a for a, b in zip(sizes[:-2], sizes[1:-1]))
    assert all(s % 4 == 0 for s in sizes)
    assert sweep_sizes(64 * 1024, 2**20, 4, 4) == [65536, 262144, 1048576]
    with pytest.raises(ValueError, match="bad sweep"):
        sweep_sizes(2048, 1024, 2, 4)


def test_bus_bandwidth_follows_the_nccl_tests_convention():
    algbw, busbw = bus_bandwidth(2_000_000_000, 1.0, 8)
    assert algbw == pytest.approx(2.0)
    assert busbw == pytest.approx(2.0 * 2 * 7 / 8)
    assert bus_bandwidth(1000, 1e-6, 1)[1] == 0.0  # one rank moves nothing



def _horovodrun(tmp_path, *xferscale_args):
    """`horovodrun -np 2 --gloo xferscale ARGS` from this venv; its parsed result line."""
    if importlib.util.find_spec("horovod") is None:
        pytest.skip("Horovod is not installed (scripts/install_horovod.sh builds it)")
    bindir = Path(sys.executable).parent
    cmd = [shutil.which("horovodrun", path=str(bindir)) or "horovodrun", "-np", "2", "-H", "localhost:2", "--gloo",
           shutil.which("xferscale", path=str(bindir)) or "xferscale", *xferscale_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{bindir}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return parse_result(proc.stdout)  # lines come prefixed "[0]<stdout>:"


@pytest.mark.slow
def test_horovod_allreduce_runs_under_horovodrun(tmp_path):
    result = _horovodrun(tmp_path, "bench", "allreduce", "--framework", "horovod", "--min-bytes", "16K",
                         "--max-bytes", "64K", "--factor", "4", "--iters", "2", "--warmup", "1")
    assert result["kernel"] == "allreduce" and result["framework"] == "horovod" and result["world_size"] == 2
    assert [p["bytes"] for p in result["sizes"]] == [16384, 65536]
    assert all(p["busbw_gbps"] > 0 for p in result["sizes"])


@pytest.mark.slow
def test_horovod_train_step_under_horovodrun(tmp_path):
    """bench train with Horovod's DistributedOptimizer around the trainer's step."""
    result = _horovodrun(tmp_path, "bench", "train", "--distributed", "horovod", "--steps", "3", "--warmup", "1",
                         "--batch-size", "4", "--image-size", "32")
    assert result["kernel"] == "train" and result["world_size"] == 2
    assert result["images_per_s_total"] == pytest.approx(sum(result["images_per_s_per_rank"]))
