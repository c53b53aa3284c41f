import argparse

import pytest

from xferscale.kernels.allreduce import _size, bus_bandwidth, sweep_sizes


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
