"""The one scores frame of the evaluation, and the contrasts measured on the same predictions.

Scores: one tidy row per entry (dataset, model, stage, name, checkpoint, prompt) × seed × label, where an entry
is one model scored on one data set with one prompt. ``aggregate`` says what a row is: "seed" (one training
seed's, ``seed`` its integer) or "mean" (the mean over seeds, ``seed`` empty; the only row of a fixed model, one that
no seed trains). ``label`` is a label name, "micro" or "macro". Columns: precision, recall, f1 and support (label
rows), fail_rate and distinct_sets (micro and macro rows; the mean row has the fewest of any seed), n_images,
and on the mean macro row the 95% CI of macro-F1 (``lo``, ``hi``) of ``metrics.bootstrap_macro_f1`` (a
t-interval over training seeds plus the image noise they share, ``metrics.seed_image_interval``).

Contrasts: one row per paired comparison (the SFT -> GRPO differences, the gap change, the claims): effect as
the mean over seeds, each seed's value, and its seed x image CI.

The supervised image-only reference (``stage`` and ``model`` "reference", ``name`` what it was trained on,
``REFERENCES``) has a row per training seed and a mean row, like a trained model.

Trivial baselines (``stage`` "baseline", ``model`` "trivial", one fixed row per evaluation set, ``baseline_scores``):
always "No Finding", the SFT pool's commonest label set, and prevalence-matched random guessing, whose expected
F1 is computed analytically (the F1 of the expected confusion counts when each label is guessed independently
with its prevalence on the set: per-label F1 = prevalence). An entry is at floor when it does not beat the best
of them (``floor_reason``).

``reporting`` builds every table and the headline from these two frames alone.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from . import metrics
from ..labels import names_to_vector

class EntryKeys(NamedTuple):
    """What identifies an entry: one model scored on one data set with one prompt."""
    dataset: str      # validation, CheXpert, NIH
    model: str        # medical, general (a trivial baseline: trivial)
    stage: str        # base, sft, grpo, baseline
    name: str         # prompt variant, SFT format, GRPO reward run, baseline name
    checkpoint: str   # base, sft, checkpoint-<step>, best_f1, final, baseline
    step: float       # the GRPO step (0 for SFT; NaN where none or where it differs between seeds)
    prompt: str       # the prompt the model answered


KEYS = list(EntryKeys._fields)
COLUMNS = [*KEYS, "seed", "aggregate", "label", "precision", "recall", "f1", "support", "fail_rate", "n_images", "distinct_sets",
           "lo", "hi"]
SUMMARY_COLUMNS = ["micro_p", "micro_r", "micro_f1", "macro_p", "macro_r", "macro_f1", "fail_rate"]
SEED, MEAN = "seed", "mean"   # the two values of ``aggregate``: one training seed's row, the mean over seeds


def _seed_rows(y_true: np.ndarray, y_pred: np.ndarray, valid: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    table = metrics.per_label(y_true, y_pred, labels)
    s = metrics.summary(y_true, y_pred, labels, valid)
    summary = pd.DataFrame([{"label": "micro", "precision": s["micro_p"], "recall": s["micro_r"], "f1": s["micro_f1"]},
                            {"label": "macro", "precision": s["macro_p"], "recall": s["macro_r"], "f1": s["macro_f1"]}])
    out = pd.concat([table, summary.assign(fail_rate=s["fail_rate"], distinct_sets=distinct_sets(y_pred))],
                    ignore_index=True)
    return out.assign(n_images=len(y_true))


def distinct_sets(y_pred: np.ndarray) -> float:
    """How many distinct label sets a prediction matrix answers with (NaN for probabilities)."""
    y_pred = np.asarray(y_pred)
    if not np.isin(y_pred, (0, 1)).all():
        return np.nan
    return float(len(np.unique(y_pred.reshape(len(y_pred), -1), axis=0)))


def entry_scores(entry: dict, y_true: np.ndarray, preds: dict, valid: dict, labels: Sequence[str], n_boot: int,
                 boot_seed: int) -> pd.DataFrame:
    """Score rows of one entry: per seed (when ``preds`` has seeds; key None = a fixed model) and the mean over
    seeds, whose macro row carries the seed x image CI and whose micro / macro rows carry the fewest distinct
    label sets any seed answers with. ``entry`` holds the ``KEYS`` values."""
    entry = entry._asdict() if isinstance(entry, EntryKeys) else entry
    missing = [k for k in KEYS if k not in entry]
    if missing:
        raise KeyError(f"entry_scores: entry {entry} lacks {missing}")
    per_seed = {s: _seed_rows(y_true, p, np.asarray(valid[s], bool), labels) for s, p in preds.items()}
    mean = pd.concat(per_seed.values()).groupby("label", sort=False).mean(numeric_only=True).reset_index()
    mean["distinct_sets"] = pd.concat(per_seed.values()).groupby("label", sort=False)["distinct_sets"].min().to_numpy()
    ci = metrics.bootstrap_macro_f1(y_true, list(preds.values()), n_boot, boot_seed)
    mean.loc[mean["label"] == "macro", ["lo", "hi"]] = ci["lo"], ci["hi"]
    parts = [] if None in preds else [t.assign(seed=s, aggregate=SEED) for s, t in per_seed.items()]
    frame = pd.concat([*parts, mean.assign(seed=pd.NA, aggregate=MEAN)], ignore_index=True).assign(**entry)
    return frame.reindex(columns=COLUMNS).astype({"seed": "Int64"})


def read_scores(path) -> pd.DataFrame:
    """A scores frame written by ``steps.evaluation.evaluate_run`` (integer seeds, empty on mean rows)."""
    return pd.read_csv(path, dtype={"seed": "Int64"})


BASELINE = {"stage": "baseline", "model": "trivial", "checkpoint": "baseline"}
# The supervised image-only reference (training_runs.image_reference): one entry per training set, per seed.
REFERENCE = {"stage": "reference", "model": "reference", "checkpoint": "reference"}
REFERENCES = ("SFT images", "site pool")   # its entries' names: what it was trained on
BASELINES = ("always No Finding", "SFT pool's commonest label set", "prevalence-matched random")


def commonest_set(truths) -> tuple[str, ...]:
    """The most frequent label set among ``truths`` (lists of names); ties go to the first seen."""
    if not len(truths):
        raise ValueError("commonest_set: no label sets (the SFT manifest is empty)")
    counts: dict = {}
    for t in truths:
        key = tuple(sorted(t))
        counts[key] = counts.get(key, 0) + 1
    return max(counts, key=counts.get)


def baseline_scores(dataset: str, y_true: np.ndarray, labels: Sequence[str], sft_truths, n_boot: int,
                    boot_seed: int) -> pd.DataFrame:
    """The ``BASELINES`` as fixed entries on one evaluation set (image-bootstrap CI, no failures)."""
    y_true = np.asarray(y_true)
    constant = lambda names: np.broadcast_to(names_to_vector(names, labels), y_true.shape)  # noqa: E731
    preds = {"always No Finding": constant(["No Finding"]), "SFT pool's commonest label set":
             constant(commonest_set(sft_truths)),
             "prevalence-matched random": np.broadcast_to(y_true.mean(axis=0), y_true.shape)}
    return pd.concat([entry_scores({"dataset": dataset, **BASELINE, "name": name, "step": np.nan, "prompt": ""},
                                   y_true, {None: p}, {None: np.ones(len(y_true), bool)}, labels, n_boot, boot_seed)
                      for name, p in preds.items()], ignore_index=True)


def best_baseline(frame: pd.DataFrame, dataset: str) -> pd.Series:
    """The trivial baseline with the highest macro-F1 on ``dataset`` (its macro row: name, f1, lo, hi)."""
    rows = frame.loc[(frame["dataset"] == dataset) & (frame["stage"] == BASELINE["stage"]) & (frame["label"] == "macro")]
    if not len(rows):
        raise LookupError(f"no trivial baseline on {dataset!r}: the scores frame has no stage "
                          f"{BASELINE['stage']!r} rows there (04_evaluation writes them)")
    return rows.loc[rows["f1"].idxmax()]


def floor_reason(macro_f1: float, n_sets: float, best: pd.Series) -> str:
    """The one floor rule: why a macro-F1 with ``n_sets`` distinct answered label sets is at floor against the
    best trivial baseline ``best`` (it does not exceed the baseline's CI upper bound, or it answers with <= 2
    label sets); "" when it is not."""
    below, few = _floor_tests(macro_f1, n_sets, best)
    reasons = [f"macro-F1 {macro_f1:.3f} {_not_above(best)}"] if below else []
    if few:
        reasons.append(f"answers with {int(n_sets)} distinct label set(s)")
    return " and ".join(reasons)


def _floor_tests(macro_f1: float, n_sets: float, best: pd.Series) -> tuple[bool, bool]:
    """(not above the best baseline's CI upper bound, answers with <= 2 label sets): either puts it at floor."""
    return not macro_f1 > best["hi"], n_sets <= 2


def _not_above(best: pd.Series) -> str:
    return f"does not exceed {best['name']!r} ({best['f1']:.3f}, CI upper {best['hi']:.3f})"


def entries_at_floor(frame: pd.DataFrame, *selections: dict, **keys) -> str:
    """The entries with ``keys`` (or in any of ``selections``, dicts of keys; mean over seeds, fewest label sets
    of any seed) that are at floor on their set, grouped by set and reason so that each reason is said once,
    "; "-joined ("" when none is)."""
    rows = pd.concat([select(frame, aggregate=MEAN, label="macro", **s) for s in selections or [keys]])
    rows = rows.loc[~rows.index.duplicated()]   # an entry two selections share is named once
    groups: dict[str, list[str]] = {}
    for _, r in rows.iterrows():
        best = best_baseline(frame, r["dataset"])
        below, few = _floor_tests(r["f1"], r["distinct_sets"], best)
        if below or few:
            head = f"on {r['dataset']}" + (f", macro-F1 {_not_above(best)}" if below else "")
            sets = f", {int(r['distinct_sets'])} distinct label set(s)" if few else ""
            groups.setdefault(head, []).append(f"{r['model']} {r['stage']} {r['name']} ({r['checkpoint']}) "
                                               f"macro-F1 {r['f1']:.3f}{sets}")
    return "; ".join(f"{head}: {', '.join(items)}" for head, items in groups.items())


def select(frame: pd.DataFrame, **keys) -> pd.DataFrame:
    """Rows whose columns equal ``keys`` (a list value: any of them); an empty selection is an error naming it."""
    mask = pd.Series(True, index=frame.index)
    for key, value in keys.items():
        match = frame[key].isin(value) if isinstance(value, (list, tuple)) else frame[key] == value
        mask &= match.fillna(False).astype(bool)   # an empty seed (a mean row) matches no seed
    if not mask.any():
        raise LookupError(f"the scores frame has no rows with {keys}")
    return frame.loc[mask]


def summaries(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per entry and seed with the paper's summary columns (micro/macro P, R, F1, fail rate) and the
    macro-F1 CI; every (entry, seed) block of ``entry_scores`` has one micro and one macro row."""
    micro = frame.loc[frame["label"] == "micro"].reset_index(drop=True)
    macro = frame.loc[frame["label"] == "macro"].reset_index(drop=True)
    ids = [*KEYS, "seed", "aggregate"]
    as_text = lambda part: part[ids].astype(object).fillna("").astype(str)  # noqa: E731
    if len(micro) != len(macro) or not as_text(micro).equals(as_text(macro)):
        raise ValueError("scores frame: every (entry, seed) needs one micro and one macro row, in the same order")
    out = micro[ids].copy()
    for avg, part in (("micro", micro), ("macro", macro)):
        for short, metric in (("p", "precision"), ("r", "recall"), ("f1", "f1")):
            out[f"{avg}_{short}"] = part[metric]
    out["fail_rate"], out["lo"], out["hi"], out["n_images"] = macro["fail_rate"], macro["lo"], macro["hi"], macro["n_images"]
    out["distinct_sets"] = macro["distinct_sets"]
    return out


def contrast_row(what: dict, result: dict) -> dict:
    """A contrast row from a ``metrics.seed_image_ci`` result (``what`` names it): effect, CI, each seed's value,
    the variance parts and df of the interval, and the probability of improvement where there is one."""
    return {**what, "effect": result["effect"], "lo": result["lo"], "hi": result["hi"],
            "per_seed": ", ".join(f"{v:+.3f}" for v in result["per_seed"]), "seeds": result["n_seeds"],
            "var_seeds": result["var_seeds"], "var_images": result["var_images"], "df": result["df"],
            "prob_improvement": result.get("prob_improvement", np.nan)}
