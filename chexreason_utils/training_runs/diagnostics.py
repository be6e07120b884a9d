"""The diagnostics of a GRPO run (per-step diagnostics and collapse episodes: ``evaluation.diagnostics`` under the
profile's detection rule, relative to each run's start and to the RL prompts' label sets), read by 06, 08 and, as
claim C5's evidence at the end of 04, the detector's flags of the final recipe and of the unstable-recipe ablation."""
from __future__ import annotations

import pandas as pd

from ..train import grpo
from ..config import Config, training_seeds
from ..evaluation.diagnostics import CollapseRule, collapsed_steps, neighbour_rules, run_diagnostics, truth_set_shares
from ..data.manifests import load_manifest
from ..paths import RunPaths
from .grpo import ablation_name


def run_diagnostics_of(cfg: Config, paths: RunPaths, name: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-step diagnostics, collapse episodes) of one GRPO run and seed, from its log and completions."""
    return folder_diagnostics(cfg, paths, paths.grpo_run(name, seed), "run 03_grpo first")


def folder_diagnostics(cfg: Config, paths: RunPaths, folder,
                       missing: str = "an unfinished stage 08 run?") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-step diagnostics, collapse episodes) of the GRPO run in ``folder`` (03's runs through
    ``run_diagnostics_of``, stage 08's directly); ``missing``: what the error says when it has no log."""
    log = folder / RunPaths.LOG_HISTORY
    if not log.exists():
        raise FileNotFoundError(f"GRPO run log {log} not found ({missing})")
    return run_diagnostics(pd.read_csv(log), grpo.completions_table(folder), cfg.grpo.num_generations,
                           truth_set_shares(load_manifest(paths, "rl")["truth"]), collapse_rule(cfg),
                           cfg.grpo.nuanced.window)   # the guard's window: one fact


def collapse_rule(cfg: Config) -> CollapseRule:
    """The profile's collapse-detection thresholds (``DiagnosticsConfig``)."""
    d = cfg.diagnostics
    return CollapseRule(d.entropy_fraction, d.set_margin, d.zero_std_min, d.start_steps, d.episode_min_steps)


def collapse_flags(cfg: Config, paths: RunPaths, name: str, seed: int) -> pd.DataFrame:
    """``folder_flags`` of 03's GRPO run ``name`` of ``seed``."""
    return folder_flags(cfg, paths, paths.grpo_run(name, seed), "run 03_grpo first")


def folder_flags(cfg: Config, paths: RunPaths, folder, missing: str = "an unfinished stage 08 run?") -> pd.DataFrame:
    """The detector's flag (``collapsed_steps``, 06's rule) at each generation step of the GRPO run in ``folder``
    (``step_flags`` of its ``folder_diagnostics``)."""
    return step_flags(cfg, paths, folder_diagnostics(cfg, paths, folder, missing)[0])


def step_flags(cfg: Config, paths: RunPaths, per_step: pd.DataFrame) -> pd.DataFrame:
    """The detector's flag at each generation step of a run's per-step diagnostics: step, collapsed, and the flag
    under each threshold setting of the detector's neighbourhood (``neighbour_rules``, columns ``collapsed_0`` ...)."""
    generated = per_step.dropna(subset=["dominance"]).reset_index(drop=True)
    shares = truth_set_shares(load_manifest(paths, "rl")["truth"])
    rule = collapse_rule(cfg)
    flags = {"step": generated["step"].astype(int), "collapsed": collapsed_steps(generated, shares, rule).to_numpy(bool)}
    flags.update({f"collapsed_{i}": collapsed_steps(generated, shares, r).to_numpy(bool)
                  for i, r in enumerate(neighbour_rules(rule))})
    return pd.DataFrame(flags)


def collapse_evidence(cfg: Config, paths: RunPaths) -> dict | None:
    """Claim C5's evidence (``claims.collapse_count``): per training seed, the detector's flags at the generation
    steps of the final recipe and of the unstable-recipe ablation, and the axis and episode length they are read
    with (None where the profile runs no ablation)."""
    if not cfg.diagnostics.run_ablation:
        return None
    seeds = training_seeds(cfg)
    return {"final": [collapse_flags(cfg, paths, cfg.diagnostics.ablation_reward, s) for s in seeds],
            "unstable": [collapse_flags(cfg, paths, ablation_name(cfg), s) for s in seeds],
            "axis": cfg.claims.collapse_axis, "min_steps": cfg.diagnostics.episode_min_steps}
