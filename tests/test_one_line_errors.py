"""A full disk, a file-size limit, an output folder under a regular file or on a read-only file
system: one line on stderr naming the path and the cause, and a non-zero exit, never a traceback."""
from __future__ import annotations

import contextlib
import errno
import os
import resource
import subprocess
from pathlib import Path

import pytest

from _data_fixtures import write_cifar10_release
from _transfer_fixtures import write_checkpoint
from conftest import run_xferscale, xferscale_cmd
from xferscale.cli import os_error_line


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A small tmpfs at ``path`` (root only; skipped where mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def cifar_raw(tmp_path) -> Path:
    """CIFAR-10's python batches: 240 noisy 32x32 images, about 0.75 MB once encoded as PNG."""
    return write_cifar10_release(tmp_path / "raw" / "cifar-10-batches-py", per_batch=40).parent


def prepare(raw: Path, out: Path, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(xferscale_cmd("prepare", "cifar10", "--raw", str(raw), "--out", str(out), "--no-progress",
                                        "--workers", "2"),
                          capture_output=True, text=True, timeout=300, preexec_fn=limit if limit_bytes else None)


@pytest.mark.parametrize("size", ["100k", "1200k"], ids=["while-collecting", "while-writing-shards"])
def test_prepare_on_a_full_disk_is_one_line_naming_the_output(cifar_raw, tmp_path, size):
    with tmpfs(tmp_path / "disk", f"size={size}") as disk:
        proc = prepare(cifar_raw, disk / "out")
        assert proc.returncode != 0
        assert one_line(proc.stderr) == f"xferscale prepare: error: {disk / 'out'}: No space left on device"
        assert not (disk / "out" / "dataset.json").exists()


def test_prepare_past_the_file_size_limit_is_one_line(cifar_raw, tmp_path):
    proc = prepare(cifar_raw, tmp_path / "out", limit_bytes=200_000)
    assert proc.returncode != 0
    assert one_line(proc.stderr) == f"xferscale prepare: error: {tmp_path / 'out'}: File too large"


def test_prepare_into_a_folder_under_a_regular_file_is_one_line(cifar_raw, tmp_path):
    (tmp_path / "file").write_text("")
    proc = prepare(cifar_raw, tmp_path / "file" / "out")
    assert proc.returncode != 0
    assert one_line(proc.stderr) == f"xferscale prepare: error: {tmp_path / 'file' / 'out'}: Not a directory"


def test_pretrain_into_a_folder_under_a_regular_file_is_one_line(tmp_path, tiny_args):
    (tmp_path / "file").write_text("")
    proc = run_xferscale("pretrain", *tiny_args, f"output_dir={tmp_path / 'file' / 'run'}", check=False)
    assert proc.returncode != 0
    line = one_line(proc.stderr)
    assert f"{tmp_path / 'file' / 'run'}" in line and "Not a directory" in line


@pytest.fixture
def transfer_args(tmp_path) -> list[str]:
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", name="tiny_synthetic")
    return ["transfer", "--checkpoint", str(ckpt), "--shots", "2", "--seeds", "0", "--schedule-scale", "0.01",
            "--crop", "8", "--baselines", "none", "--no-progress"]


def test_transfer_into_a_read_only_file_system_is_one_line(tmp_path, transfer_args):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as disk:
        proc = run_xferscale(*transfer_args, "--results", str(disk / "res"), check=False)
    assert proc.returncode != 0
    line = one_line(proc.stderr)
    assert f"{disk / 'res'}" in line and "Read-only file system" in line


def test_transfer_on_a_full_disk_is_one_line(tmp_path, transfer_args):
    with tmpfs(tmp_path / "disk", "size=8k") as disk:
        proc = run_xferscale(*transfer_args, "--results", str(disk / "res"), check=False)
    assert proc.returncode != 0
    line = one_line(proc.stderr)
    assert line.startswith(f"xferscale transfer: error: {disk / 'res'}") and "No space left on device" in line


def test_the_line_names_the_first_failure_that_names_a_file():
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/scratch/out/train-00000.tar")
        except OSError:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # the cleanup's close, naming nothing
    except OSError as err:
        assert os_error_line(err) == "/scratch/out/train-00000.tar: No space left on device"
    try:
        try:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/scratch/out/old.json")
        except FileNotFoundError:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/scratch/out/new.json")  # another cause
    except OSError as err:
        assert os_error_line(err) == "/scratch/out/new.json: No space left on device"
    assert os_error_line(OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")) == \
        "/a -> /b: Invalid cross-device link"
    assert os_error_line(OSError("could not write /x/checkpoint.pt: disk full")) == \
        "could not write /x/checkpoint.pt: disk full"
