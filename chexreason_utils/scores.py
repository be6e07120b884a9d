"""The one scores frame of the evaluation, and the contrasts measured on the same predictions.

Scores: one tidy row per entry (dataset, model, stage, name, checkpoint, prompt) × seed × label, where an entry
is one model scored on one data set with one prompt. ``seed`` is a training seed ("0", "1", …) or "mean" (the
mean over seeds; the only row of a fixed model, one that no seed trains). ``label`` is a label name, "micro" or
"macro". Columns: precision, recall, f1 and support (label rows), fail_rate (micro and macro rows), n_images,
and on the "mean" macro row the 95% CI of macro-F1 (``lo``, ``hi``) from the two-level bootstrap of
``metrics.bootstrap_macro_f1`` (training seeds, then images).

Contrasts: one row per paired comparison (the SFT -> GRPO differences, the gap change, the claims): effect as
the mean over seeds, each seed's value, and the two-level bootstrap CI.

``reporting`` builds every table and the headline from these two frames alone.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from . import metrics

KEYS = ["dataset", "model", "stage", "name", "checkpoint", "step", "prompt"]
COLUMNS = [*KEYS, "seed", "label", "precision", "recall", "f1", "support", "fail_rate", "n_images", "lo", "hi"]
SUMMARY_COLUMNS = ["micro_p", "micro_r", "micro_f1", "macro_p", "macro_r", "macro_f1", "fail_rate"]
MEAN = "mean"


def _seed_rows(y_true: np.ndarray, y_pred: np.ndarray, valid: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    table = metrics.per_label(y_true, y_pred, labels)
    s = metrics.summary(y_true, y_pred, labels, valid)
    summary = pd.DataFrame([{"label": "micro", "precision": s["micro_p"], "recall": s["micro_r"], "f1": s["micro_f1"]},
                            {"label": "macro", "precision": s["macro_p"], "recall": s["macro_r"], "f1": s["macro_f1"]}])
    out = pd.concat([table, summary.assign(fail_rate=s["fail_rate"])], ignore_index=True)
    return out.assign(n_images=len(y_true))


def entry_scores(entry: dict, y_true: np.ndarray, preds: dict, valid: dict, labels: Sequence[str], n_boot: int,
                 boot_seed: int) -> pd.DataFrame:
    """Score rows of one entry: per seed (when ``preds`` has seeds; key None = a fixed model) and the mean over
    seeds, whose macro row carries the two-level bootstrap CI. ``entry`` holds the ``KEYS`` values."""
    missing = [k for k in KEYS if k not in entry]
    if missing:
        raise KeyError(f"entry_scores: entry {entry} lacks {missing}")
    per_seed = {s: _seed_rows(y_true, p, np.asarray(valid[s], bool), labels) for s, p in preds.items()}
    mean = pd.concat(per_seed.values()).groupby("label", sort=False).mean(numeric_only=True).reset_index()
    ci = metrics.bootstrap_macro_f1(y_true, list(preds.values()), n_boot, boot_seed)
    mean.loc[mean["label"] == "macro", ["lo", "hi"]] = ci["lo"], ci["hi"]
    parts = [] if None in preds else [t.assign(seed=str(s)) for s, t in per_seed.items()]
    frame = pd.concat([*parts, mean.assign(seed=MEAN)], ignore_index=True).assign(**entry)
    return frame.reindex(columns=COLUMNS)


def select(frame: pd.DataFrame, **keys) -> pd.DataFrame:
    """Rows whose columns equal ``keys`` (a list value: any of them); an empty selection is an error naming it."""
    mask = pd.Series(True, index=frame.index)
    for key, value in keys.items():
        mask &= frame[key].isin(value) if isinstance(value, (list, tuple)) else frame[key] == value
    if not mask.any():
        raise LookupError(f"the scores frame has no rows with {keys}")
    return frame.loc[mask]


def summaries(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per entry and seed with the paper's summary columns (micro/macro P, R, F1, fail rate) and the
    macro-F1 CI; every (entry, seed) block of ``entry_scores`` has one micro and one macro row."""
    micro = frame.loc[frame["label"] == "micro"].reset_index(drop=True)
    macro = frame.loc[frame["label"] == "macro"].reset_index(drop=True)
    ids = [*KEYS, "seed"]
    if len(micro) != len(macro) or not micro[ids].fillna("").astype(str).equals(macro[ids].fillna("").astype(str)):
        raise ValueError("scores frame: every (entry, seed) needs one micro and one macro row, in the same order")
    out = micro[ids].copy()
    for avg, part in (("micro", micro), ("macro", macro)):
        for short, metric in (("p", "precision"), ("r", "recall"), ("f1", "f1")):
            out[f"{avg}_{short}"] = part[metric]
    out["fail_rate"], out["lo"], out["hi"], out["n_images"] = macro["fail_rate"], macro["lo"], macro["hi"], macro["n_images"]
    return out


def contrast_row(what: dict, result: dict) -> dict:
    """A contrast row from a ``metrics.two_level_bootstrap`` result (``what`` names it)."""
    return {**what, "effect": result["effect"], "lo": result["lo"], "hi": result["hi"],
            "per_seed": ", ".join(f"{v:+.3f}" for v in result["per_seed"]), "seeds": result["n_seeds"],
            "p_not_positive": result["p_not_positive"]}
