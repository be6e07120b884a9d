"""Entropy and mode-collapse measures from GRPO logs and logged completions.

The paper describes entropy collapse only in words; these measures turn it into curves:
- from trl's per-step log: token entropy, KL to the reference, clip ratios, fraction of zero-std groups,
  mean completion length;
- from the logged completions (rows in generation order, ``num_generations`` consecutive rows per prompt):
  distinct completions and distinct label sets per group, and the label-dominance index (share of the most
  frequent label among the last ``window`` predictions, the quantity the nuanced reward's guard watches).

Collapse episode rule (ours; thresholds are ``DiagnosticsConfig`` options): a step is *collapsed* when the
sampled answers stopped differing -- at least ``zero_std_min`` of its groups have zero reward spread
(trl's ``frac_reward_zero_std``) -- and either the token entropy has fallen to ``entropy_fraction`` of the run's
own start (the mean over its first ``start_steps`` logged steps) or one predicted label *set* (the empty set
included) holds more of the last ``window`` predictions than its share among the RL prompts' truths plus
``set_margin``. Both thresholds are relative, to the run's own start and to the data's label distribution, so the
rule can fire on any data set (an absolute share such as 70% cannot when the commonest true set is 30%). An episode
is a run of at least ``min_steps`` consecutive collapsed steps.

The detector's neighbourhood (registered here, before the runs it reads): each of the three thresholds at 0.8, 1 and
1.25 times its value (``zero_std_min`` capped at 1) and the episode length at -1, 0 and +1 steps (at least 1), 81
settings; claim C5 reports in how many of them its count verdict stays the same (``claims.collapse_count``).
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..labels import CHEXPERT_LABELS
from ..prompts import completion_text, parse_output
from ..train.trainer_log import log_rows, step_log


def entropy_of_counts(counts: Counter) -> float:
    """Shannon entropy (nats) of an empirical distribution."""
    total = sum(counts.values())
    if not total:
        return 0.0
    p = np.array(list(counts.values()), dtype=float) / total
    return float(-(p * np.log(p)).sum())


def group_diversity(completions: pd.DataFrame, num_generations: int, think: bool = True) -> pd.DataFrame:
    """Per step: mean distinct completions and distinct label sets per group, and label-set entropy."""
    rows = []
    for step, frame in completions.groupby("step", sort=True):
        texts = [completion_text(c) for c in frame["completion"]]
        sets = [parse_output(t, think).labels for t in texts]
        groups = range(0, len(texts), num_generations)
        rows.append({"step": step,
                     "distinct_completions": np.mean([len(set(texts[g:g + num_generations])) for g in groups]),
                     "distinct_label_sets": np.mean([len(set(sets[g:g + num_generations])) for g in groups]),
                     "label_set_entropy": entropy_of_counts(Counter(sets))})
    return pd.DataFrame(rows)


def dominance_curve(completions: pd.DataFrame, window: int = 100, think: bool = True) -> pd.DataFrame:
    """After each step, over the last ``window`` predictions: the label-dominance index and dominant label, and
    the share of the most frequent label set (``set_dominance``, the empty set included)."""
    history: deque = deque(maxlen=window)
    rows = []
    for step, frame in completions.groupby("step", sort=True):
        for c in frame["completion"]:
            history.append(parse_output(completion_text(c), think).labels)
        counts = Counter(label for pred in history for label in pred)
        label, top = counts.most_common(1)[0] if counts else ("", 0)
        top_set, set_count = Counter(history).most_common(1)[0]
        rows.append({"step": step, "dominance": top / len(history), "dominant_label": label,
                     "set_dominance": set_count / len(history), "dominant_set": set_key(top_set)})
    return pd.DataFrame(rows)


def set_key(labels) -> str:
    """A label set as text: its names in ontology order, comma-joined; "(empty)" for none."""
    order = {n: i for i, n in enumerate(CHEXPERT_LABELS)}
    return ", ".join(sorted(labels, key=lambda n: order.get(n, len(order)))) or "(empty)"


def truth_set_shares(truths) -> dict[str, float]:
    """Each true label set's share among ``truths`` (lists of names), keyed by ``set_key``."""
    counts = Counter(set_key(t) for t in truths)
    return {k: v / len(truths) for k, v in counts.items()} if len(truths) else {}


@dataclass(frozen=True)
class CollapseRule:
    """The detection rule's thresholds (module docstring; ``DiagnosticsConfig`` sets them)."""
    entropy_fraction: float
    set_margin: float
    zero_std_min: float
    start_steps: int
    min_steps: int


NEIGHBOUR_FACTORS = (0.8, 1.0, 1.25)     # each threshold's neighbours, as factors of its value
NEIGHBOUR_EPISODE_STEPS = (-1, 0, 1)    # the episode length's neighbours, as steps added


def neighbour_rules(rule: CollapseRule) -> list[CollapseRule]:
    """The 27 threshold settings of the detector's registered neighbourhood around ``rule`` (the episode length
    kept: ``NEIGHBOUR_EPISODE_STEPS`` varies it where episodes are counted), ``rule`` itself in the middle."""
    return [CollapseRule(rule.entropy_fraction * e, rule.set_margin * s, min(1.0, rule.zero_std_min * z),
                         rule.start_steps, rule.min_steps)
            for e in NEIGHBOUR_FACTORS for s in NEIGHBOUR_FACTORS for z in NEIGHBOUR_FACTORS]


def collapsed_steps(diag: pd.DataFrame, truth_shares: dict[str, float], rule: CollapseRule) -> pd.Series:
    """Which steps are collapsed; ``diag`` has step, entropy, frac_zero_std, set_dominance, dominant_set."""
    start = diag["entropy"].dropna().head(rule.start_steps).mean()
    low_entropy = diag["entropy"] <= rule.entropy_fraction * start if start > 0 else pd.Series(False, diag.index)
    expected = diag["dominant_set"].map(lambda k: truth_shares.get(k, 0.0))
    takeover = diag["set_dominance"] > expected + rule.set_margin
    return (diag["frac_zero_std"] >= rule.zero_std_min) & (low_entropy | takeover)


def episodes_of(flags, min_steps: int) -> list[tuple[int, int]]:
    """(first, past-the-last) positions of every run of at least ``min_steps`` consecutive True flags: an episode."""
    runs, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        if not flag and start is not None:
            runs.append((start, i))
            start = None
    return [(a, b) for a, b in runs if b - a >= min_steps]


def collapse_episodes(diag: pd.DataFrame, truth_shares: dict[str, float], rule: CollapseRule) -> pd.DataFrame:
    """Episodes (start, end, length) of at least ``rule.min_steps`` consecutive collapsed steps."""
    steps = list(diag["step"])
    return pd.DataFrame([{"start": steps[a], "end": steps[b - 1], "steps": b - a}
                         for a, b in episodes_of(collapsed_steps(diag, truth_shares, rule), rule.min_steps)],
                        columns=["start", "end", "steps"])


def generation_steps(completions: pd.DataFrame, log: pd.DataFrame) -> pd.DataFrame:
    """Completions of the steps that generated (trl re-logs the last generation on steps that reuse it)."""
    if not len(completions):
        return completions
    return completions.loc[completions["step"].isin(log_rows(log, "reward")["step"])]


def run_diagnostics(log: pd.DataFrame, completions: pd.DataFrame, num_generations: int,
                    truth_shares: dict[str, float], rule: CollapseRule, window: int = 100
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All per-step measures of one run, and its collapse episodes (``truth_shares``: ``truth_set_shares`` of
    the RL prompts)."""
    per_step = step_log(log)
    completions = generation_steps(completions, log)
    if len(completions):
        per_step = (per_step.merge(group_diversity(completions, num_generations), on="step", how="left")
                    .merge(dominance_curve(completions, window), on="step", how="left"))
    else:
        for col in ("distinct_completions", "distinct_label_sets", "label_set_entropy", "dominance", "set_dominance",
                    "dominant_set"):
            per_step[col] = np.nan
    episodes = collapse_episodes(per_step.dropna(subset=["dominance"]), truth_shares, rule)
    return per_step, episodes
