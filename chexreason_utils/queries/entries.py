"""What stage 04 scores (its entries: base models with each prompt variant, SFT formats of both models, GRPO
checkpoints and their best-F1 / final selections, on validation and every test set) and their predictions, which
04's tables, 05, 07 and 08 read."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import CHECKPOINT_CHOICES, Config, training_seeds
from ..evaluation import scores
from ..evaluation.metrics import test_datasets
from ..evaluation.scores import EntryKeys
from ..paths import RunPaths, checkpoint_name, model_tag
from ..train.model_registry import ROLES, base_model, built_bases
from .predictions import predict_many
from .stage_outputs import grpo_models, read_checkpoint_scores, sft_start

SETS = {"validation": "val", "CheXpert": "chexpert_test", "NIH": "nih_test", "PadChest": "padchest_test"}   # dataset -> manifest


def sets(cfg: Config) -> dict[str, str]:
    """The data sets the profile scores (validation and ``metrics.test_datasets``) -> their manifests."""
    return {d: SETS[d] for d in ("validation", *test_datasets(cfg))}


@dataclass
class Entry:
    """One model on one data set with one prompt: its frame keys and, per training seed (None: a fixed model),
    the (cache tag, model folder or id) to predict with."""
    keys: scores.EntryKeys
    models: dict = field(default_factory=dict)
    steps: dict = field(default_factory=dict)   # seed -> GRPO step, for the best-F1 / final selections


def zero_shot_prompt(cfg: Config) -> str:
    """The prompt the base models are tested with: the profile's variant, else GRPO's start format."""
    return cfg.evaluation.prompt_variant or cfg.grpo.start_format


def base_models(cfg: Config, paths: RunPaths, role: str) -> dict:
    """A role's base models as an entry holds them: each training seed's own (built bases), or one fixed model under
    the key None (the paper's hub models)."""
    if built_bases(cfg):
        return {s: (model_tag(f"base-{role}", s), base_model(cfg, paths, role, s)) for s in training_seeds(cfg)}
    return {None: (model_tag(f"base-{role}"), getattr(cfg.models, role))}


def _base(cfg, paths, dataset, role, prompt) -> Entry:
    return Entry(EntryKeys(dataset, role, stage="base", name=prompt, checkpoint="base", step=np.nan, prompt=prompt),
                 base_models(cfg, paths, role))


def _grpo_entries(cfg: Config, paths: RunPaths, dataset: str) -> list[Entry]:
    """Every GRPO checkpoint the scoring plan scores on ``dataset`` (one entry per step, the seeds that have it),
    and the best-F1 / final selections of every reward run (the chosen step may differ between seeds)."""
    fmt, by_step, picked = cfg.grpo.start_format, {}, {}
    for reward in cfg.grpo.rewards:
        for seed in training_seeds(cfg):
            for step, tag, model in grpo_models(cfg, paths, reward, seed, SETS[dataset])[1:]:
                by_step.setdefault((reward, step), {})[seed] = (tag, model)
            chosen = read_checkpoint_scores(paths, reward, seed).set_index("step")
            for which in CHECKPOINT_CHOICES:
                step = int(chosen.index[chosen[f"is_{which}"]][0])
                entry = picked.setdefault((reward, which), Entry(EntryKeys(dataset, "medical", stage="grpo", name=reward,
                                                                           checkpoint=which, step=np.nan, prompt=fmt)))
                entry.models[seed] = (model_tag(f"grpo-{reward}-{checkpoint_name(step)}", seed),
                                      paths.grpo_run(reward, seed) / checkpoint_name(step))
                entry.steps[seed] = step
    steps = [Entry(EntryKeys(dataset, "medical", stage="grpo", name=reward, checkpoint=checkpoint_name(step), step=step,
                             prompt=fmt), models)
             for (reward, step), models in sorted(by_step.items())]
    return steps + list(picked.values())


def entries(cfg: Config, paths: RunPaths) -> list[Entry]:
    """Everything the evaluation scores (see the module docstring), in table order."""
    seeds, fmt = training_seeds(cfg), cfg.grpo.start_format
    roles = [r for r in ROLES if r == "medical" or cfg.sft.general_model_too]
    zs_roles = [r for r in ROLES if r == "medical" or cfg.cross_model.general_zero_shot]
    out = [_base(cfg, paths, "validation", role, v) for role in zs_roles for v in cfg.cross_model.prompt_variants]
    if zero_shot_prompt(cfg) not in cfg.cross_model.prompt_variants:   # the test sets' prompt, for the competence gate
        out.append(_base(cfg, paths, "validation", "medical", zero_shot_prompt(cfg)))
    out += [Entry(EntryKeys("validation", role, stage="sft", name=f, checkpoint="sft", step=0, prompt=f),
                  {s: (model_tag(f"sft-{role}-{f}", s), paths.sft_model(role, f, s)) for s in seeds})
            for role in roles for f in cfg.sft.formats]
    out += _grpo_entries(cfg, paths, "validation")
    for dataset in test_datasets(cfg):
        out += [_base(cfg, paths, dataset, role, zero_shot_prompt(cfg)) for role in ROLES]
        out.append(Entry(EntryKeys(dataset, "medical", stage="sft", name=fmt, checkpoint="sft", step=0, prompt=fmt),
                         {s: sft_start(cfg, paths, s) for s in seeds}))
        out += _grpo_entries(cfg, paths, dataset)
    return out


def entry_predictions(cfg: Config, paths: RunPaths, todo: list[Entry]) -> list[dict]:
    """Per entry ``{seed: predictions merged with the truth}``; all missing prediction files are made in one
    batch of independent jobs."""
    requests = [(tag, model, SETS[e.keys.dataset], e.keys.prompt) for e in todo for tag, model in e.models.values()]
    frames = iter(predict_many(cfg, paths, requests))
    return [{seed: next(frames) for seed in e.models} for e in todo]


def test_entries(cfg: Config, paths: RunPaths, dataset: str) -> dict[str, Entry]:
    """The ``dataset`` entries of the medical SFT model and of ChexReason (the chosen GRPO checkpoint)."""
    chex = {"checkpoint": cfg.evaluation.test_grpo_checkpoint, "name": cfg.evaluation.test_grpo_reward}
    wanted = {"SFT": {"stage": "sft"}, "GRPO": {"stage": "grpo", **chex}}
    found = [e for e in entries(cfg, paths) if e.keys.dataset == dataset]
    return {label: next(e for e in found if all(getattr(e.keys, k) == v for k, v in keys.items())) for label, keys in wanted.items()}


def nih_entries(cfg: Config, paths: RunPaths) -> dict[str, Entry]:
    """The NIH entries of the medical SFT model and of ChexReason (the chosen GRPO checkpoint)."""
    return test_entries(cfg, paths, "NIH")
