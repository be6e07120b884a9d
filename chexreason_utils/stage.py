"""What every notebook does first: load its profile, fix seeds and style, and know where to write.

``STAGE_SECTIONS`` says which config sections each numbered notebook reads; the runner fingerprints only
those, so changing a GRPO value does not regenerate the phantom world. A notebook not listed here (the
test fixtures, a reader's own) is fingerprinted on the whole config.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import progress
from .config import Config, load_profile
from .paths import RunPaths
from .plotting import set_style
from .seeding import seed_everything

STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "00_setup": ("seed", "world", "data", "models"),
    "01_sampling": ("seed", "data", "sampling"),
    "02_sft": ("seed", "seeds", "device", "models", "sft", "evaluation"),
    "03_grpo": ("seed", "seeds", "device", "models", "grpo", "evaluation", "diagnostics"),
    "04_evaluation": ("seed", "seeds", "device", "data", "models", "sft", "grpo", "evaluation", "cross_model",
                      "diagnostics"),
    "05_cross_model_scaffold": ("seed", "seeds", "device", "sft", "evaluation", "cross_model"),
    "06_entropy_mode_collapse": ("seed", "seeds", "device", "grpo", "evaluation", "diagnostics"),
}

# What each stage writes, relative to the run root (the runner digests these to detect changed inputs).
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {"00_setup": ("world", "models")}


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


def start_stage(name: str, profile: str, run_dir: str = "", figure_dir: str = "",
                overrides: dict[str, Any] | None = None) -> Stage:
    """Load the profile with overrides, seed everything, set the plot style, return the stage handle."""
    progress.record_startup(name)
    cfg = load_profile(profile, overrides)
    paths = RunPaths.for_profile(cfg.profile, run_dir or None, figure_dir or None)
    paths.root.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    set_style()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return Stage(name=name, cfg=cfg, paths=paths)
