"""Tables 1-6 in the paper's layout, reported (paper) beside reproduced (this run, profile named), the headline
and per-label views, the checkpoint curve and the paired differences: all built from the evaluation's scores
frame and contrasts (``scores``, ``steps.evaluation``) and nothing else.

A comparison table has the paper's rows (formats, variants, checkpoints or labels) as its index and two-level
columns ``(source, metric)``: one block of columns per source, ``reported (paper)`` first, then
``reproduced (<profile>)``. More blocks (e.g. one per seed, or a mean over seeds) are further sources beside
them; ``plotting.save_table`` writes any number of blocks as grouped LaTeX columns and flat Markdown/CSV.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import CHECKPOINT_CHOICES
from ..evaluation import metrics, scores
from ..evaluation import reference
from ..paths import is_checkpoint_name

SUMMARY_COLUMNS = scores.SUMMARY_COLUMNS
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


TEST_COLUMNS = {"MedGemma base": {"stage": "base", "model": "medical"}, "Qwen2.5-VL": {"stage": "base", "model": "general"},
                "MedGemma SFT": {"stage": "sft", "model": "medical"}}   # + "ChexReason": the chosen GRPO checkpoint
STAGE_NAMES = {"MedGemma base": "base", "MedGemma SFT": "SFT", "ChexReason": "GRPO"}   # the headline's bars
REFERENCE_PREFIX = "image-only CNN, "   # the supervised image reference's rows in the headline (``reference_name``)
REFERENCE_BLOCK = "image-only CNN"      # and its block in Tables 5-6, one column per training set
BASELINE_PREFIX = "baseline: "   # reference rows and columns of the trivial baselines (``scores.BASELINES``)


def seed_rows(frame: pd.DataFrame, **keys) -> pd.DataFrame:
    """Summary rows (``scores.summaries``) of the entries with ``keys``, one per entry and training seed (``seed``
    an int; a fixed model's one row has none)."""
    rows = scores.summaries(scores.select(frame, **keys))
    entry = rows[scores.KEYS].astype(object).fillna("").astype(str).agg("|".join, axis=1)
    one_seed = rows["aggregate"] == scores.SEED
    keep = rows.loc[one_seed | ~entry.isin(set(entry[one_seed]))].copy()
    keep["seed"] = keep["seed"].astype(float)   # NaN: a fixed model
    return keep.drop(columns="aggregate").reset_index(drop=True)


def mean_and_seed_rows(frame: pd.DataFrame, **keys) -> pd.DataFrame:
    """Summary rows of the entries with ``keys``: the mean over seeds (``aggregate`` "mean", with the macro-F1 CI)
    and each training seed (``aggregate`` "seed")."""
    return scores.summaries(scores.select(frame, **keys)).reset_index(drop=True)


def table1(frame: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Table 1: zero-shot prompt variants of the medical base model on validation, beside the paper's, and the
    trivial baselines as reference rows (as in Tables 2-4)."""
    rows = seed_rows(frame, dataset="validation", stage="base", model="medical").rename(columns={"name": "variant"})
    columns = ["micro_f1", "macro_f1", "fail_rate"]
    return with_baselines(beside(rows, reference.TABLE1, "variant", profile, columns), frame, "validation", columns)


def sft_table(frame: pd.DataFrame, model: str, profile: str) -> pd.DataFrame:
    """Table 2 (medical) or 3 (general): SFT formats on validation, beside the paper's; empty when the profile
    does not fine-tune that model."""
    reported = reference.TABLE2 if model == "medical" else reference.TABLE3
    trained = (frame["dataset"] == "validation") & (frame["stage"] == "sft") & (frame["model"] == model)
    rows = (seed_rows(frame, dataset="validation", stage="sft", model=model) if trained.any()
            else pd.DataFrame(columns=["name", "seed", *SUMMARY_COLUMNS])).rename(columns={"name": "format"})
    return with_baselines(beside(rows, reported, "format", profile, SUMMARY_COLUMNS), frame, "validation",
                          SUMMARY_COLUMNS)


def table4(frame: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Table 4: the best-F1 and final GRPO checkpoint of each reward on validation, per seed, beside the paper's
    (rows "<reward> / <checkpoint>")."""
    rows = seed_rows(frame, dataset="validation", stage="grpo", checkpoint=list(CHECKPOINT_CHOICES))
    rows = rows.assign(key=rows["name"] + " / " + rows["checkpoint"])
    reported = reference.TABLE4.assign(key=reference.TABLE4["reward"] + " / " + reference.TABLE4["checkpoint"])
    return with_baselines(beside(rows, reported, "key", profile, SUMMARY_COLUMNS), frame, "validation",
                          SUMMARY_COLUMNS)


def fixed_columns(frame: pd.DataFrame, dataset: str) -> tuple[str, ...]:
    """The test-table base columns that do not depend on the training seed: entries without seed rows (the paper's
    hub bases; the tiny profiles build one base per seed)."""
    rows = scores.select(frame, dataset=dataset)
    return tuple(column for column, keys in TEST_COLUMNS.items()
                 if not (scores.select(rows, **keys)["aggregate"] == scores.SEED).any())


def test_columns(frame: pd.DataFrame, dataset: str, chexreason: dict) -> dict[int, pd.DataFrame]:
    """Per training seed: label rows x the paper's model columns of per-label F1 on one test set; a fixed model's
    column is the same in every seed. ``chexreason`` selects the GRPO entry (``name``, ``checkpoint``)."""
    columns = {**TEST_COLUMNS, "ChexReason": {"stage": "grpo", **chexreason}}
    rows = scores.select(frame, dataset=dataset)
    rows = rows.loc[~rows["label"].isin(["micro", "macro"])]
    seeds = sorted(int(s) for s in rows.loc[rows["aggregate"] == scores.SEED, "seed"].unique())
    out = {}
    for seed in seeds:
        part = {}
        for column, keys in columns.items():
            chosen = scores.select(rows, **keys)
            one = chosen.loc[chosen["seed"].eq(seed).fillna(False).astype(bool)]
            part[column] = (one if len(one) else chosen.loc[chosen["aggregate"] == scores.MEAN]).set_index("label")["f1"]
        out[seed] = pd.DataFrame(part)
    return out


def headline_summary(frame: pd.DataFrame, chexreason: dict) -> pd.DataFrame:
    """Macro-F1 of the medical model before and after each stage on every test set: the mean over seeds with the
    95% seed x image CI (``aggregate`` "mean") and each seed, the supervised image-only reference likewise
    (``reference_name``), and the trivial baselines (``model`` "baseline: <name>") as reference (columns model,
    dataset, seed, aggregate, macro_f1, lo, hi, n)."""
    columns = {"MedGemma base": TEST_COLUMNS["MedGemma base"], "MedGemma SFT": TEST_COLUMNS["MedGemma SFT"],
               "ChexReason": {"stage": "grpo", **chexreason}}
    parts = [mean_and_seed_rows(frame, dataset=ds, **keys).assign(model=STAGE_NAMES[column])
             for ds in test_sets(frame) for column, keys in columns.items()]
    for ds in test_sets(frame):
        parts += [mean_and_seed_rows(frame, dataset=ds, **scores.REFERENCE, name=name).assign(model=reference_name(name))
                  for name in reference_names(frame)]
        base = baseline_rows(frame, ds)
        parts.append(base.assign(model=BASELINE_PREFIX + base["name"], aggregate=scores.MEAN))
    out = pd.concat(parts, ignore_index=True).rename(columns={"n_images": "n"})
    return out[["model", "dataset", "seed", "aggregate", "macro_f1", "lo", "hi", "n"]]


def per_label_columns(frame: pd.DataFrame, dataset: str, chexreason: dict) -> pd.DataFrame:
    """Per-label F1 on one test set, one column per model and training seed (one column for a ``fixed_columns``
    model)."""
    by_seed = test_columns(frame, dataset, chexreason)
    fixed = fixed_columns(frame, dataset)
    out = {}
    for seed, table in by_seed.items():
        for column in table:
            name = STAGE_NAMES.get(column, column)
            out[name if column in fixed else f"{name} · seed {seed}"] = table[column]
    return pd.DataFrame(out)


def test_sets(frame: pd.DataFrame) -> list[str]:
    """The test sets a scores frame holds, in table order (``metrics.TEST_DATASETS``)."""
    return [d for d in metrics.TEST_DATASETS if (frame["dataset"] == d).any()]


def checkpoint_curve(frame: pd.DataFrame, datasets=None) -> pd.DataFrame:
    """Micro / macro-F1 and fail rate of the SFT start (step 0) and every scored GRPO checkpoint, per reward run,
    test set (``datasets``; None: every test set of the frame) and seed (columns reward, seed, step, dataset,
    macro_f1, micro_f1, fail_rate)."""
    datasets = test_sets(frame) if datasets is None else datasets
    steps = seed_rows(frame, dataset=list(datasets), stage="grpo")
    steps = steps.loc[steps["checkpoint"].map(is_checkpoint_name)]
    start = seed_rows(frame, dataset=list(datasets), stage="sft", model="medical")
    parts = [steps.assign(reward=steps["name"])] + [start.assign(reward=r) for r in steps["name"].unique()]
    curve = pd.concat(parts, ignore_index=True)
    curve["step"] = curve["step"].astype(int)
    cols = ["reward", "seed", "step", "dataset", "macro_f1", "micro_f1", "fail_rate"]
    return curve[cols].sort_values(["reward", "dataset", "seed", "step"]).reset_index(drop=True)


def paired_differences(contrasts: pd.DataFrame) -> pd.DataFrame:
    """The SFT -> GRPO macro-F1 differences and the gap change (mean over seeds, 95% seed x image CI) with the
    probability of improvement (share of seed pairs in which GRPO beats SFT)."""
    rows = contrasts.loc[contrasts["kind"] == "paired difference"]
    return rows.rename(columns={"contrast": "comparison"})[["comparison", "effect", "lo", "hi", "prob_improvement",
                                                            "per_seed", "seeds"]].reset_index(drop=True)


def floor_criterion(frame: pd.DataFrame) -> pd.DataFrame:
    """The criterion "every SFT entry of both models beats the best trivial baseline on validation in every
    seed": one row per model x format x seed with its macro-F1, distinct label sets, the best baseline and its CI
    upper bound, and pass (``scores.floor_reason`` is empty) or the reason it fails."""
    best = scores.best_baseline(frame, "validation")
    rows = seed_rows(frame, dataset="validation", stage="sft").rename(columns={"name": "format"})
    reasons = [scores.floor_reason(f1, n, best) for f1, n in zip(rows["macro_f1"], rows["distinct_sets"])]
    out = rows[["model", "format", "seed", "macro_f1", "distinct_sets"]].assign(
        best_baseline=best["name"], baseline_macro_f1=best["f1"], baseline_hi=best["hi"],
        passes=[not r for r in reasons], reason=reasons)
    return out.sort_values(["model", "format", "seed"]).reset_index(drop=True)


def baseline_rows(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The trivial baselines on ``dataset`` as summary rows (``scores.summaries``; fixed, so no seed)."""
    rows = scores.summaries(scores.select(frame, dataset=dataset, **scores.BASELINE))
    return rows.assign(seed=np.nan).reset_index(drop=True)


def with_baselines(table: pd.DataFrame, frame: pd.DataFrame, dataset: str, columns: list[str]) -> pd.DataFrame:
    """``table`` with one reference row per trivial baseline on ``dataset`` (``baseline: <name>``), its values
    in every reproduced block (it does not depend on the seed) and none in the paper's."""
    base = baseline_rows(frame, dataset).set_index("name")
    extra = pd.DataFrame(np.nan, index=[BASELINE_PREFIX + n for n in base.index], columns=table.columns)
    for source in table.columns.get_level_values(0).unique():
        if source == REPORTED:
            continue
        for metric in table[source].columns:
            if metric in base:
                extra[(source, metric)] = base[metric].to_numpy()
    return pd.concat([table, extra.rename_axis(table.index.name)])


def format_f1(frame: pd.DataFrame) -> pd.DataFrame:
    """Validation macro-F1 per model and SFT format: the mean over seeds with its CI (``aggregate`` "mean") and
    each seed (columns model, format, seed, aggregate, macro_f1, lo, hi)."""
    rows = mean_and_seed_rows(frame, dataset="validation", stage="sft")
    return rows.rename(columns={"name": "format"})[["model", "format", "seed", "aggregate", "macro_f1", "lo", "hi"]]


def baseline_columns(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per-label F1 of each trivial baseline on ``dataset``: label rows, one column per baseline."""
    rows = scores.select(frame, dataset=dataset, **scores.BASELINE)
    rows = rows.loc[~rows["label"].isin(["micro", "macro"])]
    return rows.pivot(index="label", columns="name", values="f1").reindex(columns=list(scores.BASELINES))


def reference_names(frame: pd.DataFrame) -> list[str]:
    """The supervised image-only reference's entries in a scores frame (``scores.REFERENCES``; none when
    ``reference.enabled`` was off)."""
    return [n for n in scores.REFERENCES if ((frame["stage"] == scores.REFERENCE["stage"]) & (frame["name"] == n)).any()]


def reference_name(name: str) -> str:
    """How tables and figures name the reference trained on ``name``."""
    return f"{REFERENCE_PREFIX}{name}"


def reference_columns(frame: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per-label F1 of the supervised image-only reference on ``dataset``, mean over training seeds: label rows, one
    column per training set (empty when there is none)."""
    rows = frame.loc[(frame["dataset"] == dataset) & (frame["stage"] == scores.REFERENCE["stage"])
                     & (frame["aggregate"] == scores.MEAN) & ~frame["label"].isin(["micro", "macro"])]
    return rows.pivot(index="label", columns="name", values="f1").reindex(columns=reference_names(frame))


def test_table(per_seed: dict[int, pd.DataFrame], which: int | None, profile: str, fixed: tuple[str, ...] = (),
               baselines: pd.DataFrame | None = None, references: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 5/6 layout: label rows, then the Macro row (mean over labels, zeros included); the paper's model
    columns (Table ``which``; None: a test set the paper did not score, PadChest) as one block, this run's (mean
    over training seeds) as the next, then one block per seed without the ``fixed`` models, which do not depend on
    the seed, then the supervised image-only ``references`` (``reference_columns``, mean over seeds) and the
    ``baselines`` (``baseline_columns``) as reference blocks."""
    n = len(per_seed)
    mean = sum(per_seed.values()) / n
    rep = reference.per_label_table(which) if which is not None else pd.DataFrame(index=mean.index)
    parts = {REPORTED: rep, reproduced_label(profile, n): mean} if which is not None else {reproduced_label(profile, n): mean}
    if n > 1:
        parts.update({f"seed {s}": t.drop(columns=[c for c in fixed if c in t]) for s, t in per_seed.items()})
    if references is not None and len(references.columns):
        parts[REFERENCE_BLOCK] = references
    if baselines is not None:
        parts["trivial baselines"] = baselines
    table = blocks(parts, list(rep.index), "model")
    reported = {REPORTED: pd.Series(reference.reported_macro(which))} if which is not None else {}
    macro = pd.concat({**reported, **{name: part.mean() for name, part in parts.items() if name != REPORTED}})
    table.loc["Macro"] = macro.reindex(table.columns)
    return table.rename_axis("label")


AGE_BANDS = ("<40", "40-59", "60+", "unknown")   # youngest first: the order tables and figures show them in


def age_band(age: float) -> str:
    if pd.isna(age):
        return AGE_BANDS[-1]
    return AGE_BANDS[0] if age < 40 else AGE_BANDS[1] if age < 60 else AGE_BANDS[2]


def subgroup_scores(frame: pd.DataFrame, y_true: np.ndarray, preds: dict[str, dict[int, np.ndarray]],
                    labels) -> pd.DataFrame:
    """Macro-F1 per sex and age band for each model and training seed (frame holds sex and age aligned with
    y_true; ``preds`` is model -> seed -> prediction matrix)."""
    rows = []
    groups = {"sex": frame["sex"].fillna("unknown").astype(str), "age band": frame["age"].map(age_band)}
    for group, values in groups.items():
        present = set(values)
        for value in [v for v in AGE_BANDS if v in present] if group == "age band" else sorted(present):
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
