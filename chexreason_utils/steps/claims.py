"""The evidence of the paper's claims (end of 04): test and validation matrices per training seed, and the
collapse share of the final recipe and of the unstable-recipe ablation (06's detection rule)."""
from __future__ import annotations

import pandas as pd

from .. import claims, grpo
from ..config import Config, training_seeds
from ..diagnostics import run_diagnostics
from ..model_registry import ROLES
from ..paths import RunPaths
from .evaluation import test_pairs, validation_matrices
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


def claim_evidence(cfg: Config, paths: RunPaths, test_mats: dict) -> dict:
    """What ``claims.claims_table`` measures, per training seed: test-set matrices of the base, SFT and GRPO
    medical model (``test_matrices``), validation matrices of every SFT format of both models, and the collapse
    share of the final recipe and of the unstable-recipe ablation (None where the profile does not make it)."""
    seeds = training_seeds(cfg)
    evidence: dict = dict(test_pairs(cfg, test_mats))
    if cfg.sft.general_model_too:
        by_role = {role: validation_matrices(cfg, paths, role, cfg.sft.formats, "sft") for role in ROLES}
        y_true = next(iter(by_role["medical"].values()))[seeds[0]][0]
        evidence["validation formats"] = (y_true, {role: {f: [m[s][1] for s in seeds] for f, m in by_fmt.items()}
                                                   for role, by_fmt in by_role.items()})
    if cfg.diagnostics.run_ablation:
        evidence["collapse"] = {
            "final": [run_collapse_share(cfg, paths, cfg.diagnostics.ablation_reward, s) for s in seeds],
            "unstable": [run_collapse_share(cfg, paths, ablation_name(cfg), s) for s in seeds]}
    return evidence
