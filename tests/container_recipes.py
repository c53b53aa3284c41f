"""Readers for the container recipes, as the build tools see them (used by test_container.py).

No container can be built without registry access, so the tests check the recipes as
text: Apptainer's ``{{ VAR }}`` templating is rendered the way ``apptainer build`` does
(``--build-arg`` over ``%arguments`` defaults, undefined variables are errors), then the
result is parsed with spython and with the section splitter below.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEF_FILE = ROOT / "apptainer.def"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
VERSIONS = ROOT / "container" / "versions.env"
WORKFLOW = ROOT / ".github" / "workflows" / "container.yml"

# Sections `apptainer build` knows; anything else is a typo it would silently ignore.
DEF_SECTIONS = {
    "arguments", "setup", "files", "environment", "post", "runscript", "startscript",
    "test", "labels", "help", "apprun", "applabels", "appinstall", "appenv", "apphelp",
    "appfiles", "apptest",
}
_SECTION = re.compile(r"^%([A-Za-z]+)\b(.*)$")
_TEMPLATE = re.compile(r"{{\s*([A-Za-z_][A-Za-z0-9_]*)\s*}}")
_ENV_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=([^\s\"'$`]+)$")  # no quotes, spaces or expansions


def read_env_file(path: Path = VERSIONS) -> dict[str, str]:
    """KEY=VALUE lines (comments and blanks allowed, nothing else)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if not match:
            raise ValueError(f"{path.name}:{number}: not a plain KEY=VALUE line: {raw!r}")
        values[match.group(1)] = match.group(2)
    return values


def def_sections(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Split a def file into its header keywords and its %sections (name -> body)."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match:
            name = match.group(1).lower()
            if name not in DEF_SECTIONS:
                raise ValueError(f"unknown def-file section %{name}")
            if name in sections:
                raise ValueError(f"section %{name} appears twice")
            current = sections[name] = []
        elif current is not None:
            current.append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"header line without 'Key: value': {line!r}")
            header[key.strip().lower()] = value.strip()
    return header, {name: "\n".join(body).strip("\n") for name, body in sections.items()}


def def_arguments(text: str) -> dict[str, str]:
    """The %arguments defaults."""
    _, sections = def_sections(text)
    pairs = (line.strip().split("=", 1) for line in sections.get("arguments", "").splitlines())
    return {key: value.strip().strip('"') for key, value in pairs}


def render_def(text: str, build_args: dict[str, str] | None = None) -> str:
    """Substitute {{ VAR }} like `apptainer build --build-arg`: build args over defaults.

    As in Apptainer, comment lines are left as they are and an undefined variable is an error.
    """
    values = {**def_arguments(text), **(build_args or {})}
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            out.append(line)
            continue

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise KeyError(f"build var {name} is not defined through --build-arg or %arguments")
            return values[name]

        out.append(_TEMPLATE.sub(value, line))
    return "\n".join(out) + "\n"


def template_variables(text: str) -> set[str]:
    return {
        m.group(1)
        for line in text.splitlines()
        if not line.lstrip().startswith("#")
        for m in _TEMPLATE.finditer(line)
    }


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_args(text: str) -> dict[str, str | None]:
    """ARG defaults (None for an ARG without one); the first default of a name wins."""
    args: dict[str, str | None] = {}
    for keyword, rest in dockerfile_instructions(text):
        if keyword == "ARG":
            name, sep, default = rest.partition("=")
            if args.get(name) is None:
                args[name] = default.strip('"') if sep else None
    return args


def dockerignore_allowlist(text: str) -> list[str]:
    """The `!path` entries of an allow-list .dockerignore (one that starts with `*`)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines or lines[0] != "*":
        raise ValueError(".dockerignore must start with '*' (allow-list)")
    return [line[1:] for line in lines if line.startswith("!")]
