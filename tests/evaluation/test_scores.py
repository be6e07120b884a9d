"""The scores frame: per-label, micro and macro rows per seed, the mean over seeds with its CI, and the summary view."""
import numpy as np
import pandas as pd
import pytest

from chexreason_utils.evaluation import metrics, scores
from chexreason_utils.labels import CHEXPERT_LABELS as CX

LABELS = ("A", "B", "C")
TRUTH = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.int8)
SEED0 = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=np.int8)   # A: 2/2, B: 1 of 2, C: 0
SEED1 = TRUTH.copy()                                                               # perfect
ENTRY = dict(dataset="CheXpert", model="medical", stage="sft", name="free_reasoning", checkpoint="sft", step=0,
             prompt="free_reasoning")


def _frame(preds, valid=None):
    valid = valid or {s: np.ones(4, bool) for s in preds}
    return scores.entry_scores(ENTRY, TRUTH, preds, valid, LABELS, n_boot=200, boot_seed=0)


def test_rows_per_seed_and_mean_with_hand_computed_values():
    frame = _frame({0: SEED0, 1: SEED1})
    assert list(frame["aggregate"].unique()) == ["seed", "mean"] and frame["seed"].dtype == "Int64"
    assert list(frame["seed"].dropna().unique()) == [0, 1] and frame.loc[frame["aggregate"] == "mean", "seed"].isna().all()
    assert len(frame) == 3 * (len(LABELS) + 2)
    seed0 = scores.select(frame, seed=0).set_index("label")          # an integer seed; the mean row has none
    assert seed0.loc["A", "f1"] == 1.0 and seed0.loc["B", "f1"] == pytest.approx(2 / 3) and seed0.loc["C", "f1"] == 0
    assert seed0.loc["macro", "f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert seed0.loc["micro", "f1"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 2))   # tp 3, fp 0, fn 2
    assert seed0.loc["B", "support"] == 2
    mean = frame.loc[frame["aggregate"] == "mean"].set_index("label")
    assert mean.loc["macro", "f1"] == pytest.approx(((1 + 2 / 3) / 3 + 1) / 2)
    ci = metrics.bootstrap_macro_f1(TRUTH, [SEED0, SEED1], 200, 0)
    assert (mean.loc["macro", "lo"], mean.loc["macro", "hi"]) == pytest.approx((ci["lo"], ci["hi"]))
    assert mean.loc["A", ["lo", "hi"]].isna().all()
    assert (frame[list(ENTRY)].iloc[0].to_dict()) == ENTRY


def test_fixed_model_has_only_the_mean_row_and_fail_rate_counts_invalid():
    frame = _frame({None: SEED0}, {None: np.array([True, False, True, True])})
    assert set(frame["aggregate"]) == {"mean"} and frame["seed"].isna().all()
    summary = scores.summaries(frame)
    assert len(summary) == 1
    assert summary["fail_rate"].iloc[0] == pytest.approx(0.25)
    assert summary["macro_f1"].iloc[0] == pytest.approx((1 + 2 / 3) / 3)


def test_summaries_one_row_per_entry_and_seed_and_select_names_a_missing_selection():
    frame = _frame({0: SEED0, 1: SEED1})
    summary = scores.summaries(frame)
    assert list(summary["seed"].fillna(-1)) == [0, 1, -1] and list(summary["aggregate"]) == ["seed", "seed", "mean"]
    assert scores.select(summary, seed=1)["macro_f1"].item() == 1.0
    assert set(scores.SUMMARY_COLUMNS) <= set(summary.columns)
    assert len(scores.select(frame, aggregate="mean", label=["micro", "macro"])) == 2
    with pytest.raises(LookupError, match="NIH"):
        scores.select(frame, dataset="NIH")


def _validation_frame(rng, n=200):
    """A synthetic validation scores frame: the baselines and two SFT formats of two models over 3 seeds; the
    general model's only_label answers one constant label set in every seed (a floor)."""
    y = (rng.random((n, len(CX))) < 0.15).astype(np.int8)
    good = lambda: np.where(rng.random(y.shape) < 0.05, 1 - y, y)  # noqa: E731
    constant = np.broadcast_to(y[0], y.shape)
    parts = [scores.baseline_scores("validation", y, CX, [["Edema"], ["Edema"], []], 200, 0)]
    for model, fmt, make in (("medical", "only_label", good), ("medical", "reasoning_a", good),
                             ("general", "only_label", lambda: constant), ("general", "reasoning_a", good)):
        keys = {**ENTRY, "dataset": "validation", "model": model, "name": fmt, "prompt": fmt}
        preds = {s: make() for s in range(3)}
        parts.append(scores.entry_scores(keys, y, preds, {s: np.ones(n, bool) for s in preds}, CX, 200, 0))
    return y, pd.concat(parts, ignore_index=True)


def test_trivial_baselines_have_their_known_scores():
    rng = np.random.default_rng(0)
    y, frame = _validation_frame(rng)
    base = frame.loc[(frame["stage"] == "baseline") & (frame["label"] == "macro")].set_index("name")
    assert list(base.index) == list(scores.BASELINES) and (base["aggregate"] == scores.MEAN).all()
    nf = CX.index("No Finding")                                  # always No Finding: F1 only on that label
    p = y[:, nf].mean()
    assert base.loc["always No Finding", "f1"] == pytest.approx(2 * p / (1 + p) / len(CX))
    e = CX.index("Edema")                                        # the pool's commonest set is {Edema}
    assert base.loc["SFT pool's commonest label set", "f1"] == pytest.approx(2 * y[:, e].mean() / (1 + y[:, e].mean()) / len(CX))
    # prevalence-matched random guessing: the F1 of the expected counts is each label's prevalence
    assert base.loc["prevalence-matched random", "f1"] == pytest.approx(y.mean(axis=0).mean())
    assert base.loc["always No Finding", "distinct_sets"] == 1 and np.isnan(base.loc["prevalence-matched random", "distinct_sets"])
    assert (base["lo"] < base["f1"]).all() and (base["f1"] < base["hi"]).all()
    assert scores.best_baseline(frame, "validation")["name"] == "prevalence-matched random"
    with pytest.raises(LookupError, match="no trivial baseline on 'NIH'"):
        scores.best_baseline(frame, "NIH")


def test_the_floor_rule_names_the_entry_and_its_reason():
    best = pd.Series({"name": "always No Finding", "f1": 0.04, "hi": 0.05})
    assert scores.floor_reason(0.30, 12, best) == ""
    assert "does not exceed 'always No Finding'" in scores.floor_reason(0.05, 12, best)   # at the CI bound: floor
    assert scores.floor_reason(0.30, 2, best) == "answers with 2 distinct label set(s)"
    _, frame = _validation_frame(np.random.default_rng(1))
    found = scores.entries_at_floor(frame, dataset="validation", stage="sft")
    assert found.startswith("on validation") and "general sft only_label (sft) macro-F1" in found
    assert "1 distinct label set" in found and found.count("on validation") == 1    # each reason said once
    both = scores.entries_at_floor(frame, {"dataset": "validation", "stage": "sft", "model": "general"},
                                   {"dataset": "validation", "stage": "sft", "name": "only_label"})
    assert both.count("on validation") == 1 and both.count("general sft only_label (sft)") == 1   # across selections
    assert "medical" not in found and "reasoning_a" not in found
    assert scores.entries_at_floor(frame, dataset="validation", stage="sft", model="medical") == ""


def test_floor_criterion_table_one_row_per_model_format_seed(tmp_path):
    from chexreason_utils.report import reporting
    from chexreason_utils.paths import RunPaths
    from chexreason_utils.steps import evaluation
    _, frame = _validation_frame(np.random.default_rng(2))
    paths = RunPaths.for_profile("smoke", tmp_path, tmp_path / "fig")
    paths.evaluation.mkdir(parents=True)
    reporting.floor_criterion(frame).to_csv(paths.floor_criterion_file, index=False)
    table = evaluation.read_floor_criterion(paths)
    assert len(table) == 2 * 2 * 3 and set(table["seed"]) == {0, 1, 2}
    failing = table.loc[~table["passes"]]
    assert set(zip(failing["model"], failing["format"])) == {("general", "only_label")} and len(failing) == 3
    assert (table["best_baseline"] == "prevalence-matched random").all()
    assert failing["reason"].str.contains("distinct label set").all() and (table.loc[table["passes"], "reason"] == "").all()
