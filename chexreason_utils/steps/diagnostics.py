"""Stage 06 (entropy and mode collapse): the per-step diagnostics and collapse episodes of every GRPO run of 03
(``training_runs.diagnostics``)."""
from __future__ import annotations

import pandas as pd

from ..config import Config, training_seeds
from ..paths import RunPaths
from ..training_runs.diagnostics import run_diagnostics_of
from ..training_runs.grpo import grpo_plan


def grpo_diagnostics(cfg: Config, paths: RunPaths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``run_diagnostics_of`` for every run of 03 (the rewards and the ablation) and training seed, long form with
    a ``run`` column ("<name>-seed-<s>")."""
    per_step, episodes = [], []
    for name in grpo_plan(cfg):
        for seed in training_seeds(cfg):
            steps, found = run_diagnostics_of(cfg, paths, name, seed)
            per_step.append(steps.assign(run=f"{name}-seed-{seed}"))
            episodes.append(found.assign(run=f"{name}-seed-{seed}"))
    return pd.concat(per_step, ignore_index=True), pd.concat(episodes, ignore_index=True)
