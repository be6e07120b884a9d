"""The penalty-based greedy sampler and the disjoint SFT / RL / validation / test manifests.

The paper states the idea (favour images that reduce deficits of under-represented labels, heavily penalise
images that would add to over-represented ones, every label in at least 5% of the selection) but not the
formula. Ours, with every weight a parameter:

    target fraction   tau_k = clip(pool prevalence p_k, min_fraction, max_fraction)
    current fraction  f_k   = count_k / n_selected
    score(image)      = sum_k y_k * max(0, tau_k - f_k) / tau_k  -  penalty * sum_k y_k * max(0, f_k - tau_k) / tau_k

Each step takes the best-scoring label combination (ties: fewest labels, then a seeded random order) and
one not-yet-used image with that combination, chosen at random with the seed. Working on unique label
combinations instead of rows makes 2,000 + 1,000 + 500 from 200k rows take well under a second.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..labels import CHEXPERT_LABELS
from ..run_records import count


@dataclass
class Selection:
    """Row indices chosen, and how well each label reached ``min_fraction``."""

    indices: np.ndarray
    fractions: pd.Series
    shortfalls: dict[str, float] = field(default_factory=dict)
    rule: str = "greedy"     # greedy | random
    counts: pd.Series | None = None
    over: dict[str, float] = field(default_factory=dict)    # labels above max_fraction (when one was given)
    notes: list[str] = field(default_factory=list)          # what the rule did besides picking (exclusions)

    def describe(self) -> str:
        if not self.shortfalls:
            text = f"{len(self.indices)} images; every label at or above the minimum fraction"
        elif self.rule == "random":
            text = (f"{len(self.indices)} images drawn at random (natural prevalence); below the minimum: "
                    f"{_percentages(self.shortfalls)}")
        else:
            text = (f"{len(self.indices)} images; the pool could not bring these labels to the minimum: "
                    f"{_percentages(self.shortfalls)}")
        if self.over:
            text += f"; above the maximum: {_percentages(self.over)}"
        return "; ".join([text, *self.notes])


def _percentages(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1%}" for k, v in values.items())


def greedy_select(labels: np.ndarray, n: int, min_fraction: float = 0.05, max_fraction: float = 0.30,
                  penalty: float = 4.0, seed: int = 0, available: np.ndarray | None = None,
                  names: tuple[str, ...] = CHEXPERT_LABELS, pool_note: str = "") -> Selection:
    """Pick ``n`` rows of a binary label matrix with the penalty-based greedy rule (see module docstring).

    ``pool_note`` says why rows are unavailable; it is part of the error when the pool is too small."""
    labels = np.asarray(labels, dtype=np.int8)
    rng = np.random.default_rng(seed)
    avail = np.ones(len(labels), dtype=bool) if available is None else np.asarray(available, dtype=bool).copy()
    if n > avail.sum():
        raise ValueError(f"asked for {n} images but only {int(avail.sum())} are available in the pool of "
                         f"{len(labels)} rows{pool_note}")
    pool_prev = labels[avail].mean(axis=0)
    tau = np.clip(pool_prev, min_fraction, max_fraction)
    tau = np.where(pool_prev > 0, tau, min_fraction)

    codes = labels.astype(np.int64) @ (np.int64(1) << np.arange(labels.shape[1], dtype=np.int64))
    unique_codes, first_row, combo_of = np.unique(codes, return_index=True, return_inverse=True)
    combos = labels[first_row]
    order = np.flatnonzero(avail)[np.argsort(combo_of[avail], kind="stable")]
    bounds = np.cumsum(np.bincount(combo_of[avail], minlength=len(combos)))
    members = [rng.permutation(g) for g in np.split(order, bounds[:-1])]
    next_free = np.zeros(len(combos), dtype=int)
    remaining = np.array([len(m) for m in members])
    tie_break = rng.random(len(combos)) * 1e-9 - combos.sum(axis=1) * 1e-6
    counts = np.zeros(labels.shape[1], dtype=float)
    chosen = np.empty(n, dtype=np.int64)
    combos_f = combos.astype(float)
    for step in range(n):
        frac = counts / max(step, 1)
        deficit = np.maximum(0.0, tau - frac) / tau
        excess = np.maximum(0.0, frac - tau) / tau
        score = combos_f @ (deficit - penalty * excess) + tie_break
        score[remaining == 0] = -np.inf
        best = int(np.argmax(score))
        chosen[step] = members[best][next_free[best]]
        next_free[best] += 1
        remaining[best] -= 1
        counts += combos_f[best]
    return coverage(labels, chosen, min_fraction, names, max_fraction=max_fraction)


def coverage(labels: np.ndarray, indices: np.ndarray, min_fraction: float,
             names: tuple[str, ...] = CHEXPERT_LABELS, rule: str = "greedy",
             max_fraction: float | None = None) -> Selection:
    """Label counts and fractions of a selection, the labels below ``min_fraction`` (and above ``max_fraction``)."""
    chosen = np.asarray(labels)[indices]
    counts = pd.Series(chosen.sum(axis=0), index=list(names))
    fractions = pd.Series(chosen.mean(axis=0) if len(chosen) else 0.0, index=list(names))
    short = {k: float(v) for k, v in fractions.items() if v < min_fraction}
    over = {k: float(v) for k, v in fractions.items() if max_fraction is not None and v > max_fraction}
    return Selection(indices=np.asarray(indices), fractions=fractions, shortfalls=short, rule=rule, counts=counts,
                     over=over)


def split_train_pool(frame: pd.DataFrame, labels: np.ndarray, n_sft: int, n_rl: int, n_val: int,
                     min_fraction: float, max_fraction: float, penalty: float, seed: int,
                     patient_disjoint: bool = True) -> tuple[pd.DataFrame, dict[str, Selection]]:
    """SFT and RL by the greedy sampler, validation at random from what is left; disjoint (by patient)."""
    available = np.ones(len(frame), dtype=bool)
    patients = pd.factorize(frame["patient_id"])[0]   # integer codes: np.isin on strings is slow
    split = np.full(len(frame), "", dtype=object)
    selections: dict[str, Selection] = {}

    def take(name: str, idx: np.ndarray) -> None:
        split[idx] = name
        available[idx] = False
        if patient_disjoint:
            available[np.isin(patients, patients[idx])] = False

    for name, n, s in (("sft", n_sft, seed), ("rl", n_rl, seed + 1)):
        sel = greedy_select(labels, n, min_fraction, max_fraction, penalty, seed=s, available=available,
                            pool_note=_removed_note(split, available, patient_disjoint))
        selections[name] = sel
        take(name, sel.indices)
    free = np.flatnonzero(available)
    if n_val > len(free):
        raise ValueError(f"validation needs {n_val} images, only {len(free)} of {len(frame)} are left"
                         f"{_removed_note(split, available, patient_disjoint)}")
    val_idx = np.random.default_rng(seed + 2).choice(free, size=n_val, replace=False)
    selections["val"] = coverage(labels, val_idx, min_fraction, rule="random")
    take("val", val_idx)
    chosen = split != ""
    out = frame.loc[chosen].assign(subset=split[chosen])
    return out, selections


def _removed_note(split: np.ndarray, available: np.ndarray, patient_disjoint: bool) -> str:
    """Why the pool is smaller than the file: rows already selected, and rows of their patients."""
    taken = int((split != "").sum())
    if not taken:
        return ""
    blocked = int((~available).sum()) - taken
    why = f" ({taken} already selected for {', '.join(sorted(set(split[split != ''])))}"
    if patient_disjoint:
        why += f"; {blocked} more removed because their patients are in those selections (sampling.patient_disjoint)"
    return why + ")"


NO_SCORED_POSITIVE = ("exclude", "keep")


def select_test_set(frame: pd.DataFrame, labels: np.ndarray, n: int, eval_labels: tuple[str, ...],
                    rule: str, seed: int, min_fraction: float = 0.05, max_fraction: float = 0.30,
                    without_scored_positive: str = "exclude") -> tuple[pd.DataFrame, Selection]:
    """A cross-site test manifest (NIH's, PadChest's) and its label report (the paper's 488-image NIH selection rule
    is not stated).

    - ``greedy_balanced`` (default): one image per patient (the first in file order), then the
      penalty-based greedy sampler on the evaluation labels, so rare ones (Edema, Pneumonia) are present.
    - ``random``: one image per patient, then a seeded uniform sample.

    Images with no positive among the scored labels (e.g. Effusion-only when Effusion is not scored) have an
    empty truth although they are not normal: ``without_scored_positive='exclude'`` (default, open) leaves them
    out before selecting, ``'keep'`` lets them in. Either way the report counts them, gives per-label counts
    and fractions and names the labels below ``min_fraction`` or above ``max_fraction``.
    """
    if rule not in ("greedy_balanced", "random"):
        raise ValueError(f"unknown test selection rule {rule!r}; choose greedy_balanced or random")
    if without_scored_positive not in NO_SCORED_POSITIVE:
        raise ValueError(f"unknown without_scored_positive {without_scored_positive!r} (sampling.nih_without_scored_positive); "
                         f"choose one of {', '.join(NO_SCORED_POSITIVE)}")
    first = ~frame["patient_id"].duplicated().to_numpy()
    cols = [CHEXPERT_LABELS.index(lbl) for lbl in eval_labels]
    scored = np.asarray(labels)[:, cols]
    empty = scored.sum(axis=1) == 0
    notes = []
    if without_scored_positive == "exclude":
        notes.append(f"{int((first & empty).sum())} images with no positive among the scored labels excluded "
                     f"before selection")
        first = first & ~empty
    if n > first.sum():
        notes.append(f"asked for {n}, only {int(first.sum())} first-of-patient images available")
    n = min(n, int(first.sum()))
    if rule == "random":
        idx = np.random.default_rng(seed).choice(np.flatnonzero(first), size=n, replace=False)
    else:
        idx = greedy_select(scored, n, min_fraction, max_fraction, seed=seed, available=first, names=eval_labels).indices
    idx = np.sort(idx)
    report = coverage(scored, idx, min_fraction, eval_labels, rule="random" if rule == "random" else "greedy",
                      max_fraction=max_fraction)
    report.notes = notes + [f"{int(empty[idx].sum())} selected images have no scored positive"]
    return frame.iloc[idx].assign(subset="test"), report


def mix_rl_prompts(rl: pd.DataFrame, nih: pd.DataFrame, nih_test: pd.DataFrame, share: float,
                   seed: int) -> pd.DataFrame:
    """E3's RL set (registrations/E3_multisite_rl.yaml): ``rl`` with ``round(share * len(rl))`` of its rows, chosen
    with ``seed``, replaced by NIH-like images (``nih``, a manifest frame with CheXpert-mapped labels), one per
    patient and none of a patient with an image in ``nih_test``; the size stays, the replaced rows keep their place
    order. ``share`` 0 returns ``rl`` unchanged."""
    if not 0 <= share < 1:
        raise ValueError(f"E3 share of NIH-like RL prompts must be in [0, 1), got {share!r}")
    k = int(round(share * len(rl)))
    if k == 0:
        return rl.reset_index(drop=True)
    test_patients = set(nih_test["patient_id"].astype(str))
    eligible = nih.loc[~nih["patient_id"].astype(str).isin(test_patients)]
    eligible = eligible.loc[~eligible["patient_id"].duplicated()]
    if k > len(eligible):
        raise ValueError(f"E3 share {share}: {k} NIH-like RL prompts wanted, only {len(eligible)} patients outside "
                         "the NIH test manifest")
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(rl), size=len(rl) - k, replace=False))
    added = eligible.iloc[np.sort(rng.choice(len(eligible), size=k, replace=False))]
    return pd.concat([rl.iloc[keep], added.assign(subset="rl")], ignore_index=True)

def label_table(labels: np.ndarray, subset: str) -> pd.DataFrame:
    """Long table of label prevalence for plotting (subset, label, fraction, count)."""
    labels = np.asarray(labels)
    return pd.DataFrame({"subset": subset, "label": list(CHEXPERT_LABELS),
                         "fraction": labels.mean(axis=0) if len(labels) else 0.0,
                         "count": labels.sum(axis=0) if len(labels) else 0})


def draw_rl_set(frame: pd.DataFrame, labels: np.ndarray, excluded_patients, n: int, min_fraction: float,
                max_fraction: float, penalty: float, seed: int, what: str) -> pd.DataFrame:
    """``n`` RL images by 01's rule (``greedy_select``, seed ``seed``) from the pool rows of no patient in
    ``excluded_patients`` (E1's larger RL set); too small a pool raises, naming ``what`` and the numbers."""
    excluded = set(pd.Series(list(excluded_patients), dtype=str))
    available = ~frame["patient_id"].astype(str).isin(excluded).to_numpy()
    note = (f" ({what}: {int((~available).sum())} images of the {len(excluded)} SFT, validation and test "
            "patients removed)")
    sel = greedy_select(labels, n, min_fraction, max_fraction, penalty, seed=seed, available=available, pool_note=note)
    return frame.iloc[sel.indices].assign(subset="rl").reset_index(drop=True)


REFERENCE_POOL = "reference_pool"   # the manifest the image reference is also trained on (04)


def reference_pool(pool: pd.DataFrame, val: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """The training site's frontal pool without the validation patients (validation chooses the reference's
    thresholds), ``size`` images of it drawn at random by ``seed`` (0: all), in pool order."""
    kept = pool.loc[~pool["patient_id"].astype(str).isin(set(val["patient_id"].astype(str)))]
    count("pool images left out of the image reference (validation patients)", len(pool) - len(kept))
    if size and size < len(kept):
        count("pool images left out of the image reference (reference.pool_size)", len(kept) - size)
        kept = kept.sample(n=size, random_state=seed).sort_index()
    return kept.reset_index(drop=True)
