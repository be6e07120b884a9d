"""The locked environment: ``requirements.lock`` (every package at an exact version with its hashes, made by
pip-tools from ``pyproject.toml``) and ``environment.yml``, which conda users install and which this module writes
from the lock, so the two never drift.

Upgrading is one command, ``make lock``: it re-resolves ``pyproject.toml`` (with ``constraints.txt``, so torch
stays at the CPU build 2.13.0) into ``requirements.lock`` and rewrites ``environment.yml`` from it.
"""
from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .paths import REPO_ROOT

LOCK = REPO_ROOT / "requirements.lock"
ENVIRONMENT = REPO_ROOT / "environment.yml"
PYTHON = "3.11"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"   # where conda's pip finds torch's +cpu build
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def pins(path: Path = LOCK) -> dict[str, str]:
    """{canonical name: exact version} of every package in a pip-tools lock; a line that pins nothing is refused."""
    found = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line or line[0] in "# ":
            continue
        match = _PIN.match(line)
        if not match:
            raise ValueError(f"{path}:{number}: not an exact pin (name==version): {line!r}")
        found[canonicalize_name(match[1])] = match[2]
    return found


def unmet(requirements: list[str], locked: dict[str, str]) -> list[str]:
    """The requirements (PEP 508 strings) the lock leaves out or pins at a version they do not allow."""
    problems = []
    for text in requirements:
        req = Requirement(text)
        version = locked.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{text}: not in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{text}: locked at {version}")
    return problems


def environment_yml(locked: dict[str, str]) -> str:
    """The conda environment: Python, pip, and every locked package at its locked version."""
    lines = ["# Conda environment for chexreason, written from requirements.lock by `make lock` (chexreason_utils/lock.py):",
             "# every package at the version the lock pins. conda env create -f environment.yml",
             "name: chexreason", "channels:", "  - conda-forge", "dependencies:", f"  - python={PYTHON}", "  - pip",
             "  - pip:", f"      - --extra-index-url {TORCH_INDEX}"]
    lines += [f"      - {name}=={version}" for name, version in sorted(locked.items())]
    lines += ["      - -e ."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    ENVIRONMENT.write_text(environment_yml(pins()))
    print(f"{ENVIRONMENT}: {len(pins())} packages from {LOCK.name}")
