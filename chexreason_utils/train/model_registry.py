"""Model registry: which model plays each role (medical, general) in a profile, and where it lives."""
from __future__ import annotations

from ..config import Config
from ..paths import RunPaths

ROLES = ("medical", "general")
TINY_CLASSES = {"tiny-gemma3": "gemma3", "tiny-qwen2_5_vl": "qwen2_5_vl"}   # tiny model name -> class built


def base_model(cfg: Config, paths: RunPaths, role: str) -> str:
    """The profile's name for a role -> a folder (tiny) or a hub id / folder (paper)."""
    name = getattr(cfg.models, role)
    return str(paths.models / name) if name in TINY_CLASSES else name


def image_pixels(cfg: Config) -> tuple[int, int]:
    """(min, max) image area for dynamic-resolution processors (Qwen2.5-VL); (0, 0): as the processor was saved."""
    return cfg.models.image_min_pixels, cfg.models.image_max_pixels


def vision_objective(cfg: Config) -> str:
    """The tiny bases' vision-pretraining objective: ``models.vision_objective``, none without a pool to train on."""
    return cfg.models.vision_objective if cfg.world.enabled and cfg.world.n_vision_pretrain > 0 else "none"


def frozen_vision(cfg: Config, phase: str) -> bool:
    """Whether ``phase`` (bases: caption pretraining and instruction tuning; sft; grpo) keeps a vision-pretrained tower
    and projector frozen (``models.freeze_vision``)."""
    return vision_objective(cfg) != "none" and phase in cfg.models.freeze_vision.split("_and_")
