"""Parser, rewards (hand-computed), metrics (hand-computed and against scikit-learn), paper numbers."""
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from chexreason_utils.evaluation import metrics
from chexreason_utils.evaluation import reference
from chexreason_utils.config import HardRewardConfig, NuancedRewardConfig
from chexreason_utils.prompts import PROMPT_VARIANTS, SFT_FORMATS, format_target, parse_output
from chexreason_utils.train.rewards import (CollapseGuard, balanced_accuracy, fp_weights, hard_components, hard_reward_functions,
                                           jaccard, nuanced_components, nuanced_reward_functions, per_label_components,
                                           per_label_reward_functions)

OK = "<think>Heart is large.</think><solution>Cardiomegaly, Pleural Effusion</solution>"


def test_nine_variants_and_four_formats():
    assert len(PROMPT_VARIANTS) == 9 and set(SFT_FORMATS) == {"only_label", "free_reasoning", "reasoning_narrative", "reasoning_a"}
    assert format_target("only_label", ["Edema"], "ignored") == "<solution>Edema</solution>"
    assert format_target("free_reasoning", [], "clear") == "<think>clear</think><solution>No Finding</solution>"


@pytest.mark.parametrize("text, think, labels, valid, reason", [
    (OK, True, ("Cardiomegaly", "Pleural Effusion"), True, ""),
    ("  " + OK + "\n", True, ("Cardiomegaly", "Pleural Effusion"), True, ""),
    ("<solution>edema,  no finding</solution>", False, ("Edema", "No Finding"), True, ""),
    ("<solution>Edema</solution>", True, ("Edema",), False, "missing <think> block"),
    ("<think>x</think>", True, (), False, "missing <solution> block"),
    ("<think>a</think><think>b</think><solution>Edema</solution>", True, ("Edema",), False, "duplicated <think> block"),
    ("<think>a</think><solution>Edema</solution><solution>Edema</solution>", True, ("Edema",), False, "duplicated <solution> block"),
    ("Sure! " + OK, True, ("Cardiomegaly", "Pleural Effusion"), False, "text outside blocks"),
    ("<think>a</think><solution>Edema, Effusion</solution>", True, ("Edema",), False, "unknown label: Effusion"),
    ("<think>a</think><solution>Edema, edema</solution>", True, ("Edema",), False, "duplicate label: Edema"),
    ("<solution>Edema</solution><think>a</think>", True, ("Edema",), False, "blocks out of order"),
    ("<think>a</think><solution>Edema</solution>", False, ("Edema",), False, "unexpected <think> block"),
    ("<think>a</think><solution></solution>", True, (), True, ""),
])
def test_parser_cases(text, think, labels, valid, reason):
    parsed = parse_output(text, think)
    assert parsed.labels == labels and parsed.valid == valid
    assert reason in parsed.reason


def test_hard_reward_hand_computed():
    cfg = HardRewardConfig(lambda_len=0.1, length_threshold=250, empty_jaccard=1.0)
    truth = {"Cardiomegaly", "Edema"}
    assert hard_components(parse_output(OK), 300, truth, cfg) == {"hard_jaccard": pytest.approx(1 / 3), "hard_length": 0.0}
    assert hard_components(parse_output(OK), 100, truth, cfg)["hard_length"] == -0.1          # short output
    assert hard_components(parse_output("no tags"), 300, truth, cfg) == {"hard_jaccard": 0.0, "hard_length": 0.0}
    assert jaccard(set(), set()) == 1.0 and jaccard(set(), set(), empty=0.0) == 0.0
    assert jaccard({"A"}, {"A"}) == 1.0
    fns = hard_reward_functions(HardRewardConfig(length_unit="chars", length_threshold=10))
    out = [f(completions=[[{"role": "assistant", "content": OK}]], completion_ids=[[1, 2]],
             truth=[["Cardiomegaly", "Pleural Effusion"]]) for f in fns]
    assert out == [[1.0], [0.0]] and [f.__name__ for f in fns] == ["hard_jaccard", "hard_length"]


def test_per_label_reward_prices_each_label_where_hard_prices_the_set():
    """Q1's registered example: a three-label image (14 labels), the commonest true label alone vs the truth plus
    one wrong label."""
    cfg = HardRewardConfig(lambda_len=0.1, length_threshold=250)
    truth = {"Lung Opacity", "Pleural Effusion", "Atelectasis"}
    alone = parse_output("<think>a</think><solution>Lung Opacity</solution>")
    plus_one = parse_output("<think>a</think><solution>Lung Opacity, Atelectasis, Pleural Effusion, Edema</solution>")
    assert per_label_components(alone, 300, truth, cfg)["per_label_accuracy"] == pytest.approx((1 / 3 + 1) / 2)   # 0.67
    assert per_label_components(plus_one, 300, truth, cfg)["per_label_accuracy"] == pytest.approx((1 + 10 / 11) / 2)
    assert hard_components(alone, 300, truth, cfg)["hard_jaccard"] == pytest.approx(1 / 3)
    assert hard_components(plus_one, 300, truth, cfg)["hard_jaccard"] == pytest.approx(3 / 4)
    assert per_label_components(alone, 100, truth, cfg) == {"per_label_accuracy": pytest.approx(2 / 3),
                                                            "per_label_length": -0.1}   # hard's length penalty
    assert per_label_components(parse_output("no tags"), 300, truth, cfg) == {"per_label_accuracy": 0.0,
                                                                              "per_label_length": 0.0}
    assert balanced_accuracy(set(), set()) == 1.0 and balanced_accuracy(set(), {"Edema"}) == pytest.approx(1 - 1 / 28)
    fns = per_label_reward_functions(HardRewardConfig(length_unit="chars", length_threshold=10))
    out = [f(completions=[[{"role": "assistant", "content": OK}]], completion_ids=[[1, 2]],
             truth=[["Cardiomegaly"]]) for f in fns]
    assert out == [[pytest.approx((1 + 12 / 13) / 2)], [0.0]]
    assert [f.__name__ for f in fns] == ["per_label_accuracy", "per_label_length"]


def test_nuanced_reward_hand_computed():
    cfg = NuancedRewardConfig()
    w = fp_weights({"Cardiomegaly": 0.2, "Edema": 0.1, "No Finding": 0.3, "Fracture": 0.0}, cfg.fp_base)
    assert w["No Finding"] > w["Cardiomegaly"] > w["Edema"]
    mean = 0.6 / 4
    assert w["Cardiomegaly"] == pytest.approx(10 * math.sqrt(0.2 / mean))
    exact = nuanced_components(parse_output("<think>a</think><solution>Edema</solution>"), {"Edema"}, cfg, w)
    assert exact == {"nuanced_match": 100.0, "nuanced_partial": 50.0, "nuanced_fp": 0.0, "nuanced_collapse": -0.0,
                     "nuanced_format": -0.0}
    partial = nuanced_components(parse_output("<think>a</think><solution>Edema, No Finding</solution>"),
                                 {"Edema", "Cardiomegaly"}, cfg, w)
    assert partial["nuanced_match"] == 0 and partial["nuanced_partial"] == pytest.approx(30 * 0.5 + 20 * 0.5)
    assert partial["nuanced_fp"] == pytest.approx(-w["No Finding"])
    bad = nuanced_components(parse_output("extra <think>a</think><solution>Edema, Edema, Foo, Bar</solution>"),
                             {"Edema"}, cfg, w)
    assert bad["nuanced_format"] == -(100 * 2 + 25 * 1 + cfg.extra_text)
    missing = nuanced_components(parse_output("Edema"), {"Edema"}, cfg, w)
    assert missing["nuanced_format"] == -cfg.missing_tags and missing["nuanced_partial"] == 0


def test_collapse_guard_crossing_seventy_percent_and_state_roundtrip(tmp_path):
    at_line = CollapseGuard(window=10, dominance=0.7, excess_repetition=30, collapse=50, min_window=10)
    for pred in [("No Finding",)] * 7 + [("Edema",)] * 3:
        assert at_line.observe(pred) == 0.0                 # silent until the window holds min_window
    assert at_line.dominance_index() == pytest.approx(0.7)
    assert at_line.penalty(("No Finding",)) == 0.0           # exactly 70%: not above
    guard = CollapseGuard(window=10, dominance=0.7, excess_repetition=30, collapse=50, min_window=10)
    for pred in [("No Finding",)] * 8 + [("Edema",)] * 2:
        guard.observe(pred)
    assert guard.dominance_index() == pytest.approx(0.8)
    assert guard.penalty(("No Finding", "Edema")) == 30.0     # one dominant label; this set is not dominant
    assert guard.penalty(("No Finding",)) == 30.0 + 50.0      # and this set is 8/10 of the window: collapse
    assert guard.penalty(("Edema",)) == 0.0
    guard.save(tmp_path / "w.json")
    other = CollapseGuard(window=10, min_window=10)
    other.load(tmp_path / "w.json")
    assert list(other.history) == list(guard.history)
    fns = nuanced_reward_functions(NuancedRewardConfig(min_window=1), {"Edema": 0.5, "No Finding": 0.5},
                                   CollapseGuard(min_window=1))
    batch = dict(completions=["<think>a</think><solution>Edema</solution>"] * 2, truth=[["Edema"]] * 2)
    totals = np.sum([f(**batch) for f in fns], axis=0)
    assert totals.tolist() == [150.0, 150.0 - 30.0 - 50.0]    # the second sees the first in the window


def test_metrics_against_hand_computation_and_sklearn():
    y_true = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    y_pred = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 0], [0, 0, 1]])
    s = metrics.summary(y_true, y_pred, ["a", "b", "c"], [True, True, False, True])
    # label a: tp1 fn1 -> f1 2/3; b: tp2 -> 1; c: tp1 fp1 fn1 -> 1/2
    assert s["macro_f1"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert s["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert s["micro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="micro", zero_division=0))
    assert s["fail_rate"] == 0.25
    zeros = metrics.per_label(np.array([[1, 0]]), np.array([[0, 0]]), ["x", "y"])
    assert zeros["f1"].tolist() == [0.0, 0.0]               # zeros count in the macro mean


def test_invalid_output_policy():
    frame = pd.DataFrame({"labels": [["Edema"], ["Edema"]], "valid": [True, False]})
    assert metrics.prediction_matrix(frame, ["Edema"], "empty").ravel().tolist() == [1, 0]
    assert metrics.prediction_matrix(frame, ["Edema"], "salvage").ravel().tolist() == [1, 1]
    with pytest.raises(ValueError, match="unknown invalid-output policy"):
        metrics.prediction_matrix(frame, ["Edema"], "ignore")


def test_bootstrap_intervals_and_paired_differences():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (300, 5))
    noisy = np.where(rng.random(y.shape) < 0.2, 1 - y, y)
    worse = np.where(rng.random(y.shape) < 0.4, 1 - y, y)
    ci = metrics.bootstrap_macro_f1(y, noisy, 1000, seed=1)
    assert ci["lo"] < ci["effect"] < ci["hi"] and ci["hi"] - ci["lo"] < 0.15
    assert ci["effect"] == pytest.approx(f1_score(y, noisy, average="macro"))
    assert metrics.bootstrap_macro_f1(y, noisy, 1000, seed=1) == ci        # seeded
    d = metrics.paired_bootstrap(y, worse, noisy, 1000, seed=1)
    assert d["effect"] > 0 and d["lo"] > 0 and d["prob_improvement"] == 1.0      # one seed each: b beats a
    g = metrics.gap_change((y, worse, noisy), (y, worse, worse), 1000, seed=1)
    assert g["effect"] == pytest.approx(d["effect"]) and g["lo"] > 0


def test_paper_macro_numbers_follow_from_the_per_label_columns():
    """Tables 5-6: the macro row is the plain mean of the per-label F1 (zeros included), to 3 decimals.

    The per-label values are themselves rounded, so the mean can sit up to 0.0006 from the printed macro
    (NV-Reason-CXR-3B on NIH: mean .2976, printed .297)."""
    for which in (5, 6):
        means = reference.per_label_table(which).mean()
        for model, macro in reference.reported_macro(which).items():
            assert abs(means[model] - macro) <= 0.0006, (which, model)
    assert reference.per_label_table(5).shape == (14, 5) and reference.per_label_table(6).shape == (9, 5)
    assert len(reference.TABLE1) == 9 and set(reference.TABLE4["reward"]) == {"hard", "nuanced"}


def test_every_configurable_reward_has_one_factory_and_only_nuanced_has_a_collapse_guard():
    from chexreason_utils import config
    from chexreason_utils.train.rewards import REWARD_FACTORIES, reward_functions

    assert tuple(REWARD_FACTORIES) == config.REWARDS
    grpo = config.load_profile("smoke").grpo
    for name in config.REWARDS:
        funcs, guard = reward_functions(name, grpo, {"Edema": 0.5, "No Finding": 0.5})
        assert funcs and all(f.__name__.startswith(name) for f in funcs)
        assert (guard is not None) == (name == "nuanced")
    with pytest.raises(ValueError, match="unknown reward 'soft'; choose one of hard, nuanced, per_label"):
        reward_functions("soft", grpo, {})
