"""What every notebook does first: load its profile, fix seeds and style, and know where to write.

While a stage runs, its config records which values it reads (``config_reads``) into ``config_reads.json``
in the stage folder (its worker processes append theirs to ``config_reads_workers.txt``), and anything it
counts, drops or redoes (``Stage.note``, ``run_records.count``) goes to the stage's record file; the runner
fingerprints the recorded values and prints the counts in its terminal summary.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import arithmetic, config_reads, run_records
from .config import Config, load_profile
from .jobs import RENAMED_IN_TRANSFORMERS
from .paths import RunPaths
from .seeding import seed_everything

# What each stage writes, relative to the run root, besides its registered figures and tables and the files it
# writes into shared folders (the runner digests these to detect missing or changed outputs).
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {"00_setup": ("world", "models", "00_setup")}
READS_FILE = "config_reads.json"
WORKER_READS_FILE = "config_reads_workers.txt"   # keys read by worker processes (config_reads.READS_ENV)
RECORD_FILES = (READS_FILE, WORKER_READS_FILE)     # bookkeeping, not outputs


def stage_outputs(name: str) -> tuple[str, ...]:
    return STAGE_OUTPUTS.get(name, (name,))


@dataclass
class Stage:
    name: str
    cfg: Config
    paths: RunPaths

    @property
    def out(self) -> Path:
        """This stage's own output folder (created)."""
        path = self.paths.stage(self.name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def figures(self) -> Path:
        self.paths.figures.mkdir(parents=True, exist_ok=True)
        return self.paths.figures

    def note(self, **counts: int) -> None:
        """Count things for the runner's summary line, e.g. ``stage.note(reused_runs=2)``."""
        for what, n in counts.items():
            run_records.count(what.replace("_", " "), n)


class _ReadLog:
    """Recorded config keys, rewritten (atomically, sorted) whenever a new one is read."""

    def __init__(self, path: Path):
        self.path, self.keys = path, set()
        self._write()

    def __call__(self, key: str) -> None:
        if key not in self.keys:
            self.keys.add(key)
            self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(self.keys)))
        tmp.replace(self.path)


def start_stage(name: str, profile: str, run_dir: str = "", figure_dir: str = "",
                overrides: dict[str, Any] | None = None) -> Stage:
    """Load the profile with overrides, start recording what the stage reads, check the arithmetic mode, seed
    everything, set the plot style, return the stage handle."""
    run_records.write_record({"kind": "ready", "task": name})   # the kernel is up: ``timing_records`` times its start
    cfg = load_profile(profile, overrides)
    paths = RunPaths.for_profile(cfg.profile, run_dir or None, figure_dir or None)
    folder = paths.stage(name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WORKER_READS_FILE).unlink(missing_ok=True)
    os.environ[config_reads.READS_ENV] = str(folder / WORKER_READS_FILE)
    config_reads.track(cfg, _ReadLog(folder / READS_FILE))
    arithmetic.enter(cfg.arithmetic)   # set by the runner already; in JupyterLab: make lab PORTABLE=1
    seed_everything(cfg.seed)
    from .report.plotting import set_style   # the plotting stack, for the stage's kernel only

    set_style()
    warnings.filterwarnings("ignore", RENAMED_IN_TRANSFORMERS, FutureWarning)
    return Stage(name=name, cfg=cfg, paths=paths)
