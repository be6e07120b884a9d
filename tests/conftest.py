"""Shared fixtures. ``smoke_run`` executes the whole smoke profile once per test session (a few minutes)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Run every notebook on the smoke profile into a temporary run directory; returns (RunPaths, results)."""
    from chexreason_utils.paths import RunPaths
    from chexreason_utils.runner import RunOptions, run

    root = tmp_path_factory.mktemp("smoke")
    opts = RunOptions(profile="smoke", run_dir=str(root / "run"), figure_dir=str(root / "figures"))
    results = run(opts)
    return RunPaths.for_profile("smoke", opts.run_dir, opts.figure_dir), results, opts


@pytest.fixture(scope="session", autouse=True)
def second_smoke_run(request, tmp_path_factory):
    """The repro test's second clean smoke run (one worker), started in the background when the session starts, so
    that it runs beside the rest of the suite instead of after it (it costs about a third of the suite's time);
    yields (process, run dir, figure dir), or None when no repro test is selected."""
    if not any(item.get_closest_marker("repro") for item in request.session.items):
        yield None
        return
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("second-smoke")
    log = (root / "log.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "chexreason_utils", "run", "--profile", "smoke", "-p", "workers=1",
                             "--run-dir", str(root / "run"), "--figure-dir", str(root / "figures")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
