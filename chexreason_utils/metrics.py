"""F1 family, fail rate and bootstrap confidence intervals (scikit-learn underneath).

Macro is the plain mean over labels, zeros included, as the paper computes it. Invalid outputs follow an
explicit policy: ``empty`` (default: an empty prediction, and a failure) or ``salvage`` (whatever valid
labels the parser found are kept; still a failure).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from .labels import names_to_vector

INVALID_POLICIES = ("empty", "salvage")


def prediction_matrix(predictions: pd.DataFrame, labels: Sequence[str], policy: str = "empty") -> np.ndarray:
    """Binary (n, len(labels)) matrix from prediction rows (columns ``labels``, ``valid``)."""
    if policy not in INVALID_POLICIES:
        raise ValueError(f"unknown invalid-output policy {policy!r}; choose {' or '.join(INVALID_POLICIES)}")
    rows = []
    for names, valid in zip(predictions["labels"], predictions["valid"]):
        names = names if isinstance(names, (list, tuple, np.ndarray)) else []
        rows.append(names_to_vector(names if (valid or policy == "salvage") else [], labels))
    return np.array(rows, dtype=np.int8).reshape(len(rows), len(labels))


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


def _macro_f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=float), where=denom > 0)
    return f1.mean(axis=-1)


def _resample_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Multinomial counts: row b says how often each image appears in resample b."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def _boot_macro(y_true: np.ndarray, y_pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    t, p = y_true.astype(float), y_pred.astype(float)
    return _macro_f1_from_counts(w @ (t * p), w @ ((1 - t) * p), w @ (t * (1 - p)))


def bootstrap_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_boot: int = 1000, seed: int = 0,
                       alpha: float = 0.05) -> tuple[float, float, float]:
    """Point macro-F1 and a percentile bootstrap CI (images resampled with replacement)."""
    w = _resample_weights(len(y_true), n_boot, np.random.default_rng(seed))
    boots = _boot_macro(y_true, y_pred, w)
    point = float(_boot_macro(y_true, y_pred, np.ones((1, len(y_true))))[0])
    return point, float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2))


def paired_bootstrap(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_boot: int = 1000,
                     seed: int = 0, alpha: float = 0.05) -> dict:
    """Macro-F1(b) - macro-F1(a) on the same resamples; CI and the share of resamples where b <= a."""
    w = _resample_weights(len(y_true), n_boot, np.random.default_rng(seed))
    diff = _boot_macro(y_true, pred_b, w) - _boot_macro(y_true, pred_a, w)
    ones = np.ones((1, len(y_true)))
    point = float(_boot_macro(y_true, pred_b, ones)[0] - _boot_macro(y_true, pred_a, ones)[0])
    return {"diff": point, "lo": float(np.quantile(diff, alpha / 2)), "hi": float(np.quantile(diff, 1 - alpha / 2)),
            "p_not_better": float(np.mean(diff <= 0))}


def gap_change(cx: tuple[np.ndarray, np.ndarray, np.ndarray], nih: tuple[np.ndarray, np.ndarray, np.ndarray],
               n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Change of the CheXpert->NIH macro-F1 gap from model a to b: (CX_b - NIH_b) - (CX_a - NIH_a).

    Each tuple is (y_true, pred_a, pred_b); resampling is paired within a dataset, independent across them.
    """
    rng = np.random.default_rng(seed)
    w_cx, w_nih = _resample_weights(len(cx[0]), n_boot, rng), _resample_weights(len(nih[0]), n_boot, rng)
    d_cx = _boot_macro(cx[0], cx[2], w_cx) - _boot_macro(cx[0], cx[1], w_cx)
    d_nih = _boot_macro(nih[0], nih[2], w_nih) - _boot_macro(nih[0], nih[1], w_nih)
    change = d_cx - d_nih
    one_cx, one_nih = np.ones((1, len(cx[0]))), np.ones((1, len(nih[0])))
    point = float((_boot_macro(cx[0], cx[2], one_cx) - _boot_macro(cx[0], cx[1], one_cx)
                   - _boot_macro(nih[0], nih[2], one_nih) + _boot_macro(nih[0], nih[1], one_nih))[0])
    return {"diff": point, "lo": float(np.quantile(change, alpha / 2)), "hi": float(np.quantile(change, 1 - alpha / 2))}
