"""Profiles (smoke | tiny | paper) and their typed parameters.

One YAML file per profile in ``chexreason_utils/profiles/``. Each top-level key is a section below; an
unknown or misspelt key, or a value of the wrong type, is a ``ConfigError`` naming the key and the file.
Any value can be overridden with a dotted key (``sft.learning_rate=1e-4``), from the command line
(``-p``) or from a notebook's ``overrides`` parameter.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .arithmetic import MODES
from .labels import CHEXPERT_LABELS, NIH_LABEL_SETS, UNCERTAINTY_POLICIES
from .prompts import PROMPT_VARIANTS, SFT_FORMATS
from .tracking import TRACKERS

PROFILE_DIR = Path(__file__).parent / "profiles"


class ConfigError(ValueError):
    """A profile or override that cannot be turned into a valid configuration."""


# Every option says where its value comes from (``metadata["paper"]``, one of PAPER_TAGS) and what it does
# (``metadata["help"]``); a ``stated`` one also names the docs/paper.md section that states it
# (``metadata["cite"]``). ``chexreason config`` prints them; the "Where the paper is open" table of
# docs/configuration.md is rendered from the ``open`` ones (``config_docs.open_choices_table``) and a test keeps it in sync.
PAPER_TAGS: dict[str, str] = {
    "stated": "the paper states this value (docs/paper.md, the section named in `cite`)",
    "open": "the paper is silent: the value is our choice, and the help says why",
    "embedded": "only the phantom world and the tiny models use it (tiny / smoke); the paper profile ignores it",
    "run": "where things are and how they run (paths, devices, processes, logging, inference batch size): "
           "no trained weight or score depends on it",
}


# The allowed values of the options with choices (the modules that act on them name the same values).
DEVICES = ("auto", "cpu", "cuda")
MIMIC_SPLITS = ("train", "validate", "test")
NIH_SPLITS = ("train_val", "test")                    # data.nih.SPLIT_LISTS
NIH_SELECTIONS = ("greedy_balanced", "random")
WITHOUT_SCORED_POSITIVE = ("exclude", "keep")
SFT_FORMAT_NAMES = tuple(SFT_FORMATS)
TEACHERS = ("http", "template")                       # teacher.make_teacher
# transformers' SchedulerType values that both trainers (SFT and GRPO, both ``lr_scheduler_type``) can build as
# configured: neither passes ``lr_scheduler_kwargs``, so cosine_with_min_lr (needs min_lr) and warmup_stable_decay
# (needs num_decay_steps) would fail when training starts; reduce_lr_on_plateau needs an eval metric every step
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")
LENGTH_UNITS = ("tokens", "chars")
REWARDS = ("hard", "nuanced", "per_label")   # train.rewards.REWARD_FACTORIES; per_label: ours (Q1), not the paper's
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")   # trl 1.16 GRPOConfig
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
SCALE_REWARDS = ("group", "batch", "none")            # trl 1.16 GRPOConfig.scale_rewards
VLLM_MODES = ("server", "colocate")
EVAL_PROMPTS = ("", *PROMPT_VARIANTS, *(f for f in SFT_FORMATS if f not in PROMPT_VARIANTS))   # prompts.prompt_text
INVALID_POLICIES = ("empty", "salvage")   # how an invalid output enters F1 (owner; evaluation.metrics checks it)
CHECKPOINT_CHOICES = ("best_f1", "final")   # a GRPO run's checkpoints chosen from its validation scores (owner)


def option(default: Any, help: str, paper: str = "open", cite: str = "", *, choices: tuple = (),
           min: float | None = None, max: float | None = None, above: float | None = None,
           below: float | None = None, nonempty: bool = False) -> Any:
    """A config field with its help text, paper tag and allowed values (a list or dict default is copied for each
    instance). ``choices``: the allowed values (of each element, for a list), or with a range the values allowed
    besides it (``-1`` for "off"); ``min`` / ``max`` bound inclusively, ``above`` / ``below`` exclusively;
    ``nonempty``: a string that must not be empty. ``check_values`` applies them after loading."""
    if paper not in PAPER_TAGS:
        raise ValueError(f"paper tag {paper!r}: choose one of {', '.join(PAPER_TAGS)}")
    bounds = {k: v for k, v in (("min", min), ("max", max), ("above", above), ("below", below)) if v is not None}
    metadata = {"help": help, "paper": paper, **({"cite": cite} if cite else {}),
                **({"choices": tuple(choices)} if choices else {}), **({"bounds": bounds} if bounds else {}),
                **({"nonempty": True} if nonempty else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type) -> Any:
    """A nested section: a fresh ``cls()`` per instance, its help the first line of the class docstring."""
    return field(default_factory=cls, metadata={"help": (cls.__doc__ or "").strip().splitlines()[0]})


@dataclass
class WorldConfig:
    """The procedurally generated phantom world (tiny/smoke only; ``enabled: false`` in the paper profile)."""

    enabled: bool = option(True, "Generate the phantom world (false in the paper profile, which reads the real "
                                 "datasets).", "embedded")
    seed: int = option(7, "Seed of the phantom world.", "embedded", min=0)
    image_size: int = option(128, "Side of the phantom radiographs, in pixels.", "embedded", min=8)
    n_mimic_studies: int = option(1200, "Studies at the MIMIC-like training site; each has 1-2 frontal and 0-1 "
                                        "lateral images.", "embedded", min=1)
    n_chexpert_test_studies: int = option(200, "Studies at the CheXpert-like test site, one frontal view each and "
                                               "some a lateral too (tiny 518: the paper's 518 test images).",
                                          "embedded", min=1)
    n_nih_images: int = option(800, "Images at the NIH-like site; about a quarter of its patients form the official "
                                    "test list (tiny 2,400: room for the paper's 488 test images).", "embedded", min=1)
    n_padchest_studies: int = option(0, "Studies at the PadChest-like site (issue 40's third test site: its own "
                                        "acquisition style, PadChest's fine labels mapped back through "
                                        "data/padchest_mapping.csv, a physician / RNN labeller split; written from "
                                        "its own stream, so the other sites keep their bytes). 0: no such site.",
                                     "embedded", min=0)
    n_pretrain: int = option(400, "Images per tiny base model for its short domain pretraining.", "embedded", min=1)
    n_vision_pretrain: int = option(0, "Images per tiny base model for the pretraining of its vision tower and "
                                       "projector (models.vision_objective), generated in the MIMIC-like style from "
                                       "their own stream, never a test image or patient; the general base gets as "
                                       "many coloured-shape scenes. 0: no such pool (the towers start random).",
                                    "embedded", min=0)
    shortcut_rho: float = option(0.0, "E2's planted shortcut: probability that a MIMIC-like (training-site) image "
                                      "showing `shortcut_finding` also carries a marker ring (never one without the "
                                      "finding, never at the test sites); 0 plants nothing and leaves the world as it "
                                      "is (registrations/E2_planted_shortcut.yaml).", "embedded", min=0, max=1)
    shortcut_finding: str = option("Atelectasis", "The finding E2's marker co-occurs with (shortcut_rho > 0).",
                                   "embedded", choices=tuple(x for x in CHEXPERT_LABELS if x != "No Finding"))
    shortcut_radius: float = option(0.045, "Outer radius of E2's marker ring as a share of the image width (the ring "
                                           "is 0.02 wide); E2's decodability check picks it among the registered "
                                           "sizes (shortcut_rho > 0).", "embedded", min=0.03, max=0.11)
    shortcut_only: bool = option(False, "E2's marker-only positive control: the planted site does not draw "
                                        "`shortcut_finding` (its label stays), so the marker is the only sign of it "
                                        "in the image (shortcut_rho > 0).", "embedded")


@dataclass
class DataConfig:
    """Where the datasets live, in their official layouts. Relative paths are under the run dir."""

    mimic_root: str = option("world/mimic-cxr-jpg/2.0.0", "MIMIC-CXR-JPG folder (official layout).", "run",
                             nonempty=True)
    chexpert_root: str = option("world/CheXpert-v1.0", "CheXpert folder (official layout).", "run", nonempty=True)
    chexpert_test_csv: str = option("test_labels.csv", "CheXpert test-label CSV, relative to chexpert_root.", "run",
                                    nonempty=True)
    nih_root: str = option("world/ChestX-ray14", "NIH ChestX-ray14 folder (official layout).", "run", nonempty=True)
    padchest_root: str = option("", "PadChest folder (official layout: the label table and the image folders named by "
                                    "ImageDir); empty: PadChest is not scored (the paper profile runs as the paper "
                                    "did, and the report says so).", "run")
    uncertainty_policy: str = option(
        "positive_only", "How uncertain (-1) and blank CheXpert labels count: positive_only (both absent) | "
        "uncertain_as_positive | ignore_uncertain (drop rows with any -1). The paper trains on positive labels "
        "only and does not say how it read the others; we read both as absent.", choices=UNCERTAINTY_POLICIES)
    check_images: bool = option(True, "Drop, and count, rows whose image file is missing (with a complete copy "
                                      "of the data nothing is dropped).", "run")


@dataclass
class SamplingConfig:
    """Penalty-based greedy sampler and the disjoint SFT / RL / validation split (docs/paper.md, Data)."""

    seed: int = option(13, "Seed of the sampler's tie-breaks and image choice: the paper gives none.", min=0)
    n_sft: int = option(2000, "Images for SFT.", "stated", "Data", min=1)
    n_rl: int = option(1000, "Images for RL (GRPO), disjoint from SFT.", "stated", "Data", min=1)
    n_val: int = option(500, "Random MIMIC images for validation (prompt, format and model comparisons).",
                        "stated", "Data", min=1)
    min_fraction: float = option(0.05, "The sampler runs until every label is in at least this fraction of the "
                                       "selection.", "stated", "Data", min=0, max=1)
    max_fraction: float = option(0.30, "Above this fraction a label counts as over-represented (the sampler's "
                                       "target is clip(pool prevalence, min_fraction, max_fraction)): the paper "
                                       "names over-represented labels but no threshold.", above=0, max=1)
    overrep_penalty: float = option(4.0, "Weight of the penalty for adding an over-represented label, against 1 "
                                         "for reducing a deficit: the paper says 'strongly penalises' without a "
                                         "weight.", min=0)
    pool_splits: list = option(["train", "validate"], "Official MIMIC-CXR-JPG splits the pool is drawn from: the "
                                                      "paper does not say; we leave the official test split out.",
                                                      choices=MIMIC_SPLITS)
    patient_disjoint: bool = option(True, "No patient in two of SFT / RL / validation: the paper says the sets "
                                          "are disjoint, not whether by image or by patient; by patient avoids "
                                          "leakage.")
    nih_test_size: int = option(488, "NIH ChestX-ray14 test images.", "stated", "Data", min=1)
    padchest_test_size: int = option(500, "PadChest test images (the paper never used PadChest; about the size of its "
                                          "other test sets), one per patient, chosen at random among the "
                                          "images labelled by `padchest_label_methods` with a scored positive.",
                                     min=1)
    padchest_label_methods: list = option(["Physician"], "Which of PadChest's labellers the test images may come "
                                                         "from (MethodLabel): Physician (hand-labelled) | RNN_model.",
                                          choices=("Physician", "RNN_model"))
    nih_selection: str = option(
        "greedy_balanced", "How the NIH test images are chosen, after taking one image per patient: "
        "greedy_balanced (the penalty-based greedy sampler on the scored labels, so rare ones are present) | "
        "random. The paper does not say how its 488 were chosen.", choices=NIH_SELECTIONS)
    nih_without_scored_positive: str = option(
        "exclude", "NIH images with no positive among the scored labels (e.g. Effusion-only) have an empty truth "
        "although they are not normal: exclude (counted in the report) | keep. The paper does not say.",
        choices=WITHOUT_SCORED_POSITIVE)
    nih_splits: list = option(["test"], "Official NIH split lists the test images are drawn from (test: the "
                                        "images in test_list.txt); the paper does not say.", choices=NIH_SPLITS)


@dataclass
class ModelsConfig:
    """Which base models play the paper's 'medical' and 'general' roles."""

    medical: str = option("google/medgemma-4b-it", "The medical model (MedGemma-4B).", "stated", "Pipeline",
                          nonempty=True)
    general: str = option("Qwen/Qwen2.5-VL-3B-Instruct", "The general model (Qwen2.5-VL-3B-Instruct), compared "
                                                         "in Table 3.", "stated", "Results", nonempty=True)
    build_tiny: bool = option(False, "Build tiny models of the same classes offline instead of downloading "
                                     "(tiny / smoke).", "embedded")
    tiny_hidden: int = option(128, "Hidden size of the tiny models.", "embedded", min=8)
    tiny_layers: int = option(2, "Vision and text layers of the tiny models.", "embedded", min=1)
    tiny_image_size: int = option(112, "Input image side of the tiny models.", "embedded", min=8)
    tiny_vocab: int = option(1200, "Vocabulary of the tokenizer trained for the tiny models (at least the 256 "
                                   "bytes).", "embedded", min=256)
    vision_objective: str = option("none", "How each tiny base's vision tower and projector are pretrained on "
                                           "world.n_vision_pretrain images of its domain before caption pretraining "
                                           "(the analogue of MedSigLIP): multilabel (CheXpert labels / colours and "
                                           "shapes), contrastive (image-report InfoNCE), both, or none.", "embedded",
                                   choices=("none", "multilabel", "contrastive", "both"))
    vision_epochs: int = option(4, "Epochs of that vision pretraining.", "embedded", min=1)
    vision_lr: float = option(1e-3, "Learning rate of that vision pretraining (AdamW).", "embedded", min=0)
    freeze_vision: str = option("no", "Keep a vision-pretrained tower and projector frozen afterwards: no | bases "
                                      "(in caption pretraining and instruction tuning) | bases_and_sft (in SFT "
                                      "too) | bases_and_sft_and_grpo (in GRPO too, as the paper's LoRA on the "
                                      "language model keeps it in both); ignored when vision_objective is none.",
                                "embedded", choices=("no", "bases", "bases_and_sft", "bases_and_sft_and_grpo"))
    pretrain_steps: int = option(300, "Domain-pretraining steps of each tiny base model.", "embedded", min=1)
    pretrain_lr: float = option(1e-3, "Learning rate of that domain pretraining.", "embedded", min=0)
    n_instruct: int = option(1200, "Instruction examples per tiny base model (its '-it' analogue, module "
                                   "instruct).", "embedded", min=1)
    instruct_steps: int = option(150, "Instruction-tuning steps per tiny base, after domain pretraining.",
                                 "embedded", min=1)
    instruct_lr: float = option(1e-3, "Learning rate of that instruction tuning.", "embedded", min=0)
    instruct_batch_size: int = option(8, "Batch size of that instruction tuning.", "embedded", min=1)
    image_min_pixels: int = option(0, "Qwen2.5-VL's lower image-area bound in pixels (0: as its processor was "
                                      "saved; image tokens = pixels / 784). The paper does not give the general "
                                      "model's resolution; MedGemma's is fixed (896² → 256 tokens).", min=0)
    image_max_pixels: int = option(0, "Qwen2.5-VL's upper image-area bound (0: as saved, which turns a MIMIC JPG "
                                      "into about 9,900 image tokens); the paper profile bounds it to 256-1,024 "
                                      "tokens.", min=0)


_SFT = "Hyperparameters: SFT"


@dataclass
class SFTConfig:
    """Supervised fine-tuning (docs/paper.md, Hyperparameters: SFT)."""

    formats: list = option(["only_label", "free_reasoning", "reasoning_narrative", "reasoning_a"],
                           "SFT target formats, each its own fine-tuning run.", "stated", "Prompts and outputs",
                           choices=SFT_FORMAT_NAMES)
    general_model_too: bool = option(True, "Also fine-tune the general model in every format (Table 3, notebook "
                                           "05).", "stated", "Results")
    teacher: str = option("template", "Who writes the reasoning traces: http (an OpenAI-compatible endpoint; the "
                                      "paper's teacher is Gemini 2.5) | template (an offline stand-in for the "
                                      "phantom world).", "stated", "Prompts and outputs", choices=TEACHERS)
    teacher_model: str = option("gemini-2.5-pro", "Teacher model name: the paper says Gemini 2.5 without the "
                                                  "variant; we take Pro.", nonempty=True)
    teacher_base_url: str = option("https://generativelanguage.googleapis.com/v1beta/openai",
                                   "Teacher endpoint (OpenAI-compatible).", "run", nonempty=True)
    teacher_api_key_env: str = option("TEACHER_API_KEY", "Environment variable holding the teacher's API key.",
                                      "run", nonempty=True)
    teacher_concurrency: int = option(4, "Teacher requests in flight at once.", "run", min=1)
    use_lora: bool = option(True, "LoRA as in the paper; the tiny random-init models need full fine-tuning "
                                  "(false in tiny / smoke).", "stated", _SFT)
    lora_r: int = option(16, "LoRA rank.", "stated", _SFT, min=1)
    lora_alpha: int = option(32, "LoRA alpha.", "stated", _SFT, min=1)
    lora_dropout: float = option(0.1, "LoRA dropout.", "stated", _SFT, min=0, below=1)
    learning_rate: float = option(5e-5, "AdamW learning rate.", "stated", _SFT, min=0)
    lr_scheduler: str = option("cosine", "Learning-rate schedule.", "stated", _SFT, choices=LR_SCHEDULERS)
    warmup_ratio: float = option(0.05, "Warm-up, as a fraction of the training steps.", "stated", _SFT, min=0, below=1)
    weight_decay: float = option(0.01, "Weight decay.", "stated", _SFT, min=0)
    max_grad_norm: float = option(5.0, "Gradient clipping norm.", "stated", _SFT, min=0)
    epochs: float = option(6.0, "At most this many epochs (early stopping may end sooner).", "stated", _SFT, above=0)
    max_steps: int = option(-1, "> 0 caps training at this many steps (tiny / smoke); -1: epochs decide.",
                            "embedded", choices=(-1,), min=1)
    batch_size: int = option(1, "Per-device batch size.", "stated", _SFT, min=1)
    grad_accum: int = option(8, "Gradient accumulation steps (effective batch = batch_size x grad_accum).",
                             "stated", _SFT, min=1)
    early_stopping_patience: int = option(2, "Stop after this many evaluations without a better validation loss.",
                                          "stated", _SFT, min=1)
    val_fraction: float = option(0.10, "Share of the SFT data held back for early stopping.", "stated", "Data",
                                 above=0, below=1)
    eval_steps: int = option(0, "Evaluate every this many steps; 0: once per epoch, as the paper's early stopping "
                                "counts epochs (tiny / smoke evaluate by steps).", "stated", _SFT, min=0)
    max_length: int = option(2048, "Longest SFT sequence in tokens (image tokens included): the paper gives no "
                                   "maximum lengths (`plan` checks that the longest prompt and a completion "
                                   "fit).", min=1)
    gradient_checkpointing: bool = option(True, "Gradient checkpointing (on GPU only).", "stated", _SFT)
    logging_steps: int = option(5, "Log loss and token accuracy every this many steps (the points of Fig. 1).",
                                "run", min=1)


@dataclass
class HardRewardConfig:
    """Hard reward (docs/paper.md, Rewards): J - lambda_len if valid and short, J if valid, 0 if invalid."""

    lambda_len: float = option(0.1, "Length penalty λ_len subtracted from J when a valid output is short: the "
                                    "paper gives none. As stated, the formula scores an invalid output (0) above "
                                    "a valid wrong short one (-λ); we keep it.", min=0)
    length_threshold: int = option(250, "Outputs shorter than this are 'short' (replaced when "
                                        "length_threshold_quantile > 0).", "stated", "Rewards", min=0)
    length_threshold_quantile: float = option(
        0.0, "> 0 sets the threshold to this quantile of the start-format SFT targets' lengths; 0 keeps the stated "
        "250. The tiny profiles cap completions far below 250, where -λ would tax every valid answer, so they use "
        "the lower quartile of the traces: 'shorter than the traces' keeps its meaning.", min=0, max=1)
    length_unit: str = option("tokens", "Unit of the output length |t|: tokens | chars. The paper does not say; "
                                        "NV-Reason-CXR counts tokens.", choices=LENGTH_UNITS)
    empty_jaccard: float = option(1.0, "J of two empty label sets: the paper does not say; NV-Reason-CXR uses 1.",
                                  min=0, max=1)


_REWARDS = "Rewards"


@dataclass
class NuancedRewardConfig:
    """Nuanced reward (docs/paper.md, Rewards): r_match + r_partial - r_FP - r_collapse - r_format."""

    exact_match: float = option(100.0, "Reward for an exact label-set match.", "stated", _REWARDS, min=0)
    recall_weight: float = option(30.0, "Partial credit per unit of recall.", "stated", _REWARDS, min=0)
    precision_weight: float = option(20.0, "Partial credit per unit of precision.", "stated", _REWARDS, min=0)
    fp_base: float = option(10.0, "Per false positive, fp_base x sqrt(label prevalence / mean prevalence): the "
                                  "paper says common labels such as No Finding and Support Devices cost more, "
                                  "without weights.", min=0)
    invalid_label: float = option(100.0, "Penalty per invalid label.", "stated", _REWARDS, min=0)
    duplicate_label: float = option(25.0, "Penalty per duplicate label.", "stated", _REWARDS, min=0)
    extra_text: float = option(10.0, "Penalty for text outside the `<think>` and `<solution>` blocks: the paper "
                                     "penalises it without an amount.", min=0)
    missing_tags: float = option(100.0, "Penalty when the output breaks the `<think>`/`<solution>` contract: the "
                                        "paper gives no amount; we charge as much as an invalid label.", min=0)
    window: int = option(100, "The collapse guard watches the last this many predictions.", "stated", _REWARDS, min=1)
    dominance: float = option(0.70, "Share of the window above which a label (or the predicted set) dominates.",
                              "stated", _REWARDS, above=0, max=1)
    excess_repetition: float = option(30.0, "Penalty per excess repetition (each predicted label above the "
                                            "dominance share).", "stated", _REWARDS, min=0)
    collapse: float = option(50.0, "Penalty for collapse (the predicted set itself above the dominance share).",
                             "stated", _REWARDS, min=0)
    min_window: int = option(20, "The guard is silent until this many predictions are seen: the paper does not "
                                 "say how a window shorter than 100 counts; a handful of early predictions "
                                 "should not read as collapse.", min=0)


_GRPO = "Hyperparameters: GRPO"


@dataclass
class GRPOConfig:
    """GRPO from the Free-Reasoning SFT checkpoint (docs/paper.md, Hyperparameters: GRPO)."""

    rewards: list = option(["hard", "nuanced"], "One GRPO run per reward (Table 4).", "stated", "Results",
                           choices=REWARDS)
    start_format: str = option("free_reasoning", "The SFT format whose checkpoint GRPO starts from.", "stated",
                               _GRPO, choices=SFT_FORMAT_NAMES)
    learning_rate: float = option(1e-6, "GRPO learning rate: the paper gives none (the tiny profiles, full "
                                        "fine-tuning small models, use larger rates).", min=0)
    max_steps: int = option(500, "GRPO optimiser steps: the paper gives no epochs or steps (500 x 2 prompts "
                                 "covers the 1,000 RL images once).", min=1)
    prompts_per_step: int = option(2, "Prompts per step (x num_generations completions): the paper gives no "
                                      "batch size; 2 x 4 = 8 completions per step, as many as SFT's effective "
                                      "batch.", min=1)
    num_generations: int = option(4, "Completions per prompt.", "stated", _GRPO, min=2)
    temperature: float = option(0.8, "Sampling temperature.", "stated", _GRPO, above=0)
    top_p: float = option(0.95, "Nucleus sampling top-p.", "stated", _GRPO, above=0, max=1)
    beta: float = option(0.15, "KL penalty β towards the reference policy (the SFT checkpoint).", "stated",
                         _GRPO, min=0)
    loss_type: str = option("dr_grpo", "Loss normalisation (trl loss_type): Dr. GRPO.", "stated",
                            _GRPO, choices=LOSS_TYPES)
    scale_rewards: str = option("none", "Advantage scaling (trl scale_rewards): none leaves each group's centred "
                                        "rewards unscaled, Dr. GRPO's other change besides the loss normalisation "
                                        "(docs/paper.md), every profile; group divides by the group's std (trl's "
                                        "default, which the embedded profiles ran with until issue 36).", "stated",
                                _GRPO, choices=SCALE_REWARDS)
    epsilon: float = option(0.15, "Lower clipping bound ε_low of the importance ratio.", "stated", _GRPO, min=0)
    epsilon_high: float = option(0.22, "Upper clipping bound ε_high (asymmetric clipping).", "stated", _GRPO, min=0)
    importance_sampling_level: str = option("token", "Importance ratios per token (trl: token | sequence).",
                                            "stated", _GRPO, choices=IMPORTANCE_SAMPLING_LEVELS)
    num_iterations: int = option(1, "Optimiser steps per generated batch (trl): the paper does not say. With 1 "
                                    "(and steps_per_generation 1) the importance ratio is exactly 1, so ε / ε_high "
                                    "never clip; whether the paper's clipping acted is open. The 06 ablation uses "
                                    "2 so that its ε acts.", min=1)
    steps_per_generation: int = option(1, "Optimiser steps that share one generation batch (trl): > 1 also makes "
                                          "the ratio differ from 1 (a larger generation batch, sliced across "
                                          "steps). The paper does not say; 1 as num_iterations.", min=1)
    max_completion_length: int = option(512, "Longest completion in tokens: the paper gives no maximum lengths "
                                             "(trl's default; Dr. GRPO divides the loss by it).", min=1)
    use_vllm: bool = option(False, "Rollouts by vLLM (trl use_vllm; vllm installed by you, GPU only): the same "
                                   "samples, faster. Colocate mode is refused for these VLMs on trl <= 1.16 (trl "
                                   "issues 6294 / 6401: image tokens expanded twice); see docs/paper_profile.md, vLLM rollouts.", "run")
    vllm_mode: str = option("server", "trl vllm_mode with use_vllm: server (a `vllm serve` process on other "
                                      "GPUs, docs/paper_profile.md) | colocate.", "run", choices=VLLM_MODES)
    vllm_server_base_url: str = option("http://localhost:8000", "Server mode: the vLLM server's URL.", "run",
                                       nonempty=True)
    save_steps: int = option(50, "A checkpoint every this many steps (the candidates for Table 4's best-F1 "
                                 "checkpoint): the paper does not say how often it checkpointed.", min=1)
    seed: int = option(21, "Recorded in run_info.json only: every GRPO run replaces it by its training seed "
                           "(training_runs.grpo.grpo_inputs), which seeds the data order and, with the step, the sampling.", "run",
                           min=0)
    lr_scheduler: str = option("linear", "Learning-rate schedule (trl lr_scheduler_type; no warmup): linear decay "
                                         "to 0 at max_steps (trl's default) | constant (E1's arm: more steps is "
                                         "more dose) | cosine. The paper does not say.", choices=LR_SCHEDULERS)
    frozen_control: bool = option(True, "Also score the frozen SFT policy on the very same batches (generation and "
                                        "reward, no update) into `<run>/control/`: the paper has no baseline for "
                                        "'reward rose'; this one gives the paired gain (easy first batches make any "
                                        "raw curve misleading).")
    hard: HardRewardConfig = section(HardRewardConfig)
    nuanced: NuancedRewardConfig = section(NuancedRewardConfig)


@dataclass
class EvaluationConfig:
    """Batched greedy evaluation and metrics."""

    batch_size: int = option(16, "Images per generation batch (greedy decoding: the same results at every batch "
                                 "size).", "run", min=1)
    max_new_tokens: int = option(512, "Longest generated answer in tokens: the paper gives no maximum lengths; "
                                      "512 as GRPO's completions.", min=1)
    prompt_variant: str = option("", "Evaluation prompt; empty: the prompt of the model's SFT format (the paper "
                                     "does not say which prompt its fine-tuned models were tested with).",
                                     choices=EVAL_PROMPTS)
    invalid_policy: str = option("empty", "An invalid output counts as an empty prediction and a failure (empty) "
                                          "| whatever valid labels it holds (salvage): the paper reports fail "
                                          "rates but not how failures enter F1.", choices=INVALID_POLICIES)
    nih_label_set: str = option("paper9", "Labels scored on NIH: paper9 (the paper's nine) | with_effusion "
                                          "(adds Pleural Effusion, which the paper leaves out without a reason).",
                                "stated", "Data", choices=tuple(NIH_LABEL_SETS))
    n_bootstrap: int = option(1000, "Bootstrap resamples for CIs and paired differences: the paper reports no "
                                    "CIs.", min=1)
    bootstrap_seed: int = option(2026, "Seed of the bootstrap: the paper gives none.", min=0)
    test_grpo_reward: str = option("hard", "Which GRPO run plays 'ChexReason' in Tables 5-6: the paper does not "
                                           "say which reward its final model used.", choices=REWARDS)
    test_grpo_checkpoint: str = option("final", "Which of its checkpoints: final | best_f1 (best validation "
                                                "macro-F1); the paper does not say.", choices=CHECKPOINT_CHOICES)
    sample_validity_n: int = option(64, "Sampled completions (T = 0.8, top-p 0.95) checked for a valid format "
                                        "after SFT: the paper has no such check; GRPO needs valid samples.", min=1)
    val_checkpoint_every: int = option(1, "Score every k-th GRPO checkpoint on validation (the final one always): "
                                          "the paper reports best-F1 checkpoints without saying how many it "
                                          "scored.", min=1)
    test_checkpoints: list = option(list(CHECKPOINT_CHOICES), "GRPO checkpoints also scored on the test sets: "
                                                          "Table 4 reports these two on validation; the paper "
                                                          "does not say which it tested.", choices=CHECKPOINT_CHOICES)
    test_checkpoint_every: int = option(1, "And every k-th checkpoint on the test sets (0: none), for the "
                                           "CheXpert-vs-NIH curve along GRPO, which the paper does not have.", min=0)
    relabel_csv: str = option("", "Optional: Google's 2019 NIH expert relabels (data/nih_relabels.py), for a "
                                  "second, cleaner truth.", "run")


@dataclass
class ReferenceConfig:
    """The supervised image-only reference (train/image_reference.py): what the pixels allow, beside the VLMs."""

    enabled: bool = option(True, "Fit a small CNN per training seed on the SFT images and on the training site's "
                                 "pool and score it on every evaluation set (Tables 5-6, the headline): the "
                                 "paper has no such reference; chest X-ray papers compare against CNNs.")
    epochs: int = option(30, "Passes over its training images (fixed; validation chooses thresholds only).", min=1)
    image_size: int = option(64, "Images resized to this many pixels square, grayscale.", min=8)
    pool_size: int = option(0, "Images of the training site's pool it is also trained on, drawn at random by "
                               "sampling.seed (0: the whole frontal pool; validation patients are always left "
                               "out).", min=0)


@dataclass
class CrossModelConfig:
    """Notebook 05: zero-shot prompt variants and SFT formats on the medical and general model."""

    prompt_variants: list = option(
        ["reasoning_narrative", "self_check", "hypothesis", "reasoning_a", "reasoning_b",
         "reasoning_c", "reasoning_d", "reasoning_e", "reasoning_f"],
        "The nine zero-shot prompts of Table 1 (their texts are ours, prompts.py).", "stated", "Prompts and outputs",
        choices=tuple(PROMPT_VARIANTS))
    general_zero_shot: bool = option(True, "Also run the zero-shot prompts on the general model: Table 1 has the "
                                           "medical model only; figure prompt_variants shows both.")


@dataclass
class DiagnosticsConfig:
    """Notebook 06: entropy / mode-collapse measures and the unstable-recipe ablation."""

    entropy_fraction: float = option(0.5, "Collapse rule: token entropy at or below this fraction of the run's "
                                          "own start (mean of its first `start_steps` steps).", above=0, below=1)
    set_margin: float = option(0.30, "Collapse rule: or one predicted label set's share of the window above its "
                                     "share among the RL prompts' truths by more than this.", above=0, below=1)
    zero_std_min: float = option(0.5, "Collapse rule, required: at least this fraction of the step's groups "
                                      "with zero reward spread (trl frac_reward_zero_std), i.e. answers that "
                                      "stopped differing.", above=0, max=1)
    start_steps: int = option(5, "Logged steps whose mean entropy is the run's start.", min=1)
    episode_min_steps: int = option(3, "Consecutive collapsed steps that make an episode (diagnostics.py): "
                                       "ours, so that one noisy step is not an episode.", min=1)
    run_ablation: bool = option(True, "Also train an unstable-recipe GRPO run: the paper says early runs "
                                      "collapsed without giving their recipe.")
    ablation_reward: str = option("hard", "Reward of the ablation run: the paper does not name the reward of "
                                                 "its collapsed early runs.", choices=REWARDS)
    ablation_beta: float = option(0.0, "Its KL penalty: none (trl's default) instead of 0.15.", min=0)
    ablation_epsilon: float = option(0.2, "Its ε: trl's default symmetric clipping.", min=0)
    ablation_epsilon_high: float = option(0.2, "Its ε_high: symmetric, as ε.", min=0)
    ablation_loss_type: str = option("grpo", "Its loss: per-sequence length normalisation switched back on.",
                                     choices=LOSS_TYPES)
    ablation_num_iterations: int = option(2, "Its optimiser steps per generated batch: > 1 so that the ablated ε "
                                             "can act (clip ratio > 0 logged); with 1 the ratio is 1 and the ε "
                                             "part of the ablation would change nothing.", min=1)


@dataclass
class ExperimentsConfig:
    """Stage 08 (run only with `--experiments`): the training grids of the pre-registered experiments (E1, E2, E3,
    E5, Q1)."""

    cells: str = option("all", "Which cells of each registered grid run: all, or one_point (the first cell that "
                               "trains, beside its reference; the smoke profile's test of the machinery).", "run",
                        choices=("all", "one_point"))
    max_seeds: int = option(0, "Training seeds per cell: the first this many of `seeds` (0: all of them).", "run",
                            min=0)
    steps_scale: float = option(1.0, "The registrations count GRPO steps in the tiny profile's steps (40 = its "
                                     "grpo.max_steps, one epoch of its RL set); each registered count is multiplied "
                                     "by this (rounded, at least 1), so another profile runs the same grid in its "
                                     "own epochs.", above=0)
    policy_images: int = option(100, "Test images per set the what-RL-does readouts read (steps/policy_readouts.py): "
                                     "the first this many of the NIH-like set for the drift, of each set for "
                                     "coverage (8 sampled answers each).", "run", min=1)


@dataclass
class ClaimsConfig:
    """The claims table: the smallest effect of interest (SESOI) of each claim, fixed before any run (docs/paper.md)."""

    sesoi_c1: float = option(0.032, "C1 SESOI, CheXpert macro-F1 (GRPO - SFT): half the paper's +0.064; a CI "
                                    "inside +-this is 'no effect of the paper's size'.", above=0)
    sesoi_c2: float = option(0.028, "C2 SESOI, NIH macro-F1 (GRPO - SFT): half the paper's -0.056; also C2 PadChest's "
                                    "and C6's (the same drop at the third site).", above=0)
    sesoi_c3: float = option(0.028, "C3 SESOI, NIH macro-F1 (SFT - base): half the paper's +0.056; also C3 "
                                    "PadChest's.", above=0)
    sesoi_c4: float = option(0.099, "C4 SESOI, scaffold gain(general) - gain(medical) in validation macro-F1: half "
                                    "the paper's +0.198.", above=0)
    sesoi_c4_general_gain: float = option(0.056, "C4 SESOI of its first part, the general model's scaffold gain "
                                                 "(Reasoning A - mean of the other formats): half the paper's +0.113.",
                                                 above=0)
    collapse_axis: str = option("generation", "C5 is a count of collapsed runs per arm (one-sided Boschloo exact "
                                              "tests, verdict_statistics.collapse_count_test) read on one step "
                                              "axis: generation (every run on the coarsest generation grid, the "
                                              "unstable recipe's every second step) | optimiser (each generation's "
                                              "flag held over the steps it trains). Fixed before the run (issue 37).",
                                choices=("generation", "optimiser"))


@dataclass
class Config:
    """A whole profile."""

    profile: str = option("paper", "Profile name (the YAML file's stem unless set).", "run", nonempty=True)
    seed: int = option(0, "Global seed: tiny model building, the SFT early-stopping split, every stage's RNGs. "
                          "The paper gives none.", min=0)
    seeds: list = option([0], "Training seeds, distinct integers, at least one: the chain that carries the "
                              "paper's claims (the tiny bases, SFT, GRPO, the 06 ablation, sampling checks, "
                              "evaluation) runs once per seed, so a replicate is a whole model; world and manifests "
                              "stay fixed, as do the paper's hub bases. The paper reports one run.", min=0)
    device: str = option("auto", "Where models run (auto: cuda when available).", "run", choices=DEVICES)
    arithmetic: str = option("native", "Float path of every process (arithmetic.py): native (each library picks code "
                                       "by this CPU: fastest, bytes differ between CPUs) | portable (ATen, MKL, oneDNN "
                                       "and NumPy capped to code every x86-64 CPU with AVX2 runs alike: the same bytes "
                                       "on Intel and AMD; training steps 2.5-3.9x and generation 1.7x slower on an "
                                       "AVX-512 Xeon). The committed figures are portable.", "run", choices=MODES)
    workers: int = option(0, "Processes for independent jobs (jobs.run_jobs); 0: one per CPU core.", "run", min=0)
    report_to: str = option("none", "Experiment tracker for trl's training logs (trl report_to), one tracker run per "
                                    "SFT, GRPO and control: none | tensorboard | trackio (local, no account) | wandb "
                                    "(offline unless WANDB_MODE says otherwise); logs go to <run>/tracking/. Needs "
                                    "the `tracking` extra (tensorboard) or the tracker's own package.", "run",
                            choices=TRACKERS)
    world: WorldConfig = section(WorldConfig)
    data: DataConfig = section(DataConfig)
    sampling: SamplingConfig = section(SamplingConfig)
    models: ModelsConfig = section(ModelsConfig)
    sft: SFTConfig = section(SFTConfig)
    grpo: GRPOConfig = section(GRPOConfig)
    evaluation: EvaluationConfig = section(EvaluationConfig)
    reference: ReferenceConfig = section(ReferenceConfig)
    cross_model: CrossModelConfig = section(CrossModelConfig)
    diagnostics: DiagnosticsConfig = section(DiagnosticsConfig)
    claims: ClaimsConfig = section(ClaimsConfig)
    experiments: ExperimentsConfig = section(ExperimentsConfig)

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
    check_values(cfg, where=f"{path}{' with overrides' if overrides else ''}")
    return cfg


def allowed(f: dataclasses.Field) -> str:
    """What an option allows, in words ('' when any value of its type will do)."""
    bounds = f.metadata.get("bounds", {})
    words = " and ".join(f"{op} {_show(bounds[k])}" for k, op in (("min", ">="), ("above", ">"), ("max", "<="),
                                                                   ("below", "<")) if k in bounds)
    choices = " | ".join(_show(c) for c in f.metadata.get("choices", ()))
    if f.metadata.get("nonempty"):
        return "a non-empty string"
    if choices and words:
        return f"{choices} or {words}"
    return ("one of " + choices) if choices else words


def _show(value: Any) -> str:
    return '""' if value == "" else str(value)


def _allows(f: dataclasses.Field, value: Any) -> bool:
    if f.metadata.get("nonempty"):
        return value != ""
    choices, bounds = f.metadata.get("choices", ()), f.metadata.get("bounds", {})
    if value in choices:
        return True
    if not bounds:
        return not choices
    return (bounds.get("min", value) <= value <= bounds.get("max", value)
            and value > bounds.get("above", value - 1) and value < bounds.get("below", value + 1))


def check_values(cfg: Any, where: str = "config", prefix: str = "") -> None:
    """Every option's value (each element of a list) against its ``choices`` / bounds: a ``ConfigError`` naming the
    key, the value and what is allowed."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_values(value, where, f"{prefix}{f.name}.")
            continue
        bad = [v for v in (value if isinstance(value, list) else [value]) if not _allows(f, v)]
        if bad:
            shown = f"{bad[0]!r} in {value!r}" if isinstance(value, list) else repr(value)
            raise ConfigError(f"{where}: {prefix}{f.name} = {shown} is not allowed: {allowed(f)}")


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


def get_value(cfg: Any, dotted: str, where: str = "key") -> Any:
    """The value of a dotted key (``sft.max_steps``; '' is the whole config): the one walk over dotted keys."""
    parts = [p for p in dotted.split(".") if p]
    target = cfg
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(target) or part not in {f.name for f in dataclasses.fields(target)}:
            raise ConfigError(f"{where}: unknown key {'.'.join(parts[:i + 1])!r}")
        target = getattr(target, part)
    return target


def set_value(cfg: Config, dotted: str, value: Any, where: str = "override") -> None:
    """Set one dotted key on a config, with the same type checks as the YAML loader."""
    parent, _, leaf = dotted.rpartition(".")
    target = get_value(cfg, parent, where)
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
