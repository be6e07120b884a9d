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


def reproduced_label(profile: str) -> str:
    """The source label of this run's numbers."""
    return f"reproduced ({profile})"


def blocks(parts: dict[str, pd.DataFrame], order: list, column_name: str) -> pd.DataFrame:
    """Frames side by side as ``(source, <column_name>)`` column blocks, one block per source.

    Rows follow ``order`` (the paper's), then rows only some source has, in their first appearance.
    """
    table = pd.concat(parts, axis=1, names=["source", column_name], sort=False)
    extra = [k for k in table.index if k not in order]
    return table.reindex([*order, *extra])


def beside(reproduced: pd.DataFrame, reported: pd.DataFrame, key: str, profile: str,
           columns: list[str]) -> pd.DataFrame:
    """Rows = ``key`` values in the paper's order; a ``reported (paper)`` and a ``reproduced (<profile>)`` block."""
    for name, frame in (("reported", reported), ("reproduced", reproduced)):
        missing = [c for c in [key, *columns] if c not in frame.columns]
        if missing:
            raise KeyError(f"beside: the {name} table has no column(s) {missing}; it has {list(frame.columns)}")
        if frame[key].duplicated().any():
            raise ValueError(f"beside: the {name} table repeats {key} values {sorted(frame.loc[frame[key].duplicated(), key])}")
    parts = {REPORTED: reported.set_index(key)[columns], reproduced_label(profile): reproduced.set_index(key)[columns]}
    return blocks(parts, list(reported[key]), "metric")


def table4(checkpoint_scores: pd.DataFrame) -> pd.DataFrame:
    """Best-F1 and final GRPO checkpoints per reward, in Table 4's layout."""
    rows = []
    for reward, t in checkpoint_scores.loc[checkpoint_scores["step"] > 0].groupby("reward"):
        for which, flag in (("best_f1", "is_best_f1"), ("final", "is_final")):
            r = t.loc[t[flag]].iloc[0]
            rows.append({"reward": reward, "checkpoint": which, "step": int(r["step"]), **{c: r[c] for c in SUMMARY_COLUMNS}})
    out = pd.DataFrame(rows)
    out["key"] = out["reward"] + " / " + out["checkpoint"]
    return out


def per_label_f1(frames: dict[str, tuple[np.ndarray, np.ndarray]], labels) -> pd.DataFrame:
    """Rows = labels, columns = models: per-label F1 from (y_true, y_pred) pairs."""
    return pd.DataFrame({name: metrics.per_label(t, p, labels)["f1"].to_numpy() for name, (t, p) in frames.items()},
                        index=list(labels))


def test_table(reproduced: pd.DataFrame, which: int, profile: str) -> pd.DataFrame:
    """Table 5/6 layout: label rows, then the Macro row (mean over labels, zeros included); the paper's model
    columns as one block, this run's as the next."""
    rep = reference.per_label_table(which)
    table = blocks({REPORTED: rep, reproduced_label(profile): reproduced}, list(rep.index), "model")
    macro = pd.concat({REPORTED: pd.Series(reference.reported_macro(which)),
                       reproduced_label(profile): reproduced.mean()})
    table.loc["Macro"] = macro.reindex(table.columns)
    return table.rename_axis("label")


def ci_summary(frames: dict[str, tuple[np.ndarray, np.ndarray]], dataset: str, n_boot: int, seed: int) -> pd.DataFrame:
    rows = []
    for name, (t, p) in frames.items():
        point, lo, hi = metrics.bootstrap_macro_f1(t, p, n_boot, seed)
        rows.append({"model": name, "dataset": dataset, "macro_f1": point, "lo": lo, "hi": hi, "n": len(t)})
    return pd.DataFrame(rows)


def age_band(age: float) -> str:
    if pd.isna(age):
        return "unknown"
    return "<40" if age < 40 else "40-59" if age < 60 else "60+"


def subgroup_scores(frame: pd.DataFrame, y_true: np.ndarray, preds: dict[str, np.ndarray], labels) -> pd.DataFrame:
    """Macro-F1 per sex and age band for each model (frame holds sex and age aligned with y_true)."""
    rows = []
    groups = {"sex": frame["sex"].fillna("unknown").astype(str), "age band": frame["age"].map(age_band)}
    for group, values in groups.items():
        for value in sorted(values.unique()):
            mask = (values == value).to_numpy()
            for model, y_pred in preds.items():
                table = metrics.per_label(y_true[mask], y_pred[mask], labels)
                rows.append({"model": model, "group": group, "value": value, "macro_f1": table["f1"].mean(),
                             "n": int(mask.sum())})
    return pd.DataFrame(rows)


def format_ranking(table: pd.DataFrame) -> pd.DataFrame:
    """Rank of each SFT format by macro-F1 within each model (1 = best), side by side."""
    ranks = table.pivot(index="format", columns="model", values="macro_f1").rank(ascending=False, method="min")
    return ranks.astype(int).reset_index()

