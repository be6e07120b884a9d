"""One locked environment: requirements.lock pins every package with hashes and satisfies pyproject.toml;
environment.yml is written from it."""
from __future__ import annotations

import tomllib

import pytest

from chexreason_utils import lock
from chexreason_utils.paths import REPO_ROOT


def _wanted() -> list[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["test"]


def test_the_lock_satisfies_every_requirement_of_pyproject():
    locked = lock.pins()
    assert lock.unmet(_wanted(), locked) == []
    assert locked["torch"] == "2.13.0+cpu" and "torchvision" not in locked
    assert not any(name.startswith("nvidia-") for name in locked)   # no CUDA wheel slipped in


def test_every_locked_package_carries_a_hash():
    lines = lock.LOCK.read_text().splitlines()
    pinned = [i for i, line in enumerate(lines) if line and not line.startswith((" ", "#"))]
    assert len(pinned) == len(lock.pins())
    unhashed = [lines[i].split()[0] for i in pinned if not lines[i + 1].strip().startswith("--hash=sha256:")]
    assert unhashed == []


def test_environment_yml_is_written_from_the_lock():
    assert lock.ENVIRONMENT.read_text() == lock.environment_yml(lock.pins()), "run make lock"


def test_unmet_names_what_the_lock_leaves_out_or_contradicts():
    locked = {"numpy": "2.4.6", "torch": "2.13.0+cpu"}
    assert lock.unmet(["numpy>=1.26", "torch==2.13.0"], locked) == []
    assert lock.unmet(["numpy>=3", "pandas>=2.2"], locked) == ["numpy>=3: locked at 2.4.6", "pandas>=2.2: not in the lock"]


def test_a_line_that_pins_nothing_is_refused_naming_it(tmp_path):
    bad = tmp_path / "requirements.lock"
    bad.write_text("numpy==2.4.6 \\\n    --hash=sha256:00\nscipy>=1.0\n")
    with pytest.raises(ValueError, match=r"requirements.lock:3: not an exact pin .*scipy>=1.0"):
        lock.pins(bad)
