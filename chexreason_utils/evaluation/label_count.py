"""E0: how much of an SFT -> GRPO macro-F1 change a pure change in the number of labels named explains.

``count_matched`` brings one model's answers to another's label count per image by the registered rule
(registrations/E0_label_count.yaml): drop the rarest named labels, or add the commonest unnamed ones, by SFT-pool
prevalence. ``decompose`` splits the change into the length part (count-matched SFT - SFT) and the residual (GRPO -
count-matched SFT), each with ``metrics.seed_image_ci``; the two sum to the measured change, per seed and per image
resample. E0's amendment (issue 37) makes the match under each of ``ORDERS`` (the registered one, its reverse, the
mean of random orders: ``orders``). ``oracle`` gives the no-model strategies of the issue on a set's truths.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import metrics

ORACLES = ("only the commonest true label", "the truth plus the commonest missing label")
PARTS = ("measured change", "length part", "residual")
ORDERS = ("rarest dropped first", "commonest dropped first", "random order")   # the first is the registered one
RANDOM_ORDERS = 20   # random orders averaged in "random order" (E0's amendment)


def commonness_order(labels: Sequence[str], prevalence: dict[str, float]) -> np.ndarray:
    """Column indices of ``labels``, commonest first by ``prevalence`` (missing: 0), ties in table order."""
    return np.array(sorted(range(len(labels)), key=lambda i: (-prevalence.get(labels[i], 0.0), i)), dtype=int)


def count_matched(pred: np.ndarray, counts: Sequence[int], order: np.ndarray) -> np.ndarray:
    """``pred`` (n, labels; binary) with row i brought to ``counts[i]`` named labels: the rarest named ones dropped,
    or the commonest unnamed ones added, commonness by ``order`` (commonest first)."""
    pred = np.asarray(pred, dtype=np.int8)
    counts = np.asarray(counts, dtype=int)
    if counts.shape != (len(pred),) or (counts < 0).any() or (counts > pred.shape[1]).any():
        raise ValueError(f"count_matched: counts must be one integer in [0, {pred.shape[1]}] per row of pred")
    out = pred.copy()
    for i, k in enumerate(counts):
        named = [j for j in order if out[i, j]]
        if len(named) > k:
            out[i, named[k:]] = 0
        else:
            unnamed = [j for j in order if not out[i, j]]
            out[i, unnamed[:k - len(named)]] = 1
    return out


def oracle(y_true: np.ndarray, order: np.ndarray, strategy: str) -> np.ndarray:
    """One of the ``ORACLES`` as a prediction matrix on the truths ``y_true`` (no model)."""
    y_true = np.asarray(y_true, dtype=np.int8)
    out = np.zeros_like(y_true)
    for i, row in enumerate(y_true):
        true = [j for j in order if row[j]]
        if strategy == ORACLES[0]:
            out[i, true[:1]] = 1
        elif strategy == ORACLES[1]:
            out[i] = row
            out[i, [j for j in order if not row[j]][:1]] = 1
        else:
            raise ValueError(f"unknown oracle {strategy!r}; choose one of {', '.join(ORACLES)}")
    return out


def orders(commonest_first: np.ndarray, which: str, seed: int = 0) -> list[np.ndarray]:
    """The commonness orders one of ``ORDERS`` matches with: the registered one (drop the rarest, add the
    commonest), its reverse, or ``RANDOM_ORDERS`` random permutations drawn with ``seed``."""
    if which == ORDERS[0]:
        return [commonest_first]
    if which == ORDERS[1]:
        return [commonest_first[::-1]]
    if which == ORDERS[2]:
        rng = np.random.default_rng(seed)
        return [rng.permutation(commonest_first) for _ in range(RANDOM_ORDERS)]
    raise ValueError(f"unknown order {which!r}; choose one of {', '.join(ORDERS)}")


def decompose(y_true: np.ndarray, sft: list[np.ndarray], grpo: list[np.ndarray], order: np.ndarray | list,
              n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """The ``PARTS`` of macro-F1(GRPO) - macro-F1(SFT), paired per training seed (``sft[s]``, ``grpo[s]``) and
    image, each a ``metrics.seed_image_ci`` result on the same image resamples; plus ``labels_per_image`` (mean
    named labels of SFT and GRPO, per seed). ``order``: one commonness order, or a list of them whose count-matched
    macro-F1 is averaged (``orders``)."""
    if len(sft) != len(grpo) or not sft:
        raise ValueError(f"decompose needs one SFT and one GRPO matrix per seed, got {len(sft)} and {len(grpo)}")
    order_list = order if isinstance(order, list) else [order]
    matched = [[count_matched(s, g.sum(axis=1), o) for s, g in zip(sft, grpo)] for o in order_list]
    f1 = lambda preds, s, w: metrics.weighted_macro_f1(y_true, preds[s], w[0])  # noqa: E731
    f1_matched = lambda s, w: np.mean([f1(m, s, w) for m in matched], axis=0)  # noqa: E731
    effects = {"measured change": lambda s, w: f1(grpo, s, w) - f1(sft, s, w),
               "length part": lambda s, w: f1_matched(s, w) - f1(sft, s, w),
               "residual": lambda s, w: f1(grpo, s, w) - f1_matched(s, w)}
    out = {part: metrics.seed_image_ci(effects[part], len(sft), [len(y_true)], n_boot, seed) for part in PARTS}
    out["labels_per_image"] = {"SFT": [float(s.sum(axis=1).mean()) for s in sft],
                               "GRPO": [float(g.sum(axis=1).mean()) for g in grpo]}
    return out
