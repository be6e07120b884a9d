"""Stage 04 (evaluation), and 05's tables: the validation tables of prompt variants and SFT formats, the test
models and their predictions on CheXpert and NIH, label matrices, the per-checkpoint test curve and the paired
SFT -> GRPO differences."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from ..config import Config, training_seeds
from ..labels import CHEXPERT_LABELS
from ..metrics import eval_labels, matrices, scores, valid_mask
from ..model_registry import base_model
from ..paths import RunPaths, model_tag
from .grpo import grpo_checkpoint, grpo_models
from .predictions import predict_many
from .sft import sft_start

TEST_SETS = (("CheXpert", "chexpert_test"), ("NIH", "nih_test"))   # dataset name -> manifest
FIXED_MODELS = ("MedGemma base", "Qwen2.5-VL")   # test-table columns that do not depend on the training seed


def zero_shot_prompt(cfg: Config) -> str:
    """The prompt the base models are tested with: the profile's variant, else GRPO's start format."""
    return cfg.evaluation.prompt_variant or cfg.grpo.start_format


def test_models(cfg: Config, paths: RunPaths, seed: int) -> dict[str, tuple[str, Path | str, str]]:
    """The paper's test-table columns we can reproduce -> (cache tag, model, prompt), for one training seed
    (the base models are fixed: the same entry for every seed)."""
    fmt, zs = cfg.grpo.start_format, zero_shot_prompt(cfg)
    E = cfg.evaluation
    ckpt = grpo_checkpoint(paths, E.test_grpo_reward, E.test_grpo_checkpoint, seed)
    return {"MedGemma base": (model_tag("base-medical"), base_model(cfg, paths, "medical"), zs),
            "Qwen2.5-VL": (model_tag("base-general"), base_model(cfg, paths, "general"), zs),
            "MedGemma SFT": (*sft_start(cfg, paths, seed), fmt),
            "ChexReason": (model_tag(f"grpo-{E.test_grpo_reward}-{ckpt.name}", seed), ckpt, fmt)}


def test_predictions(cfg: Config, paths: RunPaths) -> dict[str, dict[str, dict[int, pd.DataFrame]]]:
    """``{dataset: {column: {seed: predictions}}}`` on both test sets (a base model's frame is the same for
    every seed)."""
    keys = [(ds, man, col, s, *spec) for ds, man in TEST_SETS for s in training_seeds(cfg)
            for col, spec in test_models(cfg, paths, s).items()]
    frames = predict_many(cfg, paths, [(tag, model, man, prompt) for _, man, _, _, tag, model, prompt in keys])
    out: dict = {}
    for (ds, _, col, s, *_), frame in zip(keys, frames):
        out.setdefault(ds, {}).setdefault(col, {})[s] = frame
    return out


def test_matrices(cfg: Config, preds: dict) -> dict[str, dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]]:
    """(y_true, y_pred) per dataset, column and seed, on each dataset's evaluation labels."""
    return {ds: {col: {s: matrices(f, cfg, eval_labels(cfg, ds)) for s, f in by_seed.items()}
                 for col, by_seed in by_col.items()} for ds, by_col in preds.items()}


def checkpoint_test_curve(cfg: Config, paths: RunPaths) -> pd.DataFrame:
    """CheXpert and NIH macro-F1 of the SFT start and the GRPO checkpoints the scoring plan scores on each test set,
    for every reward run and seed."""
    fmt = cfg.grpo.start_format
    keys = [(reward, s, step, tag, model, ds, man) for reward in cfg.grpo.rewards for s in training_seeds(cfg)
            for ds, man in TEST_SETS for step, tag, model in grpo_models(cfg, paths, reward, s, man)]
    frames = predict_many(cfg, paths, [(tag, model, man, fmt) for *_, tag, model, _, man in keys])
    return pd.DataFrame([{"reward": reward, "seed": s, "step": step, "dataset": ds,
                          **scores(frame, cfg, eval_labels(cfg, ds))}
                         for (reward, s, step, _, _, ds, _), frame in zip(keys, frames)])


def validation_models(cfg: Config, paths: RunPaths, role: str, names: list[str], kind: str) -> list[tuple]:
    """(name, seed, tag, model, prompt) of a model per prompt variant (kind='zero_shot': the fixed base model,
    seed None) or per SFT format and training seed (kind='sft')."""
    if kind == "zero_shot":
        return [(n, None, model_tag(f"base-{role}"), base_model(cfg, paths, role), n) for n in names]
    return [(n, s, model_tag(f"sft-{role}-{n}", s), paths.sft_model(role, n, s), n)
            for n in names for s in training_seeds(cfg)]


def validation_matrices(cfg: Config, paths: RunPaths, role: str, names: list[str], kind: str) -> dict:
    """``{name: {seed: (y_true, y_pred, valid)}}`` on the validation set (see ``validation_models``)."""
    specs = validation_models(cfg, paths, role, names, kind)
    frames = predict_many(cfg, paths, [(tag, model, "val", prompt) for _, _, tag, model, prompt in specs])
    out: dict = {}
    for (name, seed, *_), frame in zip(specs, frames):
        out.setdefault(name, {})[seed] = (*matrices(frame, cfg, CHEXPERT_LABELS), valid_mask(frame))
    return out


def validation_table(cfg: Config, paths: RunPaths, role: str, names: list[str], kind: str) -> pd.DataFrame:
    """Validation scores of a model per prompt variant (kind='zero_shot') or per SFT format and seed
    (kind='sft'), one row per name and seed (seed empty for the fixed base model)."""
    rows = []
    for name, by_seed in validation_matrices(cfg, paths, role, names, kind).items():
        for seed, (y_true, y_pred, valid) in by_seed.items():
            rows.append({"model": role, "variant" if kind == "zero_shot" else "format": name, "seed": seed,
                         **metrics.summary(y_true, y_pred, CHEXPERT_LABELS, valid)})
    return pd.DataFrame(rows)


def format_f1(cfg: Config, paths: RunPaths, roles: list[str]) -> pd.DataFrame:
    """Validation macro-F1 per model, SFT format and seed, and per model and format its mean over seeds
    (``seed`` = "mean") with a two-level (seeds, then images) bootstrap 95% CI."""
    E, rows = cfg.evaluation, []
    for role in roles:
        for fmt, by_seed in validation_matrices(cfg, paths, role, cfg.sft.formats, "sft").items():
            y_true = next(iter(by_seed.values()))[0]
            ci = metrics.bootstrap_macro_f1(y_true, [p for _, p, _ in by_seed.values()], E.n_bootstrap,
                                            E.bootstrap_seed)
            rows.append({"model": role, "format": fmt, "seed": "mean", "macro_f1": ci["effect"], "lo": ci["lo"],
                         "hi": ci["hi"]})
            rows += [{"model": role, "format": fmt, "seed": s, "macro_f1": v}
                     for s, v in zip(by_seed, ci["per_seed"])]
    return pd.DataFrame(rows)


def test_pairs(cfg: Config, test_mats: dict) -> dict[str, tuple[np.ndarray, dict[str, list[np.ndarray]]]]:
    """Per test set: (y_true, {"base": [matrix], "sft": [one per seed], "grpo": [one per seed]}) of the medical
    model, seeds in profile order (the inputs of the paired comparisons and of claims C1-C3)."""
    seeds = training_seeds(cfg)
    cols = {"base": "MedGemma base", "sft": "MedGemma SFT", "grpo": "ChexReason"}
    out = {}
    for ds, by_col in test_mats.items():
        y_true = by_col[cols["sft"]][seeds[0]][0]
        out[ds] = (y_true, {k: [by_col[c][s][1] for s in (seeds[:1] if k == "base" else seeds)]
                            for k, c in cols.items()})
    return out


def paired_differences(cfg: Config, test_mats: dict) -> pd.DataFrame:
    """SFT -> GRPO macro-F1 on each test set and the change of the CheXpert - NIH gap: mean over training seeds,
    paired per seed and image, two-level bootstrap 95% CI (seeds, then images)."""
    E, pairs = cfg.evaluation, test_pairs(cfg, test_mats)
    triple = {ds: (y, p["sft"], p["grpo"]) for ds, (y, p) in pairs.items()}
    rows = [{"comparison": f"SFT -> GRPO on {ds}", **metrics.paired_bootstrap(*triple[ds], E.n_bootstrap, E.bootstrap_seed)}
            for ds in ("CheXpert", "NIH")]
    rows.append({"comparison": "change of the CheXpert - NIH gap, SFT -> GRPO",
                 **metrics.gap_change(triple["CheXpert"], triple["NIH"], E.n_bootstrap, E.bootstrap_seed)})
    table = pd.DataFrame(rows)
    table["per_seed"] = [", ".join(f"{v:+.3f}" for v in r) for r in table["per_seed"]]
    return table
