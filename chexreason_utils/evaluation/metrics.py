"""F1 family, fail rate, and confidence intervals over training seeds and images.

Macro is the plain mean over labels, zeros included, as the paper computes it. Invalid outputs follow an
explicit policy: ``empty`` (default: an empty prediction, and a failure) or ``salvage`` (whatever valid
labels the parser found are kept; still a failure).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..config import INVALID_POLICIES, Config
from ..labels import CHEXPERT_LABELS, NIH_LABEL_SETS, PADCHEST_EVAL_LABELS, label_matrix, names_to_vector
from .verdict_statistics import bounded_mean_interval

CI_METHOD = ("t-interval over training seeds (between-seed variance / n, df n - 1) plus the image noise the seeds "
             "share (image bootstrap), Satterthwaite df; one seed: the image bootstrap alone")


TEST_DATASETS = ("CheXpert", "NIH", "PadChest")   # every test set, in table order


def test_datasets(cfg: Config) -> tuple[str, ...]:
    """The test sets a profile scores: CheXpert and NIH, and PadChest where ``data.padchest_root`` is set."""
    return TEST_DATASETS if cfg.data.padchest_root else TEST_DATASETS[:2]


def eval_labels(cfg: Config, dataset: str) -> tuple[str, ...]:
    """The labels a test set is scored on: CheXpert's 14, the profile's NIH label set, or PadChest's registered
    set (``labels.PADCHEST_EVAL_LABELS``)."""
    if dataset == "PadChest":
        return PADCHEST_EVAL_LABELS
    return CHEXPERT_LABELS if dataset == "CheXpert" else NIH_LABEL_SETS[cfg.evaluation.nih_label_set]


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


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b > 0)


def per_label(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per label (0 where undefined). ``y_pred`` may hold probabilities: the
    scores are then those of the expected confusion counts."""
    t, p = np.asarray(y_true, float).reshape(-1, len(labels)), np.asarray(y_pred, float).reshape(-1, len(labels))
    tp, fp, fn = (t * p).sum(0), ((1 - t) * p).sum(0), (t * (1 - p)).sum(0)
    return pd.DataFrame({"label": list(labels), "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
                         "f1": _ratio(2 * tp, 2 * tp + fp + fn), "support": t.sum(0).astype(int)})


def summary(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], valid: Sequence[bool]) -> dict:
    """Micro and macro precision / recall / F1 and fail rate (the paper's table columns)."""
    table = per_label(y_true, y_pred, labels)
    t, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    tp, fp, fn = (t * p).sum(), ((1 - t) * p).sum(), (t * (1 - p)).sum()
    mp, mr, mf = (float(_ratio(np.array(a), np.array(b))) for a, b in ((tp, tp + fp), (tp, tp + fn),
                                                                       (2 * tp, 2 * tp + fp + fn)))
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


def seed_image_interval(values, boots, alpha: float = 0.05) -> dict:
    """t-interval of a mean-over-seeds effect carrying training-seed and image-sampling variance.

    ``values`` (..., n_seeds): each seed's effect on the test images; ``boots`` (..., n_seeds, n_boot): each
    seed's effect on image resamples shared by all seeds (every seed is scored on the same images). Variance of
    the mean = var_between_seeds / n (df n - 1) + the image noise the seeds share (the mean bootstrap covariance
    between two different seeds, floored at 0), with Satterthwaite's df. Seed-specific image noise is inside the
    between-seed variance, so it is not counted twice. With one seed there is no seed level: the interval is the
    image bootstrap's normal one (``seed_level`` False). Leading axes are independent experiments.
    """
    values, boots = np.asarray(values, float), np.asarray(boots, float)
    n = values.shape[-1]
    if n < 1:
        raise ValueError("seed_image_interval needs at least one seed")
    mean = values.mean(axis=-1)
    if n == 1:
        var_seeds = np.zeros_like(mean)
        var_images = boots[..., 0, :].var(axis=-1, ddof=1) if boots.shape[-1] > 1 else np.zeros_like(mean)
        df = np.full_like(mean, np.inf)
    else:
        var_seeds = values.var(axis=-1, ddof=1) / n
        if boots.shape[-1] > 1:
            of_mean = boots.mean(axis=-2).var(axis=-1, ddof=1)
            own = boots.var(axis=-1, ddof=1).sum(axis=-1)
            var_images = np.maximum((n * n * of_mean - own) / (n * (n - 1)), 0.0)
        else:
            var_images = np.zeros_like(mean)
        total = var_seeds + var_images
        with np.errstate(divide="ignore", invalid="ignore"):
            df = np.where(var_seeds > 0, (n - 1) * (total / np.where(var_seeds > 0, var_seeds, 1)) ** 2, np.inf)
    se = np.sqrt(var_seeds + var_images)
    half = stats.t.ppf(1 - alpha / 2, df) * se
    return {"effect": mean, "lo": mean - half, "hi": mean + half, "se": se, "df": df, "var_seeds": var_seeds,
            "var_images": var_images, "seed_level": n > 1}


def seeds_for_half_width(var_seeds: float, n_seeds: int, var_images: float, target: float,
                         alpha: float = 0.05, most: int = 1000) -> int | None:
    """Fewest training seeds whose ``seed_image_interval`` half-width is below ``target`` at the measured
    variances (``var_seeds`` is var_between / n_seeds; the shared image noise does not shrink with seeds); None
    when even ``most`` seeds do not suffice (the images are the limit)."""
    between = var_seeds * n_seeds
    for m in range(2, most + 1):
        a = between / m
        total = a + var_images
        df = (m - 1) * (total / a) ** 2 if a > 0 else np.inf
        if stats.t.ppf(1 - alpha / 2, df) * np.sqrt(total) < target:
            return m
    return None


def seed_image_ci(effect: Callable[[int, list[np.ndarray]], np.ndarray | float], n_seeds: int,
                  sizes: Sequence[int], n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """A mean-over-seeds effect and its ``seed_image_interval`` (t over seeds + shared image bootstrap).

    ``effect(s, weights)`` gets one (rows, n_d) weight matrix per data set of ``sizes`` (multinomial image
    resamples, the same rows for every seed) and returns one value per row (a scalar when the effect does not
    depend on images; ``sizes=()``). The result has the effect, each seed's value, the CI, its variance parts
    and df, and ``n_seeds``.
    """
    if n_seeds < 1:
        raise ValueError("seed_image_ci needs at least one seed")
    rng = np.random.default_rng(seed)
    weights = [_resample_weights(n, n_boot, rng) for n in sizes]
    rows = n_boot if sizes else 1
    boots = np.stack([np.broadcast_to(np.asarray(effect(s, weights), float), (rows,)) for s in range(n_seeds)])
    ones = [np.ones((1, n)) for n in sizes]
    values = [float(np.ravel(effect(s, ones))[0]) for s in range(n_seeds)]
    ci = seed_image_interval(values, boots, alpha)
    return {**{k: float(v) if k != "seed_level" else v for k, v in ci.items()}, "per_seed": values,
            "n_seeds": n_seeds}


def pooled_mean_ci(per_seed: list[list[np.ndarray]], n_boot: int = 1000, seed: int = 0,
                   bounds: tuple[float, float] | None = None) -> dict:
    """The mean of per-image values over the images of every data set pooled, mean over seeds, with its
    ``seed_image_ci``: ``per_seed[s][d]`` is seed s's per-image values on data set d (images resampled within each
    set, the same resamples for every seed). ``bounds``: the quantity's range (a share: (0, 1); a difference of
    shares: (-1, 1)), the interval then built inside it (``verdict_statistics.bounded_mean_interval`` with the
    seed x image SE and df; ``t_lo`` / ``t_hi`` the plain t-interval)."""
    sizes = [len(d) for d in per_seed[0]]
    if any([len(d) for d in values] != sizes for values in per_seed):
        raise ValueError(f"pooled_mean_ci: every seed needs the same data sets and images, got sizes "
                         f"{[[len(d) for d in values] for values in per_seed]}")

    def share(s: int, weights: list[np.ndarray]) -> np.ndarray:
        return sum(w @ d for w, d in zip(weights, per_seed[s])) / sum(w.sum(axis=1) for w in weights)

    out = seed_image_ci(share, len(per_seed), sizes, n_boot, seed)
    if bounds is None:
        return out
    bounded = bounded_mean_interval(out["per_seed"], *bounds, se=out["se"], df=out["df"])
    return {**out, "t_lo": out["lo"], "t_hi": out["hi"], "lo": bounded["lo"], "hi": bounded["hi"],
            "at_bound": bounded["at_bound"]}


def prob_improvement(a: Sequence[float], b: Sequence[float]) -> float:
    """Share of (seed of a, seed of b) pairs in which b beats a, ties counting half (rliable's probability of
    improvement, written here)."""
    a, b = np.asarray(a, float)[:, None], np.asarray(b, float)[None, :]
    return float(np.mean((b > a) + 0.5 * (b == a)))


def bootstrap_macro_f1(y_true: np.ndarray, preds, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Macro-F1 (mean over seeds) with its ``seed_image_ci``'s SE and df, the interval built on the logit scale so
    that it stays inside [0, 1] (``verdict_statistics.bounded_mean_interval``; ``at_bound`` when the mean is 0 or 1,
    ``t_lo`` / ``t_hi`` the plain t-interval); ``preds`` is one prediction matrix per seed (or a single matrix: one
    seed, the image bootstrap alone)."""
    preds = _per_seed(preds)
    out = seed_image_ci(lambda s, w: weighted_macro_f1(y_true, preds[s], w[0]), len(preds), [len(y_true)],
                        n_boot, seed, alpha)
    bounded = bounded_mean_interval(out["per_seed"], 0.0, 1.0, se=out["se"], df=out["df"], alpha=alpha)
    return {**out, "t_lo": out["lo"], "t_hi": out["hi"], "lo": bounded["lo"], "hi": bounded["hi"],
            "at_bound": bounded["at_bound"]}


def _paired(y_true: np.ndarray, preds_a: list, preds_b: list):
    """(seeds, seed s's macro-F1 of a and of b on the same image weights); a one-entry side is a fixed model."""
    n = max(len(preds_a), len(preds_b))
    for side in (preds_a, preds_b):
        if len(side) not in (1, n):
            raise ValueError(f"paired models need the same seeds (or one fixed model), got {len(preds_a)} vs {len(preds_b)}")
    pick = lambda side, s: side[s if len(side) > 1 else 0]  # noqa: E731
    return n, lambda s, w: weighted_macro_f1(y_true, pick(preds_a, s), w), \
        lambda s, w: weighted_macro_f1(y_true, pick(preds_b, s), w)


def _observed(f, n: int, sizes: Sequence[int]) -> list[float]:
    return [float(np.ravel(f(s, [np.ones((1, k)) for k in sizes]))[0]) for s in range(n)]


def paired_bootstrap(y_true: np.ndarray, preds_a, preds_b, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Macro-F1(b) - macro-F1(a), mean over seeds, paired on seeds and images, with its ``seed_image_ci`` and
    ``prob_improvement`` (share of seed pairs in which b's macro-F1 beats a's)."""
    n, f_a, f_b = _paired(y_true, _per_seed(preds_a), _per_seed(preds_b))
    a, b = (lambda s, w: f_a(s, w[0])), (lambda s, w: f_b(s, w[0]))
    out = seed_image_ci(lambda s, w: b(s, w) - a(s, w), n, [len(y_true)], n_boot, seed, alpha)
    sizes = [len(y_true)]
    return {**out, "prob_improvement": prob_improvement(_observed(a, n, sizes), _observed(b, n, sizes))}


def gap_change(cx: tuple, nih: tuple, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Change of the CheXpert->NIH macro-F1 gap from model a to b: (CX_b - NIH_b) - (CX_a - NIH_a), mean over
    seeds, with its ``seed_image_ci`` (images resampled independently per data set) and ``prob_improvement``
    (share of seed pairs in which b's gap is above a's).

    Each tuple is (y_true, preds_a, preds_b) with one prediction matrix per seed (or a single matrix).
    """
    n, cx_a, cx_b = _paired(cx[0], _per_seed(cx[1]), _per_seed(cx[2]))
    _, nih_a, nih_b = _paired(nih[0], _per_seed(nih[1]), _per_seed(nih[2]))
    gap_a = lambda s, w: cx_a(s, w[0]) - nih_a(s, w[1])  # noqa: E731
    gap_b = lambda s, w: cx_b(s, w[0]) - nih_b(s, w[1])  # noqa: E731
    sizes = [len(cx[0]), len(nih[0])]
    out = seed_image_ci(lambda s, w: gap_b(s, w) - gap_a(s, w), n, sizes, n_boot, seed, alpha)
    return {**out, "prob_improvement": prob_improvement(_observed(gap_a, n, sizes), _observed(gap_b, n, sizes))}


def ls_slope(x: Sequence[float], y: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``y`` against ``x`` along ``y``'s last axis (one value per leading index)."""
    xc = np.asarray(x, float) - np.mean(x)
    if not (xc ** 2).sum() > 0:
        raise ValueError(f"a slope needs at least two distinct x values, got {list(x)}")
    return np.asarray(y, float) @ xc / (xc ** 2).sum()


def slope_ci(stat: Callable[[int, int, np.ndarray], np.ndarray], x: Sequence[float], n_seeds: int, n_images: int,
             n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Per seed, the least-squares slope against ``x`` of a statistic measured at each ``x`` (E1: each dose), mean
    over seeds with its ``seed_image_ci``: ``stat(d, s, w)`` is seed ``s``'s value at ``x[d]`` for each row of
    image weights ``w`` (rows, n_images), the same image resample at every ``x`` and seed (the images are shared)."""
    def effect(s, w):
        return ls_slope(x, np.stack([np.asarray(stat(d, s, w[0]), float) for d in range(len(x))], axis=-1))
    return seed_image_ci(effect, n_seeds, [n_images], n_boot, seed, alpha)
