"""Shared fixtures. ``smoke_run`` is the whole smoke profile, run once per session in a background process started
when the session starts (the tests that read it go last)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _uses_smoke_run(item) -> bool:
    return "smoke_run" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items):
    """The tests that read the smoke run go last: the run starts in the background when the session starts
    (``smoke_process``), so every other test runs beside it instead of waiting for it."""
    items.sort(key=_uses_smoke_run)   # stable: the order within each group is kept


def _start_smoke_run(root: Path, *extra: str, nice: int = 0):
    """``chexreason_utils run --profile smoke`` into ``root`` in a background process, ``nice`` steps below this
    one's CPU priority; (process, log)."""
    import subprocess
    import sys

    log = (root / "log.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "chexreason_utils", "run", "--profile", "smoke", *extra,
                             "--run-dir", str(root / "run"), "--figure-dir", str(root / "figures")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: os.nice(nice))
    return proc, log


@pytest.fixture(scope="session", autouse=True)
def smoke_process(request, tmp_path_factory):
    """The whole smoke profile (default workers), started when the session starts if a selected test reads it;
    yields (process, root) or None."""
    if not any(_uses_smoke_run(item) for item in request.session.items):
        yield None
        return
    root = tmp_path_factory.mktemp("smoke")
    proc, log = _start_smoke_run(root)
    yield proc, root
    if proc.poll() is None:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def smoke_run(smoke_process):
    """Every notebook on the smoke profile in a temporary run directory (``smoke_process``, waited for here);
    returns (RunPaths, the stages' status from the run's manifest, RunOptions)."""
    import json
    from types import SimpleNamespace

    from chexreason_utils.paths import RunPaths
    from chexreason_utils.runner import RunOptions

    proc, root = smoke_process
    assert proc.wait(timeout=3600) == 0, (root / "log.txt").read_text()[-4000:]
    opts = RunOptions(profile="smoke", run_dir=str(root / "run"), figure_dir=str(root / "figures"))
    stages = json.loads((root / "run" / "manifest.json").read_text())["stages"]
    results = [SimpleNamespace(name=name, status=s["status"]) for name, s in stages.items()]
    return RunPaths.for_profile("smoke", opts.run_dir, opts.figure_dir), results, opts


SECOND_RUN = ("-p", "workers=1", "-p", "seeds=[1]", "-p", "sft.formats=[free_reasoning]", "-p", "sft.general_model_too=false",
              "--only", "00,01,02,03")


@pytest.fixture(scope="session", autouse=True)
def second_smoke_run(request, tmp_path_factory):
    """The repro test's second clean smoke run, started in the background when the session starts, so that it runs
    beside the rest of the suite instead of after it: one worker, seed 1 only, stages 00-03 with GRPO's chain alone
    (the world, both bases, the manifests, the medical model's SFT in GRPO's start format, every GRPO run and its
    validation predictions; the other SFT runs and 04's predictions come from the same code). Yields (process, run
    dir, figure dir, log), or None when no repro test is selected."""
    if not any(item.get_closest_marker("repro") for item in request.session.items):
        yield None
        return
    root = tmp_path_factory.mktemp("second-smoke")
    # below the first run's priority: the tests that read the first run wait for it, this run is read only by the
    # last test, so it takes the CPU the rest leave (the suite is CPU-bound on 2 cores)
    proc, log = _start_smoke_run(root, *SECOND_RUN, nice=10)
    yield proc, root / "run", root / "figures", root / "log.txt"
    if proc.poll() is None:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A small phantom world (generated once per session)."""
    from chexreason_utils.config import WorldConfig
    from chexreason_utils.data.phantom import generate_world

    root = tmp_path_factory.mktemp("world")
    cfg = WorldConfig(n_mimic_studies=120, n_chexpert_test_studies=30, n_nih_images=80, n_pretrain=20)
    generate_world(root, cfg)
    return root, cfg


def write_notebook(path: Path, cells: list[tuple[str, str]], kernel: str = "python3") -> Path:
    """A notebook from (kind, source) cells; kind 'params' makes the tagged parameters cell."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "Python 3", "language": "python"}
    for kind, src in cells:
        cell = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        if kind == "params":
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nbformat.write(nb, path)
    return path
