import argparse

import pytest

from xferscale.commands import bench


def _parser():
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser


def test_dispatches_to_the_kernel_arguments():
    args = _parser().parse_args(["allreduce", "--max-bytes", "1M", "--framework", "torch"])
    assert args._module == "xferscale.kernels.allreduce" and args.max_bytes == 2**20
    args = _parser().parse_args(["train", "--precision", "amp-bf16", "--model", "tiny"])
    assert args.precision == "amp_bf16"


def test_a_missing_kernel_module_gives_a_clear_message(monkeypatch, capsys):
    monkeypatch.setitem(bench.KERNELS, "loader", ("xferscale.kernels.no_such_loader", "loader"))
    args = _parser().parse_args(["loader", "--anything", "goes"])
    assert bench.run(args) == 2
    assert "xferscale.kernels.no_such_loader is not installed" in capsys.readouterr().err


def test_a_kernel_with_a_broken_import_is_not_hidden(monkeypatch):
    # Only the kernel module itself may be missing; its own failing imports must surface.
    def broken(name):
        raise ModuleNotFoundError("No module named 'somedep'", name="somedep")

    monkeypatch.setattr(bench.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="somedep"):
        _parser()
