"""The heavy parts of stages 02-04 as commands, so they can run under ``accelerate launch``.

    accelerate launch --config_file accelerate/multi_gpu.yaml -m chexreason_utils sft --profile paper
    accelerate launch --config_file accelerate/multi_gpu.yaml -m chexreason_utils grpo --profile paper --reward hard
    accelerate launch --config_file accelerate/multi_gpu.yaml -m chexreason_utils evaluate --profile paper \\
        --model runs/paper/02_sft/seed-0/medical/free_reasoning --manifest val --prompt free_reasoning --tag seed-0-sft-medical-free_reasoning

They write exactly what the notebooks write (same folders, run ids and prediction files), so a notebook run
afterwards reuses them instead of recomputing. SFT and GRPO are data parallel through the trainers (trl uses
the accelerate state it finds); evaluation shards images over the processes (``evaluate.predict_sharded``).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .config import Config, training_seeds
from .paths import RunPaths
from .queries import predictions as prediction_cache
from .steps import grpo as grpo_steps, sft as sft_steps


def run_sft(cfg: Config, paths: RunPaths, roles: list[str]) -> dict:
    """Every configured SFT format and training seed of each role (reused when already trained). The launched
    processes are the parallelism here, so no worker pool is started inside them."""
    return sft_steps.train_formats(replace(cfg, workers=1), paths, roles)


def run_grpo(cfg: Config, paths: RunPaths, rewards: list[str]) -> dict:
    """The GRPO run of each reward and training seed, resumed from its last checkpoint when interrupted."""
    return {reward: {seed: grpo_steps.run_grpo(cfg, paths, reward, seed) for seed in training_seeds(cfg)}
            for reward in rewards}


def run_evaluation(cfg: Config, paths: RunPaths, model: str | Path, manifest: str, prompt: str, tag: str):
    """Predictions of one model on one manifest (the file the notebooks read), sharded over the processes."""
    return prediction_cache.predictions(cfg, paths, model, manifest, prompt, tag)
