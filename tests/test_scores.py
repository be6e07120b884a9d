"""The scores frame: per-label, micro and macro rows per seed, the mean over seeds with its CI, and the summary view."""
import numpy as np
import pytest

from chexreason_utils import metrics, scores

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
    assert list(frame["seed"].unique()) == ["0", "1", "mean"]
    assert len(frame) == 3 * (len(LABELS) + 2)
    seed0 = frame.loc[frame["seed"] == "0"].set_index("label")
    assert seed0.loc["A", "f1"] == 1.0 and seed0.loc["B", "f1"] == pytest.approx(2 / 3) and seed0.loc["C", "f1"] == 0
    assert seed0.loc["macro", "f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert seed0.loc["micro", "f1"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 2))   # tp 3, fp 0, fn 2
    assert seed0.loc["B", "support"] == 2
    mean = frame.loc[frame["seed"] == "mean"].set_index("label")
    assert mean.loc["macro", "f1"] == pytest.approx(((1 + 2 / 3) / 3 + 1) / 2)
    ci = metrics.bootstrap_macro_f1(TRUTH, [SEED0, SEED1], 200, 0)
    assert (mean.loc["macro", "lo"], mean.loc["macro", "hi"]) == pytest.approx((ci["lo"], ci["hi"]))
    assert mean.loc["A", ["lo", "hi"]].isna().all()
    assert (frame[list(ENTRY)].iloc[0].to_dict()) == ENTRY


def test_fixed_model_has_only_the_mean_row_and_fail_rate_counts_invalid():
    frame = _frame({None: SEED0}, {None: np.array([True, False, True, True])})
    assert set(frame["seed"]) == {"mean"}
    summary = scores.summaries(frame)
    assert len(summary) == 1
    assert summary["fail_rate"].iloc[0] == pytest.approx(0.25)
    assert summary["macro_f1"].iloc[0] == pytest.approx((1 + 2 / 3) / 3)


def test_summaries_one_row_per_entry_and_seed_and_select_names_a_missing_selection():
    frame = _frame({0: SEED0, 1: SEED1})
    summary = scores.summaries(frame)
    assert list(summary["seed"]) == ["0", "1", "mean"]
    assert summary.set_index("seed").loc["1", "macro_f1"] == 1.0
    assert set(scores.SUMMARY_COLUMNS) <= set(summary.columns)
    assert len(scores.select(frame, seed="mean", label=["micro", "macro"])) == 2
    with pytest.raises(LookupError, match="NIH"):
        scores.select(frame, dataset="NIH")
