"""Profiles (smoke | tiny | paper) and their typed parameters.

One YAML file per profile in ``chexreason_utils/profiles/``. Each top-level key is a section below; an
unknown or misspelt key, or a value of the wrong type, is a ``ConfigError`` naming the key and the file.
Any value can be overridden with a dotted key (``sft.learning_rate=1e-4``), from the command line
(``-p``) or from a notebook's ``overrides`` parameter.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).parent / "profiles"


class ConfigError(ValueError):
    """A profile or override that cannot be turned into a valid configuration."""


@dataclass
class WorldConfig:
    """The procedurally generated phantom world (tiny/smoke only; ``enabled: false`` in the paper profile)."""

    enabled: bool = True
    seed: int = 7
    image_size: int = 128
    n_mimic_studies: int = 1200          # MIMIC-like training site; each study has 1-2 frontal and 0-1 lateral
    n_chexpert_test_studies: int = 200   # CheXpert-like test site (frontal + some lateral views)
    n_nih_images: int = 800              # NIH-like site
    n_pretrain: int = 400                # per tiny base model, for its short domain pretraining


@dataclass
class DataConfig:
    """Where the three datasets live, in their official layouts. Relative paths are under the run dir."""

    mimic_root: str = "world/mimic-cxr-jpg/2.0.0"
    chexpert_root: str = "world/CheXpert-v1.0"
    chexpert_test_csv: str = "test_labels.csv"
    nih_root: str = "world/ChestX-ray14"
    uncertainty_policy: str = "positive_only"   # positive_only | uncertain_as_positive | ignore_uncertain
    check_images: bool = True


@dataclass
class SamplingConfig:
    """Penalty-based greedy sampler and the disjoint SFT / RL / validation split (docs/paper.md, Data)."""

    seed: int = 13
    n_sft: int = 2000
    n_rl: int = 1000
    n_val: int = 500
    min_fraction: float = 0.05          # stated: every label in at least 5% of the selection
    max_fraction: float = 0.30          # open: above this a label counts as over-represented
    overrep_penalty: float = 4.0        # open: weight of the penalty for adding an over-represented label
    pool_splits: list = field(default_factory=lambda: ["train", "validate"])
    patient_disjoint: bool = True       # open: no patient in two of SFT / RL / validation
    nih_test_size: int = 488
    nih_selection: str = "greedy_balanced"   # greedy_balanced | random  (open; see sampling.select_nih_test)
    nih_without_scored_positive: str = "exclude"   # open: exclude | keep NIH images with no scored positive
    nih_splits: list = field(default_factory=lambda: ["test"])


@dataclass
class ModelsConfig:
    """Which base models play the paper's 'medical' and 'general' roles."""

    medical: str = "google/medgemma-4b-it"
    general: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    build_tiny: bool = False            # build tiny models of the same classes offline (tiny/smoke)
    tiny_hidden: int = 128
    tiny_layers: int = 2
    tiny_image_size: int = 112
    tiny_vocab: int = 1200
    pretrain_steps: int = 300           # domain pretraining of the tiny base models
    pretrain_lr: float = 1e-3
    n_instruct: int = 1200              # open: instruction examples per tiny base (the "-it" analogue, ``instruct``)
    instruct_steps: int = 150           # open: instruction-tuning steps per tiny base, after domain pretraining
    instruct_lr: float = 1e-3           # open: its learning rate
    instruct_batch_size: int = 8        # open: its batch size
    dtype: str = "auto"                 # auto: bf16 on GPU, fp32 on CPU
    image_min_pixels: int = 0           # open: Qwen2.5-VL image-area bounds (0: as the processor was saved);
    image_max_pixels: int = 0           # open: max/784 bounds its image tokens. MedGemma is fixed (896² → 256)


@dataclass
class SFTConfig:
    """Supervised fine-tuning (docs/paper.md, Hyperparameters: SFT)."""

    formats: list = field(default_factory=lambda: ["only_label", "free_reasoning", "reasoning_narrative", "reasoning_a"])
    general_model_too: bool = True      # also fine-tune the general model (for notebook 05)
    teacher: str = "template"           # template | http
    teacher_model: str = "gemini-2.5-pro"
    teacher_base_url: str = "https://generativelanguage.googleapis.com/v1beta/openai"
    teacher_api_key_env: str = "TEACHER_API_KEY"
    teacher_concurrency: int = 4
    use_lora: bool = True               # paper: LoRA; tiny random-init models need full fine-tuning
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    learning_rate: float = 5e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    max_grad_norm: float = 5.0
    epochs: float = 6.0
    max_steps: int = -1                 # > 0 caps training (tiny/smoke)
    batch_size: int = 1
    grad_accum: int = 8
    early_stopping_patience: int = 2
    val_fraction: float = 0.10
    eval_steps: int = 0                 # 0: evaluate once per epoch
    max_length: int = 2048
    gradient_checkpointing: bool = True
    logging_steps: int = 5


@dataclass
class HardRewardConfig:
    """Hard reward (docs/paper.md, Rewards): J - lambda_len if valid and short, J if valid, 0 if invalid."""

    lambda_len: float = 0.1             # open
    length_threshold: int = 250         # stated (paper profile); replaced when length_threshold_quantile > 0
    length_threshold_quantile: float = 0.0  # open: > 0 sets the threshold to this quantile of the start-format
    #   SFT targets' token lengths (measured from the data, so "shorter than the traces" keeps its meaning in the
    #   tiny profiles, whose completions are capped far below 250 tokens); 0 keeps length_threshold as stated
    length_unit: str = "tokens"         # open: tokens | chars
    empty_jaccard: float = 1.0          # open: J(empty, empty); NV-Reason-CXR uses 1


@dataclass
class NuancedRewardConfig:
    """Nuanced reward (docs/paper.md, Rewards); every amount below is stated unless marked open."""

    exact_match: float = 100.0
    recall_weight: float = 30.0
    precision_weight: float = 20.0
    fp_base: float = 10.0               # open: per-FP penalty is fp_base * sqrt(prevalence / mean prevalence)
    invalid_label: float = 100.0
    duplicate_label: float = 25.0
    extra_text: float = 10.0            # open
    missing_tags: float = 100.0         # open: output breaks the <think>/<solution> contract
    window: int = 100
    dominance: float = 0.70
    excess_repetition: float = 30.0
    collapse: float = 50.0
    min_window: int = 20                # open: the guard is silent until this many predictions are seen


@dataclass
class GRPOConfig:
    """GRPO from the Free-Reasoning SFT checkpoint (docs/paper.md, Hyperparameters: GRPO)."""

    rewards: list = field(default_factory=lambda: ["hard", "nuanced"])
    start_format: str = "free_reasoning"
    learning_rate: float = 1e-6          # open
    max_steps: int = 500                 # open
    prompts_per_step: int = 2            # open
    num_generations: int = 4
    temperature: float = 0.8
    top_p: float = 0.95
    beta: float = 0.15
    loss_type: str = "dr_grpo"
    epsilon: float = 0.15
    epsilon_high: float = 0.22
    importance_sampling_level: str = "token"
    num_iterations: int = 1              # open (trl): optimiser steps per generated batch. With 1 (and
    #   steps_per_generation 1) the importance ratio is exactly 1, so epsilon / epsilon_high never clip: the paper
    #   states epsilon but not this, so whether its clipping acted is an open choice
    steps_per_generation: int = 1        # open (trl): optimiser steps that share one generation batch; > 1 also
    #   makes the ratio differ from 1 (a larger generation batch, sliced across steps)
    max_completion_length: int = 512     # open
    save_steps: int = 50
    seed: int = 21
    frozen_control: bool = True          # ours: also score the frozen SFT policy on the very same batches
    #   (generation + reward, no update) into <run>/control/, the baseline for the paired gain
    hard: HardRewardConfig = field(default_factory=HardRewardConfig)
    nuanced: NuancedRewardConfig = field(default_factory=NuancedRewardConfig)


@dataclass
class EvaluationConfig:
    """Batched greedy evaluation and metrics."""

    batch_size: int = 16
    max_new_tokens: int = 512
    prompt_variant: str = ""            # empty: the prompt matching the model's SFT format
    invalid_policy: str = "empty"       # empty: invalid output = empty prediction and a failure | salvage
    nih_label_set: str = "paper9"       # paper9 | with_effusion
    n_bootstrap: int = 1000
    bootstrap_seed: int = 2026
    score_grpo_checkpoints: bool = True
    test_grpo_reward: str = "hard"      # open: which GRPO run plays "ChexReason" on the test sets
    test_grpo_checkpoint: str = "final" # final | best_f1
    sample_validity_n: int = 64         # sampled completions (T=0.8, top-p 0.95) checked after SFT
    val_checkpoint_every: int = 1       # open: score every k-th GRPO checkpoint on validation (final always)
    test_checkpoints: list = field(default_factory=lambda: ["best_f1", "final"])   # open: also on the test sets
    test_checkpoint_every: int = 1      # open: and every k-th checkpoint on the test sets (0: none)
    relabel_csv: str = ""               # optional: Google's 2019 NIH expert relabels (data/nih_relabels.py)


@dataclass
class CrossModelConfig:
    """Notebook 05: zero-shot prompt variants and SFT formats on the medical and general model."""

    prompt_variants: list = field(default_factory=lambda: [
        "reasoning_narrative", "self_check", "hypothesis", "reasoning_a", "reasoning_b",
        "reasoning_c", "reasoning_d", "reasoning_e", "reasoning_f"])
    general_zero_shot: bool = True


@dataclass
class DiagnosticsConfig:
    """Notebook 06: entropy / mode-collapse measures and the unstable-recipe ablation."""

    window: int = 100
    dominance_threshold: float = 0.70
    episode_min_steps: int = 3
    run_ablation: bool = True
    ablation_reward: str = "hard"
    ablation_beta: float = 0.0
    ablation_epsilon: float = 0.2
    ablation_epsilon_high: float = 0.2
    ablation_loss_type: str = "grpo"    # per-sequence length normalisation switched back on
    ablation_num_iterations: int = 2    # ours: > 1 so that the ablated epsilon can act (clip ratio > 0 logged);
    #   with one iteration the ratio is 1 and the epsilon part of the ablation would change nothing


@dataclass
class Config:
    """A whole profile."""

    profile: str = "paper"
    seed: int = 0
    # Training seeds (open: the paper reports one run). The chain that carries the paper's claims (SFT, GRPO,
    # the 06 ablation, sampling checks, evaluation) runs once per seed; world, manifests and tiny base models
    # stay fixed. Distinct integers, at least one.
    seeds: list = field(default_factory=lambda: [0])
    device: str = "auto"                # auto | cpu | cuda
    workers: int = 0                    # processes for independent jobs (jobs.run_jobs); 0: one per CPU core
    world: WorldConfig = field(default_factory=WorldConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    cross_model: CrossModelConfig = field(default_factory=CrossModelConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(profile: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load a profile by name (or a YAML path) and apply dotted-key overrides."""
    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{profile}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown profile {str(profile)!r}: choose one of {', '.join(available_profiles())} "
                f"(or give the path of a YAML file)")
    if not path.is_file():
        raise ConfigError(f"profile file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    raw.setdefault("profile", path.stem)
    cfg = _build(Config, raw, where=str(path), prefix="")
    for key, value in (overrides or {}).items():
        set_value(cfg, key, value, where="override")
    check_seeds(cfg.seeds, where=str(path))
    return cfg


def check_seeds(seeds: list, where: str = "config") -> list[int]:
    """The training seeds: a non-empty list of distinct integers, else a ``ConfigError`` naming ``seeds``."""
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, got {seeds!r}")
    bad = [s for s in seeds if not isinstance(s, int) or isinstance(s, bool)]
    if bad:
        raise ConfigError(f"{where}: seeds must be integers, got {bad!r}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"{where}: seeds repeats {repeated!r}; each training seed must appear once")
    return list(seeds)


def training_seeds(cfg: Config) -> list[int]:
    """The profile's training seeds (checked: non-empty, no repeats)."""
    return check_seeds(cfg.seeds, where="profile")


def parse_override(text: str) -> tuple[str, Any]:
    """``'sft.max_steps=20'`` -> ``('sft.max_steps', 20)``; the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    return key.strip(), yaml.safe_load(value) if value.strip() else ""


def set_value(cfg: Config, dotted: str, value: Any, where: str = "override") -> None:
    """Set one dotted key on a config, with the same type checks as the YAML loader."""
    *parents, leaf = dotted.split(".")
    target: Any = cfg
    for i, part in enumerate(parents):
        if not dataclasses.is_dataclass(target) or part not in _field_types(type(target)):
            raise ConfigError(f"{where}: unknown key {'.'.join(parents[:i + 1])!r}")
        target = getattr(target, part)
    types_ = _field_types(type(target))
    if leaf not in types_:
        raise ConfigError(f"{where}: unknown key {dotted!r}; known keys here: {', '.join(sorted(types_))}")
    setattr(target, leaf, _coerce(value, types_[leaf], f"{where}: {dotted}"))


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _build(cls: type, raw: dict, where: str, prefix: str):
    types_ = _field_types(cls)
    unknown = sorted(set(raw) - set(types_))
    if unknown:
        names = ", ".join(repr(prefix + k) for k in unknown)
        raise ConfigError(f"{where}: unknown key {names}; known keys: {', '.join(sorted(types_))}")
    obj = cls()
    for key, value in raw.items():
        setattr(obj, key, _coerce(value, types_[key], f"{where}: {prefix}{key}", where))
    return obj


def _coerce(value: Any, annotation: Any, what: str, where: str = "override"):
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{what} must be a mapping, got {value!r}")
        prefix = what.split(": ", 1)[1] + "." if ": " in what else ""
        return _build(annotation, value, where, prefix)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return None if value is None else _coerce(value, options[0], what, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is list or origin is list:
        if isinstance(value, list):
            return value
    elif annotation is dict or origin is dict:
        if isinstance(value, dict):
            return value
    name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"{what} must be {name}, got {value!r} ({type(value).__name__})")
