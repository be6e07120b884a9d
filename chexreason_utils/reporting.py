"""Tables 1-6 in the paper's layout, reported (paper) beside reproduced (this run, profile named), plus the
bootstrap summaries the evaluation figures use.

A comparison table has the paper's rows (formats, variants, checkpoints or labels) as its index and two-level
columns ``(source, metric)``: one block of columns per source, ``reported (paper)`` first, then
``reproduced (<profile>)``. More blocks (e.g. one per seed, or a mean over seeds) are further sources beside
them; ``plotting.save_table`` writes any number of blocks as grouped LaTeX columns and flat Markdown/CSV.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import metrics, reference

SUMMARY_COLUMNS = ["micro_p", "micro_r", "micro_f1", "macro_p", "macro_r", "macro_f1", "fail_rate"]
REPORTED = "reported (paper)"
# The paper's column headings, used by the LaTeX and Markdown writers for the metric level.
PAPER_HEADINGS = {"micro_p": "Micro P", "micro_r": "Micro R", "micro_f1": "Micro F1", "macro_p": "Macro P",
                  "macro_r": "Macro R", "macro_f1": "Macro F1", "fail_rate": "Fail"}


def reproduced_label(profile: str, n_seeds: int = 1) -> str:
    """The source label of this run's numbers (the mean over training seeds when there are several)."""
    return f"reproduced ({profile}, mean of {n_seeds} seeds)" if n_seeds > 1 else f"reproduced ({profile})"


def blocks(parts: dict[str, pd.DataFrame], order: list, column_name: str) -> pd.DataFrame:
    """Frames side by side as ``(source, <column_name>)`` column blocks, one block per source.

    Rows follow ``order`` (the paper's), then rows only some source has, in their first appearance.
    """
    table = pd.concat(parts, axis=1, names=["source", column_name], sort=False)
    extra = [k for k in table.index if k not in order]
    return table.reindex([*order, *extra])


def over_seeds(frame: pd.DataFrame, key: str, columns: list[str]) -> pd.DataFrame:
    """Rows = ``key`` values; a "mean over seeds" block, then one block per training seed. Rows without a seed
    (a fixed base model) have only the mean block."""
    parts = {"mean over seeds": frame.groupby(key, sort=False)[columns].mean()}
    parts.update(_seed_blocks(frame, key, columns))
    return blocks(parts, list(dict.fromkeys(frame[key])), "metric")


def _seed_blocks(frame: pd.DataFrame, key: str, columns: list[str]) -> dict[str, pd.DataFrame]:
    seeded = frame.loc[frame["seed"].notna()] if "seed" in frame else frame.iloc[0:0]
    return {f"seed {int(s)}": t.set_index(key)[columns] for s, t in seeded.groupby("seed", sort=True)}


def beside(reproduced: pd.DataFrame, reported: pd.DataFrame, key: str, profile: str,
           columns: list[str]) -> pd.DataFrame:
    """Rows = ``key`` values in the paper's order; a ``reported (paper)`` block, a ``reproduced (<profile>)``
    block (the mean over training seeds when there are several) and one block per training seed."""
    for name, frame, unique in (("reported", reported, [key]), ("reproduced", reproduced,
                                                                [key, *(["seed"] if "seed" in reproduced else [])])):
        missing = [c for c in [key, *columns] if c not in frame.columns]
        if missing:
            raise KeyError(f"beside: the {name} table has no column(s) {missing}; it has {list(frame.columns)}")
        repeated = frame.duplicated(unique)
        if repeated.any():
            raise ValueError(f"beside: the {name} table repeats {key} values {sorted(frame.loc[repeated, key])}")
    n = int(reproduced["seed"].nunique()) if "seed" in reproduced else 0
    parts = {REPORTED: reported.set_index(key)[columns],
             reproduced_label(profile, n): reproduced.groupby(key, sort=False)[columns].mean()}
    if n > 1:
        parts.update(_seed_blocks(reproduced, key, columns))
    return blocks(parts, list(reported[key]), "metric")


def table4(checkpoint_scores: pd.DataFrame) -> pd.DataFrame:
    """Best-F1 and final GRPO checkpoints per reward and seed, in Table 4's layout."""
    rows = []
    for (reward, seed), t in checkpoint_scores.loc[checkpoint_scores["step"] > 0].groupby(["reward", "seed"]):
        for which, flag in (("best_f1", "is_best_f1"), ("final", "is_final")):
            r = t.loc[t[flag]].iloc[0]
            rows.append({"reward": reward, "checkpoint": which, "seed": seed, "step": int(r["step"]),
                         **{c: r[c] for c in SUMMARY_COLUMNS}})
    out = pd.DataFrame(rows)
    out["key"] = out["reward"] + " / " + out["checkpoint"]
    return out


def per_label_f1(frames: dict[str, tuple[np.ndarray, np.ndarray]], labels) -> pd.DataFrame:
    """Rows = labels, columns = models: per-label F1 from (y_true, y_pred) pairs."""
    return pd.DataFrame({name: metrics.per_label(t, p, labels)["f1"].to_numpy() for name, (t, p) in frames.items()},
                        index=list(labels))


def test_table(per_seed: dict[int, pd.DataFrame], which: int, profile: str, fixed: tuple[str, ...] = ()) -> pd.DataFrame:
    """Table 5/6 layout: label rows, then the Macro row (mean over labels, zeros included); the paper's model
    columns as one block, this run's (mean over training seeds) as the next, then one block per seed without the
    ``fixed`` models, which do not depend on the seed."""
    rep = reference.per_label_table(which)
    n = len(per_seed)
    mean = sum(per_seed.values()) / n
    parts = {REPORTED: rep, reproduced_label(profile, n): mean}
    if n > 1:
        parts.update({f"seed {s}": t.drop(columns=[c for c in fixed if c in t]) for s, t in per_seed.items()})
    table = blocks(parts, list(rep.index), "model")
    macro = pd.concat({REPORTED: pd.Series(reference.reported_macro(which)),
                       **{name: part.mean() for name, part in parts.items() if name != REPORTED}})
    table.loc["Macro"] = macro.reindex(table.columns)
    return table.rename_axis("label")


def per_label_by_seed(by_model: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]], labels,
                      fixed: tuple[str, ...]) -> pd.DataFrame:
    """Per-label F1, one column per model and training seed (one column for a ``fixed`` model)."""
    frames = {}
    for model, by_seed in by_model.items():
        for s, pair in by_seed.items():
            frames[model if model in fixed else f"{model} · seed {s}"] = pair
    return per_label_f1(frames, labels)


def ci_summary(by_model: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]], dataset: str, n_boot: int,
               seed: int) -> pd.DataFrame:
    """Per model: macro-F1 mean over training seeds with a two-level (seeds, then images) bootstrap 95% CI
    (row ``seed`` = "mean") and each seed's value (one row per seed)."""
    rows = []
    for name, by_seed in by_model.items():
        y_true = next(iter(by_seed.values()))[0]
        r = metrics.bootstrap_macro_f1(y_true, [p for _, p in by_seed.values()], n_boot, seed)
        rows.append({"model": name, "dataset": dataset, "seed": "mean", "macro_f1": r["effect"], "lo": r["lo"],
                     "hi": r["hi"], "n": len(y_true)})
        rows += [{"model": name, "dataset": dataset, "seed": s, "macro_f1": v, "n": len(y_true)}
                 for s, v in zip(by_seed, r["per_seed"])]
    return pd.DataFrame(rows)


def age_band(age: float) -> str:
    if pd.isna(age):
        return "unknown"
    return "<40" if age < 40 else "40-59" if age < 60 else "60+"


def subgroup_scores(frame: pd.DataFrame, y_true: np.ndarray, preds: dict[str, dict[int, np.ndarray]],
                    labels) -> pd.DataFrame:
    """Macro-F1 per sex and age band for each model and training seed (frame holds sex and age aligned with
    y_true; ``preds`` is model -> seed -> prediction matrix)."""
    rows = []
    groups = {"sex": frame["sex"].fillna("unknown").astype(str), "age band": frame["age"].map(age_band)}
    for group, values in groups.items():
        for value in sorted(values.unique()):
            mask = (values == value).to_numpy()
            for model, by_seed in preds.items():
                for s, y_pred in by_seed.items():
                    table = metrics.per_label(y_true[mask], y_pred[mask], labels)
                    rows.append({"model": model, "seed": s, "group": group, "value": value,
                                 "macro_f1": table["f1"].mean(), "n": int(mask.sum())})
    return pd.DataFrame(rows)


def format_ranking(table: pd.DataFrame) -> pd.DataFrame:
    """Rank of each SFT format by macro-F1 within each model (1 = best): of the mean over seeds, and per seed."""
    def ranks(t: pd.DataFrame) -> pd.DataFrame:
        return t.pivot(index="format", columns="model", values="macro_f1").rank(ascending=False, method="min")
    mean = ranks(table.groupby(["model", "format"], as_index=False)["macro_f1"].mean())
    parts = [mean.add_suffix(" | mean")]
    if "seed" in table:
        parts += [ranks(t).add_suffix(f" | seed {int(s)}") for s, t in table.groupby("seed", sort=True)]
    return pd.concat(parts, axis=1).astype(int).reset_index()
