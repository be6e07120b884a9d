"""Claim C5's evidence (end of 04): the collapse share of the final recipe and of the unstable-recipe ablation,
by 06's detection rule (the other claims are measured on the evaluation's predictions, ``steps.evaluation``)."""
from __future__ import annotations

import pandas as pd

from .. import claims, grpo
from ..config import Config, training_seeds
from ..diagnostics import run_diagnostics
from ..paths import RunPaths
from .grpo import ablation_name


def run_collapse_share(cfg: Config, paths: RunPaths, name: str, seed: int) -> float:
    """Share of a GRPO run's steps inside a collapse episode (06's detection rule and profile settings)."""
    folder, log = paths.grpo_run(name, seed), paths.grpo_log(name, seed)
    if not log.exists():
        raise FileNotFoundError(f"GRPO run log {log} not found: run 03_grpo first")
    D = cfg.diagnostics
    per_step, episodes = run_diagnostics(pd.read_csv(log), grpo.completions_table(folder), cfg.grpo.num_generations,
                                         D.window, D.dominance_threshold, D.episode_min_steps)
    return claims.collapse_share(per_step, episodes)


def collapse_evidence(cfg: Config, paths: RunPaths) -> dict | None:
    """Claim C5's evidence: the collapse share of the final recipe and of the unstable-recipe ablation per
    training seed (None where the profile runs no ablation)."""
    if not cfg.diagnostics.run_ablation:
        return None
    seeds = training_seeds(cfg)
    return {"final": [run_collapse_share(cfg, paths, cfg.diagnostics.ablation_reward, s) for s in seeds],
            "unstable": [run_collapse_share(cfg, paths, ablation_name(cfg), s) for s in seeds]}
