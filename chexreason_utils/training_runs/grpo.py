"""A GRPO run of the pipeline: its inputs resolved once into one record (``train.grpo.GRPOInputs``: the seed's SFT
start, the RL prompts, the settings with the hard reward's length threshold resolved, the reward and the pool
prevalences), the run itself, whether it is finished, and the runs a profile makes (``grpo_plan``)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import prompts
from ..config import Config
from ..data.manifests import in_run, load_manifest
from ..paths import RunPaths
from ..queries.stage_outputs import pool_prevalence
from ..tracking import Tracking, run_name
from ..train import grpo, models
from ..train.model_registry import base_model, frozen_vision, processor_source
from .sft import sft_targets


def grpo_inputs(cfg: Config, paths: RunPaths, reward: str, seed: int, grpo_cfg=None,
                manifest: pd.DataFrame | None = None, start: Path | None = None) -> grpo.GRPOInputs:
    """The record of one GRPO run of training seed ``seed``: from that seed's Free-Reasoning SFT model (or
    ``start``: E2's SFT on planted images) on the RL manifest's prompts (or stage 08's ``manifest``) with
    ``grpo_cfg`` (default the profile's) at ``seed=seed`` and its length threshold resolved."""
    manifest = load_manifest(paths, "rl") if manifest is None else manifest
    fmt = cfg.grpo.start_format
    return grpo.GRPOInputs(start or paths.sft_model("medical", fmt, seed), rl_dataset(paths, manifest, fmt),
                           resolve_length_threshold(cfg, paths, replace(grpo_cfg or cfg.grpo, seed=seed)), reward,
                           pool_prevalence(paths), frozen_vision(cfg, "grpo"))


def run_grpo(cfg: Config, paths: RunPaths, inputs: grpo.GRPOInputs, out_dir: Path) -> grpo.GRPORun:
    """``inputs``' run in ``out_dir`` (reused when finished, resumed when cut off), reporting where the profile
    says."""
    tracking = Tracking(cfg.report_to, paths.tracking,
                        run_name("grpo", base_model(cfg, paths, "medical", inputs.cfg.seed), Path(out_dir).name,
                                 inputs.cfg.seed))
    return grpo.train_grpo(inputs, out_dir, cfg.device, tracking)


def rl_dataset(paths: RunPaths, manifest, fmt: str):
    """The GRPO prompts of the RL manifest, each completion logged with its image's run-relative path."""
    return grpo.make_dataset(prompts.prompt_for(fmt), list(manifest["image_path"]), list(manifest["truth"]),
                             [in_run(paths, p) for p in manifest["image_path"]])


def ablation_name(cfg: Config) -> str:
    return f"ablation-{cfg.diagnostics.ablation_reward}"


def grpo_plan(cfg: Config) -> dict[str, tuple[str, object]]:
    """Every GRPO run of a seed: run name -> (reward, GRPO config): each reward, and the 06 ablation (a recipe
    of the kind the paper reports as unstable) when ``diagnostics.run_ablation``."""
    plan = {reward: (reward, cfg.grpo) for reward in cfg.grpo.rewards}
    D = cfg.diagnostics
    if D.run_ablation:
        plan[ablation_name(cfg)] = (D.ablation_reward, replace(
            cfg.grpo, beta=D.ablation_beta, epsilon=D.ablation_epsilon, epsilon_high=D.ablation_epsilon_high,
            loss_type=D.ablation_loss_type, num_iterations=D.ablation_num_iterations))
    return plan


def plan_inputs(cfg: Config, paths: RunPaths, name: str, seed: int) -> grpo.GRPOInputs:
    """The record of ``grpo_plan``'s run ``name`` for ``seed``."""
    reward, grpo_cfg = grpo_plan(cfg)[name]
    return grpo_inputs(cfg, paths, reward, seed, grpo_cfg)


def sft_target_lengths(cfg: Config, paths: RunPaths, fmt: str) -> np.ndarray:
    """Token lengths (the start model's tokenizer) of the SFT targets of one format."""
    manifest = load_manifest(paths, "sft")
    tokenizer = models.load_processor(processor_source(cfg, paths, "medical")).tokenizer   # SFT keeps the base's tokenizer
    return np.array([len(tokenizer(t, add_special_tokens=False)["input_ids"])
                     for t in sft_targets(cfg, paths, manifest, fmt)])


def resolve_length_threshold(cfg: Config, paths: RunPaths, grpo_cfg):
    """``grpo_cfg`` with the hard reward's length threshold set from the SFT targets when
    ``hard.length_threshold_quantile`` > 0 (tiny profiles; its range is checked where the profile is loaded);
    unchanged otherwise (the paper's 250 tokens)."""
    q = grpo_cfg.hard.length_threshold_quantile
    if q <= 0:
        return grpo_cfg
    threshold = int(np.quantile(sft_target_lengths(cfg, paths, grpo_cfg.start_format), q))
    return replace(grpo_cfg, hard=replace(grpo_cfg.hard, length_threshold=threshold, length_threshold_quantile=0.0))
