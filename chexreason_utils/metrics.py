"""F1 family, fail rate and bootstrap confidence intervals (scikit-learn underneath).

Macro is the plain mean over labels, zeros included, as the paper computes it. Invalid outputs follow an
explicit policy: ``empty`` (default: an empty prediction, and a failure) or ``salvage`` (whatever valid
labels the parser found are kept; still a failure).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from .config import Config
from .labels import CHEXPERT_LABELS, NIH_LABEL_SETS, names_to_vector

INVALID_POLICIES = ("empty", "salvage")


def eval_labels(cfg: Config, dataset: str) -> tuple[str, ...]:
    """The labels a test set is scored on: CheXpert's 14, or the profile's NIH label set."""
    return CHEXPERT_LABELS if dataset == "CheXpert" else NIH_LABEL_SETS[cfg.evaluation.nih_label_set]


def label_matrix(frame: pd.DataFrame, labels: Sequence[str] = CHEXPERT_LABELS) -> np.ndarray:
    """Binary (n, len(labels)) truth matrix from a frame's ``truth`` column (lists of names)."""
    return np.array([names_to_vector(t, labels) for t in frame["truth"]], dtype=np.int8).reshape(len(frame), len(labels))


def prediction_matrix(predictions: pd.DataFrame, labels: Sequence[str], policy: str = "empty") -> np.ndarray:
    """Binary (n, len(labels)) matrix from prediction rows (columns ``labels``, ``valid``)."""
    if policy not in INVALID_POLICIES:
        raise ValueError(f"unknown invalid-output policy {policy!r}; choose {' or '.join(INVALID_POLICIES)}")
    rows = []
    for names, valid in zip(predictions["labels"], predictions["valid"]):
        names = names if isinstance(names, (list, tuple, np.ndarray)) else []
        rows.append(names_to_vector(names if (valid or policy == "salvage") else [], labels))
    return np.array(rows, dtype=np.int8).reshape(len(rows), len(labels))


def valid_mask(frame: pd.DataFrame) -> pd.Series:
    """Which predictions satisfied the output contract (a missing prediction counts as invalid)."""
    return frame["valid"].fillna(False).astype(bool)


def matrices(frame: pd.DataFrame, cfg: Config, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) of a predictions frame with ``truth``, invalid outputs by the profile's policy."""
    return label_matrix(frame, labels), prediction_matrix(frame, labels, cfg.evaluation.invalid_policy)


def per_label(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0,
                                                 labels=list(range(len(labels))))
    return pd.DataFrame({"label": list(labels), "precision": p, "recall": r, "f1": f, "support": s})


def summary(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], valid: Sequence[bool]) -> dict:
    """Micro and macro precision / recall / F1 and fail rate (the paper's table columns)."""
    table = per_label(y_true, y_pred, labels)
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    return {"micro_p": mp, "micro_r": mr, "micro_f1": mf, "macro_p": table["precision"].mean(),
            "macro_r": table["recall"].mean(), "macro_f1": table["f1"].mean(),
            "fail_rate": 1.0 - float(np.mean(np.asarray(valid, dtype=bool))) if len(valid) else 0.0,
            "n": int(len(y_true))}


def scores(frame: pd.DataFrame, cfg: Config, labels: Sequence[str] = CHEXPERT_LABELS) -> dict:
    """Micro / macro P, R, F1 and fail rate of a predictions frame (with ``truth``)."""
    return summary(*matrices(frame, cfg, labels), labels, valid_mask(frame))


def _macro_f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=float), where=denom > 0)
    return f1.mean(axis=-1)


def _resample_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Multinomial counts: row b says how often each image appears in resample b."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def weighted_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Macro-F1 for each row of image weights ``w`` (rows, n): a row of ones is the plain macro-F1."""
    t, p = y_true.astype(float), y_pred.astype(float)
    return _macro_f1_from_counts(w @ (t * p), w @ ((1 - t) * p), w @ (t * (1 - p)))


def _per_seed(preds) -> list[np.ndarray]:
    """One (n, labels) prediction matrix per training seed; a single matrix is one seed."""
    return [preds] if isinstance(preds, np.ndarray) and preds.ndim == 2 else list(preds)


def two_level_bootstrap(effect: Callable[[int, list[np.ndarray]], np.ndarray | float], n_seeds: int,
                        sizes: Sequence[int], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Percentile CI of a mean-over-seeds effect by a two-level bootstrap: seeds, then images.

    Each replicate resamples the training seeds with replacement (level 1) and the images of every data set
    with replacement (level 2, one multinomial weight row per data set, shared by all seeds because every seed
    is scored on the same images); its value is the mean over the drawn seeds of ``effect(s, weights)``.
    ``effect(s, weights)`` gets one (rows, n_d) weight matrix per data set of ``sizes`` and returns one value per
    row (a scalar when the effect does not depend on images; ``sizes=()``). With one seed this is the ordinary
    image bootstrap; with no image level it is a bootstrap over seeds. The CI thus carries training-seed
    variance, which an image-only bootstrap leaves out.
    """
    if n_seeds < 1:
        raise ValueError("two_level_bootstrap needs at least one seed")
    rng = np.random.default_rng(seed)
    weights = [_resample_weights(n, n_boot, rng) for n in sizes]
    picks = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    boots_by_seed = np.stack([np.broadcast_to(np.asarray(effect(s, weights), float), (n_boot,))
                              for s in range(n_seeds)])
    boots = boots_by_seed[picks, np.arange(n_boot)[:, None]].mean(axis=1)
    ones = [np.ones((1, n)) for n in sizes]
    values = [float(np.ravel(effect(s, ones))[0]) for s in range(n_seeds)]
    return {"effect": float(np.mean(values)), "lo": float(np.quantile(boots, alpha / 2)),
            "hi": float(np.quantile(boots, 1 - alpha / 2)), "per_seed": values, "n_seeds": n_seeds,
            "p_not_positive": float(np.mean(boots <= 0))}


def bootstrap_macro_f1(y_true: np.ndarray, preds, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Macro-F1 (mean over seeds) with a two-level (seeds, then images) bootstrap CI; ``preds`` is one
    prediction matrix per seed (or a single matrix: one seed, the plain image bootstrap)."""
    preds = _per_seed(preds)
    return two_level_bootstrap(lambda s, w: weighted_macro_f1(y_true, preds[s], w[0]), len(preds), [len(y_true)],
                               n_boot, seed, alpha)


def _paired(y_true: np.ndarray, preds_a: list, preds_b: list):
    """Seed s's macro-F1(b) - macro-F1(a) on the same image weights; a one-entry side is a fixed model."""
    n = max(len(preds_a), len(preds_b))
    for side in (preds_a, preds_b):
        if len(side) not in (1, n):
            raise ValueError(f"paired models need the same seeds (or one fixed model), got {len(preds_a)} vs {len(preds_b)}")
    pick = lambda side, s: side[s if len(side) > 1 else 0]  # noqa: E731
    return n, lambda s, w: weighted_macro_f1(y_true, pick(preds_b, s), w) - weighted_macro_f1(y_true, pick(preds_a, s), w)


def paired_bootstrap(y_true: np.ndarray, preds_a, preds_b, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Macro-F1(b) - macro-F1(a), mean over seeds, paired on seeds and images, two-level bootstrap CI (seeds,
    then images); ``p_not_positive`` is the share of replicates where b <= a."""
    n, diff = _paired(y_true, _per_seed(preds_a), _per_seed(preds_b))
    return two_level_bootstrap(lambda s, w: diff(s, w[0]), n, [len(y_true)], n_boot, seed, alpha)


def gap_change(cx: tuple, nih: tuple, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Change of the CheXpert->NIH macro-F1 gap from model a to b: (CX_b - NIH_b) - (CX_a - NIH_a), mean over
    seeds, two-level bootstrap (seeds, then images; images resampled independently per data set).

    Each tuple is (y_true, preds_a, preds_b) with one prediction matrix per seed (or a single matrix).
    """
    n, d_cx = _paired(cx[0], _per_seed(cx[1]), _per_seed(cx[2]))
    _, d_nih = _paired(nih[0], _per_seed(nih[1]), _per_seed(nih[2]))
    return two_level_bootstrap(lambda s, w: d_cx(s, w[0]) - d_nih(s, w[1]), n, [len(cx[0]), len(nih[0])],
                               n_boot, seed, alpha)
