"""What the GRPO rewards pay for, and what GRPO gained against its frozen-policy control.

- ``strategy_rewards``: expected hard and nuanced reward (and macro-F1) of named answer strategies on a set of
  truth label sets, scored by the very reward code GRPO trains with (pure functions, no model).
- ``paired_gain`` / ``gain_by_quarter``: policy reward minus the frozen SFT policy's reward on the same batches,
  per step and per quarter of the run, with the spread over training seeds.
- ``answer_statistics``: along GRPO checkpoints, labels per answer, distinct labels predicted, and recall of
  rare vs common labels, which is how a reward can rise while macro-F1 falls.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from . import metrics
from ..config import SCALE_REWARDS, HardRewardConfig, NuancedRewardConfig
from ..labels import CHEXPERT_LABELS, names_to_vector
from ..prompts import completion_text, parse_output
from ..train.rewards import CollapseGuard, fp_weights, hard_components, nuanced_components, per_label_components

STRATEGIES = {
    "exact truth": "the true label set",
    "truth minus its rarest label": "drop the label with the lowest pool prevalence (sets of 2+ labels only)",
    "only its commonest label": "keep only the truth's label with the highest pool prevalence",
    "truth plus a common wrong label": "add the most prevalent label the truth lacks",
    "pool's commonest label set": "one constant answer: the most frequent label set of the training selections",
    "invalid output": "no <solution> block (fails the output contract)",
}
INVALID_TEXT = "The image shows findings."


def answer_text(labels) -> str:
    """A contract-conforming Free-Reasoning answer naming ``labels`` (reasoning text is irrelevant to the rewards)."""
    return f"<think>reasoning</think><solution>{', '.join(labels)}</solution>"


def strategy_answers(truths: list[list[str]], prevalence: dict[str, float], mode_set: tuple[str, ...]) -> dict[str, list[str]]:
    """The answer text each strategy gives for each truth set."""
    rank = lambda labels: sorted(labels, key=lambda k: prevalence.get(k, 0.0))   # noqa: E731  rarest first
    out = {}
    for name in STRATEGIES:
        texts = []
        for truth in truths:
            t = rank(truth)
            if name == "exact truth":
                answer = t
            elif name == "truth minus its rarest label":
                answer = t[1:] if len(t) > 1 else t
            elif name == "only its commonest label":
                answer = t[-1:]
            elif name == "truth plus a common wrong label":
                missing = [k for k in sorted(prevalence, key=prevalence.get, reverse=True) if k not in t]
                answer = t + missing[:1]
            elif name == "pool's commonest label set":
                answer = list(mode_set)
            else:
                texts.append(INVALID_TEXT)
                continue
            texts.append(answer_text(sorted(answer, key=CHEXPERT_LABELS.index)))
        out[name] = texts
    return out


def strategy_rewards(truths: list[list[str]], prevalence: dict[str, float], mode_set: tuple[str, ...],
                     hard: HardRewardConfig, nuanced: NuancedRewardConfig, labels=CHEXPERT_LABELS) -> pd.DataFrame:
    """Mean hard reward (long and short answers), mean nuanced reward (without and with the collapse guard run
    over the answers in order), labels per answer and macro-F1 of every strategy on ``truths``."""
    weights = fp_weights(prevalence, nuanced.fp_base)
    y_true = np.array([names_to_vector(t, labels) for t in truths]).reshape(len(truths), len(labels))
    rows = []
    for name, texts in strategy_answers(truths, prevalence, mode_set).items():
        parsed = [parse_output(t) for t in texts]
        guard = CollapseGuard(nuanced.window, nuanced.dominance, nuanced.excess_repetition, nuanced.collapse,
                              nuanced.min_window)
        long_, short, plain, guarded = [], [], [], []
        for p, truth in zip(parsed, truths):
            long_.append(sum(hard_components(p, hard.length_threshold, set(truth), hard).values()))
            short.append(sum(hard_components(p, 0, set(truth), hard).values()))
            plain.append(sum(nuanced_components(p, set(truth), nuanced, weights).values()))
            guarded.append(sum(nuanced_components(p, set(truth), nuanced, weights, guard.observe(p.labels)).values()))
        y_pred = np.array([names_to_vector(p.labels if p.valid else [], labels) for p in parsed]).reshape(y_true.shape)
        rows.append({"strategy": name, "what": STRATEGIES[name],
                     "hard (long answer)": np.mean(long_), "hard (short answer)": np.mean(short),
                     "nuanced": np.mean(plain), "nuanced with collapse guard": np.mean(guarded),
                     "labels per answer": np.mean([len(p.labels) for p in parsed]),
                     "macro_f1": metrics.summary(y_true, y_pred, labels, [p.valid for p in parsed])["macro_f1"]})
    return pd.DataFrame(rows)


def mode_label_set(truths: list[list[str]]) -> tuple[str, ...]:
    """The most frequent label set (ties: the first seen)."""
    if not truths:
        raise ValueError("mode_label_set needs at least one truth set")
    return Counter(tuple(sorted(t, key=CHEXPERT_LABELS.index)) for t in truths).most_common(1)[0][0]


def moving_average(values: pd.Series, window: int = 5) -> pd.Series:
    """Trailing simple moving average; the first steps average the steps so far (no weight piles up on step 1)."""
    if window < 1:
        raise ValueError(f"moving-average window must be >= 1, got {window}")
    return values.rolling(window, min_periods=1).mean()


def paired_gain(policy_log: pd.DataFrame, control: pd.DataFrame) -> pd.DataFrame:
    """Per generation step: policy reward, control reward (same batches) and their difference ``gain``."""
    if control is None or not len(control):
        raise ValueError("this GRPO run has no frozen-policy control (grpo.frozen_control was false)")
    policy = policy_log.loc[policy_log.get("reward", pd.Series(dtype=float)).notna(), ["step", "reward"]]
    both = policy.merge(control[["step", "reward"]], on="step", suffixes=("", "_control"), validate="one_to_one")
    return both.assign(gain=both["reward"] - both["reward_control"]).reset_index(drop=True)


def quarter_of(steps: pd.Series, max_step: int) -> pd.Series:
    """Quarter (1-4) of the run each step falls in."""
    return np.minimum(4, (np.asarray(steps) - 1) * 4 // max_step + 1)


def gain_by_quarter(runs_by_reward: dict[str, dict[int, object]]) -> pd.DataFrame:
    """Mean paired gain per quarter of the run, per reward and seed, then over seeds: mean, min, max, n_seeds.

    ``runs_by_reward``: reward -> seed -> ``GRPORun`` (with ``log`` and ``control``). The band is the range over
    seeds (with one seed it is that seed's value).
    """
    rows = []
    for reward, runs in runs_by_reward.items():
        for seed, run in runs.items():
            g = paired_gain(run.log, run.control)
            g["quarter"] = quarter_of(g["step"], int(g["step"].max()))
            for q, t in g.groupby("quarter"):
                rows.append({"reward": reward, "seed": seed, "quarter": int(q), "gain": t["gain"].mean(),
                             "policy": t["reward"].mean(), "control": t["reward_control"].mean()})
    per_seed = pd.DataFrame(rows)
    summary = (per_seed.groupby(["reward", "quarter"])
               .agg(gain=("gain", "mean"), lo=("gain", "min"), hi=("gain", "max"), n_seeds=("seed", "nunique"),
                    policy=("policy", "mean"), control=("control", "mean")).reset_index())
    seeds = per_seed.pivot_table(index=["reward", "quarter"], columns="seed", values="gain")
    seeds.columns = [f"seed {s}" for s in seeds.columns]
    return summary.merge(seeds.reset_index(), on=["reward", "quarter"])


def gain_sentence(table: pd.DataFrame, reward: str) -> str:
    """One measured sentence on whether GRPO raised its reward over the frozen policy (last quarter)."""
    t = table.loc[table["reward"] == reward].sort_values("quarter")
    if not len(t):
        raise ValueError(f"no paired gain for reward {reward!r}")
    last = t.iloc[-1]
    n = int(last["n_seeds"])
    band = f"range over {n} seeds {last['lo']:+.3f} to {last['hi']:+.3f}" if n > 1 else "one seed"
    if last["lo"] > 0:
        verdict = "GRPO raised its reward above the frozen SFT policy on the same batches"
    elif last["hi"] < 0:
        verdict = "GRPO's reward fell below the frozen SFT policy's on the same batches"
    else:
        verdict = "GRPO's reward is not distinguishable from the frozen SFT policy's on the same batches"
    return (f"{reward} reward, last quarter: policy {last['policy']:.3f} vs frozen policy {last['control']:.3f}, "
            f"paired gain {last['gain']:+.3f} ({band}): {verdict}.")


def answer_statistics(frames: dict[int, pd.DataFrame], prevalence: dict[str, float], labels=CHEXPERT_LABELS) -> pd.DataFrame:
    """Per checkpoint step (0 = SFT): labels per answer, distinct labels predicted, recall of the rarer and the
    commoner half of the labels (split at the median pool prevalence), macro-F1 and fail rate.

    ``frames``: step -> predictions with ``truth`` (label lists), ``labels`` (predicted) and ``valid``.
    """
    order = sorted(labels, key=lambda k: prevalence.get(k, 0.0))
    rare, common = order[: len(order) // 2], order[len(order) // 2:]
    rows = []
    for step, frame in sorted(frames.items()):
        preds = [list(p) if v else [] for p, v in zip(frame["labels"], frame["valid"].fillna(False))]
        truths = list(frame["truth"])

        def recall(group):
            hit = sum(len(set(t) & set(p) & set(group)) for t, p in zip(truths, preds))
            pos = sum(len(set(t) & set(group)) for t in truths)
            return hit / pos if pos else np.nan

        y_true = np.array([names_to_vector(t, labels) for t in truths]).reshape(len(truths), len(labels))
        y_pred = np.array([names_to_vector(p, labels) for p in preds]).reshape(y_true.shape)
        rows.append({"step": step, "labels_per_answer": np.mean([len(p) for p in preds]),
                     "distinct_labels": len({k for p in preds for k in p}),
                     "recall_rare": recall(rare), "recall_common": recall(common),
                     **{k: v for k, v in metrics.summary(y_true, y_pred, labels, frame["valid"].fillna(False)).items()
                        if k in ("macro_f1", "fail_rate")}})
    return pd.DataFrame(rows)


def group_advantages(rewards, scale_rewards: str = "group", batch_rewards=None) -> np.ndarray:
    """GRPO's advantages of one group as trl 1.16 computes them (``GRPOTrainer``, ``multi_objective_aggregation=
    "sum_then_normalize"``, its default): reward minus the group mean, then divided by

    - ``scale_rewards="group"``: the group's (unbiased) standard deviation + 1e-4;
    - ``"batch"``: the (unbiased) standard deviation of ``batch_rewards`` (every reward of the generation batch the
      group belongs to, the group's included) + 1e-4;
    - ``"none"``: nothing (Dr. GRPO, the paper's setting).

    The values are ``trl.GRPOConfig.scale_rewards``'s (``config.SCALE_REWARDS``)."""
    r = np.asarray(rewards, dtype=float)
    adv = r - r.mean()
    if scale_rewards == "none":
        return adv
    if scale_rewards == "group":
        spread = r
    elif scale_rewards == "batch":
        if batch_rewards is None:
            raise ValueError('scale_rewards="batch" divides by the whole generation batch\'s standard deviation: '
                             "pass that batch's rewards as batch_rewards")
        spread = np.asarray(batch_rewards, dtype=float)
    else:
        raise ValueError(f"scale_rewards={scale_rewards!r}: one of {' | '.join(SCALE_REWARDS)}")
    return adv / ((spread.std(ddof=1) if len(spread) > 1 else 0.0) + 1e-4)


def worked_example(texts: list[str], lengths: list[int], truth: list[str], prevalence: dict[str, float],
                   hard: HardRewardConfig, nuanced: NuancedRewardConfig, think: bool = True,
                   scale_rewards: str = "group", batch_rewards: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """One group of sampled completions for one image: labels, validity, every component of both rewards (the
    nuanced collapse window starts empty, as at step 1), each total and its advantage as trl computes it under
    ``scale_rewards`` (``group_advantages``; ``batch_rewards``: reward -> the generation batch's totals, needed for
    ``"batch"`` only)."""
    weights = fp_weights(prevalence, nuanced.fp_base)
    rows = []
    for i, (text, length) in enumerate(zip(texts, lengths)):
        p = parse_output(text, think)
        h = hard_components(p, length, set(truth), hard)
        n = nuanced_components(p, set(truth), nuanced, weights)
        rows.append({"completion": i + 1, "text": text, "labels": ", ".join(p.labels) or "(none)", "valid": p.valid,
                     "tokens": length, **h, "hard": sum(h.values()), **n, "nuanced": sum(n.values())})
    table = pd.DataFrame(rows)
    for reward in ("hard", "nuanced"):
        table[f"{reward} advantage"] = group_advantages(table[reward], scale_rewards,
                                                        (batch_rewards or {}).get(reward))
    return table


def advantage_sentence(table: pd.DataFrame, reward: str) -> str:
    """What the GRPO loss does with this group's advantages under ``reward``, from the numbers."""
    adv = table[f"{reward} advantage"]
    if np.allclose(table[reward], table[reward].iloc[0]):
        return (f"{reward}: all {len(table)} completions get the same reward, so every advantage is 0 and this group "
                "contributes no gradient.")
    up = ", ".join(str(c) for c in table.loc[adv > 0, "completion"])
    down = ", ".join(str(c) for c in table.loc[adv < 0, "completion"])
    return (f"{reward}: the loss raises the probability of the tokens of completion(s) {up} (positive advantage) and "
            f"lowers that of completion(s) {down} (negative advantage), in proportion to the advantage.")


def term_by_term(completions: pd.DataFrame, index: int, truth: list[str], reward: str, length: int,
                 hard: HardRewardConfig, nuanced: NuancedRewardConfig, prevalence: dict[str, float],
                 think: bool = True) -> pd.DataFrame:
    """Completion ``index`` of a run's logged completions (``grpo.completions_table``, in the order trl scored
    them) rescored by the reward code, one row per component: the value trl logged beside the recomputed one, then
    their totals. The nuanced collapse window is replayed over every completion before it; ``length``: its length
    in the unit of ``hard.length_unit``."""
    parsed = parse_output(completion_text(completions["completion"].iloc[index]), think)
    if reward == "hard":
        terms = hard_components(parsed, length, set(truth), hard)
    elif reward == "per_label":
        terms = per_label_components(parsed, length, set(truth), hard)
    elif reward == "nuanced":
        guard = CollapseGuard(nuanced.window, nuanced.dominance, nuanced.excess_repetition, nuanced.collapse,
                              nuanced.min_window)
        for earlier in completions["completion"].iloc[:index]:
            guard.observe(parse_output(completion_text(earlier), think).labels)
        terms = nuanced_components(parsed, set(truth), nuanced, fp_weights(prevalence, nuanced.fp_base),
                                   guard.penalty(parsed.labels))
    else:
        raise ValueError(f"reward {reward!r}: choose one of hard, nuanced, per_label")
    missing = [name for name in terms if name not in completions]
    if missing:
        raise KeyError(f"the completions log has no column(s) {missing}: was it logged by a {reward} run?")
    rows = [{"component": name, "logged": float(completions[name].iloc[index]), "recomputed": value}
            for name, value in terms.items()]
    table = pd.DataFrame(rows)
    total = {"component": "total", "logged": table["logged"].sum(), "recomputed": table["recomputed"].sum()}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)
