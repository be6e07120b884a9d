"""Entropy and mode-collapse measures from GRPO logs and logged completions.

The paper describes entropy collapse only in words; these measures turn it into curves:
- from trl's per-step log: token entropy, KL to the reference, clip ratios, fraction of zero-std groups,
  mean completion length;
- from the logged completions (rows in generation order, ``num_generations`` consecutive rows per prompt):
  distinct completions and distinct label sets per group, and the label-dominance index (share of the most
  frequent label among the last ``window`` predictions, the quantity the nuanced reward's guard watches).

Collapse episode rule (ours): a step is *collapsed* when one predicted label *set* (the empty set included)
holds more than the threshold (0.70, the paper's line) of the last ``window`` predictions and its groups hold
on average at most 1.5 distinct label sets (the sampled answers agree); an episode is a run of at least
``min_steps`` consecutive collapsed steps. Using the set rather than single labels also catches collapse into
empty or label-less answers, which the label-dominance index (no labels, no dominance) cannot show.
"""
from __future__ import annotations

from collections import Counter, deque

import numpy as np
import pandas as pd

from .prompts import completion_text, parse_output
from .trainer_log import log_rows, step_log


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
                     "set_dominance": set_count / len(history), "dominant_set": ", ".join(top_set) or "(empty)"})
    return pd.DataFrame(rows)


def collapse_episodes(diag: pd.DataFrame, threshold: float = 0.70, max_distinct: float = 1.5,
                      min_steps: int = 3) -> pd.DataFrame:
    """Episodes (start, end, length) of consecutive collapsed steps; ``diag`` has step, set_dominance,
    distinct_label_sets."""
    collapsed = (diag["set_dominance"] > threshold) & (diag["distinct_label_sets"] <= max_distinct)
    episodes, start, prev = [], None, None
    for step, flag in zip(diag["step"], collapsed):
        if flag and start is None:
            start = step
        if not flag and start is not None:
            episodes.append((start, prev))
            start = None
        prev = step
    if start is not None:
        episodes.append((start, prev))
    steps = list(diag["step"])
    out = [{"start": a, "end": b, "steps": steps.index(b) - steps.index(a) + 1} for a, b in episodes]
    return pd.DataFrame([e for e in out if e["steps"] >= min_steps], columns=["start", "end", "steps"])


def generation_steps(completions: pd.DataFrame, log: pd.DataFrame) -> pd.DataFrame:
    """Completions of the steps that generated (trl re-logs the last generation on steps that reuse it)."""
    if not len(completions):
        return completions
    return completions.loc[completions["step"].isin(log_rows(log, "reward")["step"])]


def run_diagnostics(log: pd.DataFrame, completions: pd.DataFrame, num_generations: int, window: int = 100,
                    threshold: float = 0.70, min_steps: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All per-step measures of one run, and its collapse episodes."""
    per_step = step_log(log)
    completions = generation_steps(completions, log)
    if len(completions):
        per_step = (per_step.merge(group_diversity(completions, num_generations), on="step", how="left")
                    .merge(dominance_curve(completions, window), on="step", how="left"))
    else:
        for col in ("distinct_completions", "distinct_label_sets", "label_set_entropy", "dominance", "set_dominance"):
            per_step[col] = np.nan
    episodes = collapse_episodes(per_step.dropna(subset=["dominance"]), threshold, min_steps=min_steps)
    return per_step, episodes
