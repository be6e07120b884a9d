"""What the rewards pay for, the paired gain against the frozen policy, and answer statistics (pure functions)."""
import math
from types import SimpleNamespace

import pandas as pd
import pytest

from chexreason_utils.evaluation import reward_analysis as ra
from chexreason_utils.config import HardRewardConfig, NuancedRewardConfig

PREV = {"Edema": 0.1, "Pleural Effusion": 0.3, "Cardiomegaly": 0.2, "No Finding": 0.4}


def test_strategy_rewards_on_a_two_label_truth():
    table = ra.strategy_rewards([["Edema", "Pleural Effusion"]], PREV, ("No Finding",), HardRewardConfig(),
                                NuancedRewardConfig(min_window=100)).set_index("strategy")
    hard, short = table["hard (long answer)"], table["hard (short answer)"]
    assert hard["exact truth"] == 1.0 and short["exact truth"] == pytest.approx(0.9)
    assert hard["truth minus its rarest label"] == 0.5 and hard["only its commonest label"] == 0.5
    assert hard["truth plus a common wrong label"] == pytest.approx(2 / 3)
    assert hard["pool's commonest label set"] == 0.0 and short["pool's commonest label set"] == pytest.approx(-0.1)
    # the paper's hard formula scores an invalid output above a valid wrong short answer
    assert short["invalid output"] == 0.0 > short["pool's commonest label set"]
    nu = table["nuanced"]
    assert nu["exact truth"] == 150.0 and nu["truth minus its rarest label"] == pytest.approx(35.0)
    fp = 10 * math.sqrt(0.4 / 0.25)
    assert nu["truth plus a common wrong label"] == pytest.approx(30 + 20 * 2 / 3 - fp)
    assert nu["invalid output"] == -100.0
    assert table.loc["truth minus its rarest label", "labels per answer"] == 1.0


def test_collapse_guard_column_penalises_a_constant_answer():
    truths = [["Edema"]] * 30
    table = ra.strategy_rewards(truths, PREV, ("No Finding",), HardRewardConfig(),
                                NuancedRewardConfig(window=10, min_window=5)).set_index("strategy")
    # 25 of 30 answers come after the window filled: -30 (label) - 50 (set) each
    assert table.loc["pool's commonest label set", "nuanced"] - table.loc["pool's commonest label set",
                                                                          "nuanced with collapse guard"] == pytest.approx(80 * 25 / 30)


def test_mode_label_set_and_its_errors():
    assert ra.mode_label_set([["Edema"], ["Pleural Effusion", "Edema"], ["Edema", "Pleural Effusion"]]) == ("Edema", "Pleural Effusion")
    with pytest.raises(ValueError, match="at least one"):
        ra.mode_label_set([])


def test_moving_average_does_not_overweight_step_one():
    out = ra.moving_average(pd.Series([1.0, 0.0, 0.0, 0.0, 0.0]), 2)
    assert out.tolist() == [1.0, 0.5, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="window"):
        ra.moving_average(pd.Series([1.0]), 0)


def _run(gains, base=0.3):
    steps = list(range(1, len(gains) + 1))
    control = pd.DataFrame({"step": steps, "reward": [base] * len(steps)})
    log = pd.DataFrame({"step": steps + [steps[-1]], "reward": [base + g for g in gains] + [None]})
    return SimpleNamespace(log=log, control=control)


def test_paired_gain_by_quarter_over_seeds_and_its_sentence():
    runs = {"hard": {1: _run([0.1] * 8), 2: _run([0.3] * 8)}, "nuanced": {1: _run([-1.0] * 4 + [1.0] * 4)}}
    table = ra.gain_by_quarter(runs)
    hard = table.loc[table["reward"] == "hard"].set_index("quarter")
    assert list(hard.index) == [1, 2, 3, 4]
    assert hard.loc[4, "gain"] == pytest.approx(0.2) and hard.loc[4, "lo"] == pytest.approx(0.1)
    assert hard.loc[4, "hi"] == pytest.approx(0.3) and hard.loc[4, "n_seeds"] == 2
    assert hard.loc[4, "seed 1"] == pytest.approx(0.1) and hard.loc[4, "control"] == pytest.approx(0.3)
    nu = table.loc[table["reward"] == "nuanced"].set_index("quarter")["gain"]
    assert nu.tolist() == [-1.0, -1.0, 1.0, 1.0]
    assert "raised its reward" in ra.gain_sentence(table, "hard")
    mixed = ra.gain_by_quarter({"hard": {1: _run([0.2] * 4), 2: _run([-0.2] * 4)}})
    assert "not distinguishable" in ra.gain_sentence(mixed, "hard")
    fell = ra.gain_by_quarter({"hard": {1: _run([-0.2] * 4)}})
    assert "fell below" in ra.gain_sentence(fell, "hard") and "one seed" in ra.gain_sentence(fell, "hard")
    with pytest.raises(ValueError, match="frozen-policy control"):
        ra.paired_gain(_run([0.1]).log, None)


def test_answer_statistics_rare_and_common_recall():
    frame = pd.DataFrame({"truth": [["Edema", "No Finding"], ["Pleural Effusion"], ["Cardiomegaly"]],
                          "labels": [["No Finding"], ["Pleural Effusion"], ["Edema"]], "valid": [True, True, False]})
    stats = ra.answer_statistics({0: frame}, PREV, labels=("Edema", "Cardiomegaly", "Pleural Effusion", "No Finding"))
    row = stats.iloc[0]
    assert row["labels_per_answer"] == pytest.approx(2 / 3)       # the invalid answer counts as empty
    assert row["distinct_labels"] == 2
    assert row["recall_rare"] == 0.0                              # Edema, Cardiomegaly: none found
    assert row["recall_common"] == 1.0                            # Pleural Effusion, No Finding: both found
    assert row["fail_rate"] == pytest.approx(1 / 3)


def test_group_advantages_as_trl_computes_them_under_each_scale_rewards():
    group = [1.0, 0.0, 0.0, 0.0]                                  # mean 0.25; unbiased std sqrt(0.75 / 3) = 0.5
    centred = [0.75, -0.25, -0.25, -0.25]
    assert ra.group_advantages(group, "none") == pytest.approx(centred)          # Dr. GRPO: no division
    assert ra.group_advantages(group, "group") == pytest.approx([c / (0.5 + 1e-4) for c in centred])
    batch = group + [1.0, 1.0, 1.0, 1.0]                          # five 1s, three 0s: unbiased variance 15 / 56
    assert ra.group_advantages(group, "batch", batch) == pytest.approx([c / (math.sqrt(15 / 56) + 1e-4)
                                                                        for c in centred])
    assert ra.group_advantages([2.0, 2.0], "group").tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="batch_rewards"):
        ra.group_advantages(group, "batch")
    with pytest.raises(ValueError, match="group | batch | none"):
        ra.group_advantages(group, "per_token")


def test_group_advantages_match_trls_own_arithmetic():
    import torch
    from trl.trainer.utils import nanstd                          # what GRPOTrainer divides by
    group = torch.tensor([1.0, 0.0, 0.5, 0.0])
    expected = (group - group.mean()) / (nanstd(group) + 1e-4)
    assert ra.group_advantages(group.tolist(), "group") == pytest.approx(expected.tolist(), rel=1e-5)


def test_worked_example_advantages_follow_scale_rewards():
    texts = [ra.answer_text(["Edema"]), ra.answer_text(["Pleural Effusion"])]
    scaled = ra.worked_example(texts, [300, 300], ["Edema"], PREV, HardRewardConfig(), NuancedRewardConfig())
    plain = ra.worked_example(texts, [300, 300], ["Edema"], PREV, HardRewardConfig(), NuancedRewardConfig(),
                              scale_rewards="none")
    assert plain["hard advantage"].tolist() == pytest.approx((plain["hard"] - plain["hard"].mean()).tolist())
    assert abs(scaled["hard advantage"].iloc[0]) > abs(plain["hard advantage"].iloc[0])


def test_worked_example_scores_one_group_with_both_rewards():
    texts = [ra.answer_text(["Edema", "Pleural Effusion"]), ra.answer_text(["Pleural Effusion"]),
             ra.answer_text(["No Finding"]), ra.INVALID_TEXT]
    table = ra.worked_example(texts, [300, 300, 10, 5], ["Edema", "Pleural Effusion"], PREV, HardRewardConfig(),
                              NuancedRewardConfig())
    assert table["hard"].tolist() == pytest.approx([1.0, 0.5, -0.1, 0.0])
    assert table["nuanced"].tolist() == pytest.approx([150.0, 35.0, -10 * math.sqrt(1.6), -100.0])
    assert table["hard advantage"].iloc[0] > 0 > table["hard advantage"].iloc[2]
    assert "completion(s) 1, 2" in ra.advantage_sentence(table, "hard")
    same = ra.worked_example([texts[0]] * 4, [300] * 4, ["Edema"], PREV, HardRewardConfig(), NuancedRewardConfig())
    assert "no gradient" in ra.advantage_sentence(same, "nuanced")


def test_length_threshold_is_the_papers_in_paper_and_relative_in_tiny_profiles():
    from chexreason_utils.config import ConfigError, load_profile
    from chexreason_utils.training_runs import grpo as grpo_runs

    paper = load_profile("paper").grpo
    assert paper.hard.length_threshold == 250 and paper.hard.length_threshold_quantile == 0.0
    assert grpo_runs.resolve_length_threshold(load_profile("paper"), None, paper) is paper   # nothing measured
    for name in ("tiny", "smoke"):
        assert 0 < load_profile(name).grpo.hard.length_threshold_quantile < 1
    with pytest.raises(ConfigError, match="length_threshold_quantile = 1.5 is not allowed"):   # checked once, on load
        load_profile("paper", {"grpo.hard.length_threshold_quantile": 1.5})
    assert paper.num_iterations == 1 and paper.steps_per_generation == 1 and paper.frozen_control
    assert load_profile("tiny").diagnostics.ablation_num_iterations > 1


def test_grpo_figures_carry_raw_smoothed_control_and_seed_band():
    from chexreason_utils.report import figures

    def run(gains):
        r = _run(gains)
        r.log["rewards/hard_jaccard/mean"] = r.log["reward"]
        r.log["completions/mean_length"] = 20.0
        r.control["rewards/hard_jaccard/mean"] = r.control["reward"]
        return r

    runs = {1: run([0.0, 0.4, 0.4, 0.4]), 2: run([0.2] * 4)}
    _, data = figures.grpo_training(runs, "hard", window=2)
    seed1 = data.loc[data["seed"] == 1]
    assert seed1["reward (moving average)"].round(6).tolist() == [0.3, 0.5, 0.7, 0.7]
    assert seed1["control reward"].tolist() == [0.3] * 4
    _, gain = figures.paired_gain({"hard": runs}, window=2)
    assert gain.loc[gain["seed"] == 1, "gain_ma"].round(6).tolist() == [0.0, 0.2, 0.4, 0.4]
    assert set(gain["seed"]) == {1, 2}


@pytest.mark.parametrize("reward", ["hard", "nuanced"])
def test_term_by_term_rescores_what_the_trl_reward_functions_logged(reward):
    """A log of 30 completions scored by the very reward functions trl calls (one batch of 30: the nuanced collapse
    window fills, so later completions carry a collapse penalty): every completion's terms are recomputed exactly."""
    from chexreason_utils.train.rewards import CollapseGuard, hard_reward_functions, nuanced_reward_functions

    texts = ["<think>a</think><solution>Edema</solution>"] * 25 + ["<think>b</think><solution>Cardiomegaly, "
             "Edema</solution>", "no tags", "<think>c</think><solution>No Finding</solution>"] + \
            ["<think>d</think><solution>Edema</solution>"] * 2
    truth, lengths = ["Edema", "Pleural Effusion"], [3 + i % 5 for i in range(len(texts))]
    hard, nuanced = HardRewardConfig(length_threshold=5), NuancedRewardConfig(min_window=20)
    if reward == "hard":
        funcs = hard_reward_functions(hard)
    else:
        funcs = nuanced_reward_functions(nuanced, PREV, CollapseGuard(nuanced.window, nuanced.dominance,
                                         nuanced.excess_repetition, nuanced.collapse, nuanced.min_window))
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    batch = dict(completions=completions, completion_ids=[[0] * n for n in lengths], truth=[truth] * len(texts))
    log = pd.DataFrame({"completion": completions, **{f.__name__: f(**batch) for f in funcs}})
    if reward == "nuanced":
        assert (log["nuanced_collapse"] < 0).any() and (log["nuanced_collapse"] == 0).any()
    for i in range(len(texts)):
        table = ra.term_by_term(log, i, truth, reward, lengths[i], hard, nuanced, PREV).set_index("component")
        assert list(table.index) == [f.__name__ for f in funcs] + ["total"]
        assert table["recomputed"].tolist() == pytest.approx(table["logged"].tolist(), abs=1e-9)
        assert table.loc["total", "recomputed"] == pytest.approx(table["recomputed"].iloc[:-1].sum())
