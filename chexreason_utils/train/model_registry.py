"""Model registry: which model plays each role (medical, general) in a profile, and where it lives."""
from __future__ import annotations

from ..config import Config, training_seeds
from ..paths import RunPaths

ROLES = ("medical", "general")
TINY_CLASSES = {"tiny-gemma3": "gemma3", "tiny-qwen2_5_vl": "qwen2_5_vl"}   # tiny model name -> class built


def built_bases(cfg: Config) -> bool:
    """Whether the profile builds its bases (tiny models: each training seed builds its own in 00) rather than
    loading one fixed pretrained model per role (the paper's hub models)."""
    return all(getattr(cfg.models, role) in TINY_CLASSES for role in ROLES)


def base_model(cfg: Config, paths: RunPaths, role: str, seed: int) -> str:
    """The base a training ``seed`` starts from in ``role``: its own built tiny base (a folder), or the profile's
    fixed hub id / folder (paper)."""
    name = getattr(cfg.models, role)
    return str(paths.base_models(seed) / name) if name in TINY_CLASSES else name


def processor_source(cfg: Config, paths: RunPaths, role: str) -> str:
    """Where a role's tokenizer and processor are read: the first training seed's base (every seed's base is built
    with the same tokenizer, trained on one corpus)."""
    return base_model(cfg, paths, role, training_seeds(cfg)[0])


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
