"""Split the suite's pins into what a container installs and what its base image keeps.

NGC's PyTorch image ships its own build of torch, torchvision, triton and DALI against the
image's CUDA, and pins every Python package it was tested with in /etc/pip/constraint.txt.
Installing requirements.txt as is would replace that torch with the PyPI wheel (and its
nvidia-* CUDA wheels) and fight the image's constraints. So, for the image:

- dropped: the CUDA stack (torch, torchvision, triton, nvidia-*, cuda-*) and every package
  the base image constrains: the base's tested versions win;
- kept: all other direct requirements, installed at their requirements.txt pins, with
  requirements.lock as constraints for what they pull in.

Standard library only: it runs in the base image before anything is installed.

    python3 container/pins.py --requirements requirements.txt --lock requirements.lock \
        --base-constraints /etc/pip/constraint.txt --out /tmp/pins
"""
from __future__ import annotations

import argparse
import fnmatch
import re
import sys
from pathlib import Path

# Built against the base image's CUDA; a PyPI copy would shadow it.
CUDA_STACK = ("torch", "torchvision", "triton", "pytorch-triton", "nvidia-*", "cuda-*")
_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?:[=<>!~;@].*)?$")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path, strict: bool = True) -> dict[str, str]:
    """Map normalised name -> the requirement line, for a requirements/constraints file.

    Our own files must hold plain requirements (strict); in the base image's file, lines
    this reader does not understand (pip options, URLs) are skipped with a warning.
    """
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = None if line.startswith("-") else _LINE.match(line)
        if match:
            pins[normalize(match.group(1))] = line
        elif strict:
            what = f"options ({line.split()[0]}) are" if line.startswith("-") else f"requirement {raw!r} is"
            raise SystemExit(f"{path}:{number}: {what} not supported here")
        else:
            print(f"pins: {path}:{number}: skipped {raw!r}", file=sys.stderr)
    return pins


def kept_by_base(name: str, base_constrained: set[str]) -> bool:
    return name in base_constrained or any(fnmatch.fnmatch(name, pat) for pat in CUDA_STACK)


def split_pins(
    requirements: dict[str, str], lock: dict[str, str], base_constrained: set[str]
) -> tuple[list[str], list[str], list[str]]:
    """Return (requirements to install, constraints, names left to the base image)."""
    install = [line for name, line in requirements.items() if not kept_by_base(name, base_constrained)]
    constraints = [line for name, line in lock.items() if not kept_by_base(name, base_constrained)]
    from_base = sorted(n for n in {**requirements, **lock} if kept_by_base(n, base_constrained))
    return install, constraints, from_base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requirements", type=Path, required=True)
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--base-constraints", type=Path, default=Path("/etc/pip/constraint.txt"),
                        help="the base image's pip constraints (absent: only the CUDA stack is kept)")
    parser.add_argument("--out", type=Path, required=True, help="folder for requirements.txt, constraints.txt")
    args = parser.parse_args(argv)

    base = read_pins(args.base_constraints, strict=False) if args.base_constraints.is_file() else {}
    install, constraints, from_base = split_pins(read_pins(args.requirements), read_pins(args.lock), set(base))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "requirements.txt").write_text("\n".join(install) + "\n")
    (args.out / "constraints.txt").write_text("\n".join(constraints) + "\n")
    (args.out / "from-base.txt").write_text("\n".join(from_base) + "\n")
    print(f"pins: {len(install)} to install, {len(constraints)} constraints, "
          f"{len(from_base)} left to the base image: {' '.join(from_base)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
