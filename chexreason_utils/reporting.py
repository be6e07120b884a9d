"""Tables 1-6 in the paper's layout, reported (paper) beside reproduced (this run, profile named), plus the
bootstrap summaries the evaluation figures use."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import metrics, reference

SUMMARY_COLUMNS = ["micro_p", "micro_r", "micro_f1", "macro_p", "macro_r", "macro_f1", "fail_rate"]


def over_seeds(frame: pd.DataFrame, key: str, columns: list[str]) -> pd.DataFrame:
    """One row per key: each column's mean over training seeds (``<col> | mean``), then each seed's value
    (``<col> | seed <s>``). Rows without a seed (a fixed base model) are one value: their mean, no seed columns."""
    mean = frame.groupby(key, sort=False)[columns].mean().add_suffix(" | mean")
    seeded = frame.loc[frame["seed"].notna()] if "seed" in frame else frame.iloc[0:0]
    parts = [mean]
    for s, t in seeded.groupby("seed", sort=True):
        parts.append(t.set_index(key)[columns].add_suffix(f" | seed {int(s)}"))
    return pd.concat(parts, axis=1).reset_index()


def beside(reproduced: pd.DataFrame, reported: pd.DataFrame, key: str, profile: str,
           columns: list[str]) -> pd.DataFrame:
    """One row per key, each metric as 'reported (paper)', 'reproduced (<profile>, mean of N seeds)' and one
    column per training seed."""
    wide = over_seeds(reproduced, key, columns).set_index(key)
    n = reproduced["seed"].nunique() if "seed" in reproduced else 0
    label = f"reproduced ({profile}, mean of {n} seeds)" if n > 1 else f"reproduced ({profile})"
    left = reported.set_index(key)[columns].add_suffix(" | reported (paper)")
    right = wide[[f"{c} | mean" for c in columns]].set_axis([f"{c} | {label}" for c in columns], axis=1)
    per_seed = wide.drop(columns=[f"{c} | mean" for c in columns])
    out = left.join(right, how="outer").join(per_seed, how="left")
    order = [c for m in columns for c in (f"{m} | reported (paper)", f"{m} | {label}",
                                          *[p for p in per_seed.columns if p.startswith(f"{m} | seed ")])]
    return out[order].reset_index()


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


def test_table(per_seed: dict[int, pd.DataFrame], which: int, profile: str, fixed: tuple[str, ...]) -> pd.DataFrame:
    """Table 5/6 layout: per-label F1 and the macro row; per model the reported column, the mean over training
    seeds and each seed's column (none for the ``fixed`` models, which do not depend on the seed)."""
    rep = reference.per_label_table(which)
    rep.loc["Macro"] = pd.Series(reference.reported_macro(which))
    tables = {s: t.copy() for s, t in per_seed.items()}
    for t in tables.values():
        t.loc["Macro"] = t.mean()
    mean = sum(tables.values()) / len(tables)
    n = len(tables)
    out = rep.add_suffix(" | reported (paper)").join(
        mean.add_suffix(f" | reproduced ({profile}, mean of {n} seed{'s' if n != 1 else ''})"), how="outer")
    for s, t in tables.items():
        out = out.join(t.drop(columns=[c for c in fixed if c in t]).add_suffix(f" | seed {s}"), how="left")
    models = [c for c in rep.columns] + [c for c in mean.columns if c not in rep.columns]
    order = [c for m in models for c in out.columns if c.split(" | ")[0] == m]
    return out.loc[list(rep.index), order].reset_index(names="label")


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
