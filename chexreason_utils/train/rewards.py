"""The paper's hard and nuanced GRPO rewards as pure functions, plus trl-signature wrappers.

Each reward is split into components that trl registers as separate reward functions (weights 1), so the
total is their sum and every component is logged as ``rewards/<name>/mean`` for the figures.

Hard (docs/paper.md): r = J(Y, Yhat) - lambda_len   if valid and |t| < threshold
                      r = J(Y, Yhat)                if valid and |t| >= threshold
                      r = 0                         if invalid
  components: ``hard_jaccard`` (J when valid, else 0) and ``hard_length`` (-lambda_len when valid and short).
  Property of the paper's formula (kept as stated): an invalid output (0) scores above a valid, wrong, short
  answer (-lambda_len). The threshold is the paper's 250 tokens in the paper profile; the tiny profiles cap
  completions far below that, where 250 would make -lambda_len a flat tax on every valid answer, so they set it
  to a quantile of the SFT traces' token lengths (``length_threshold_quantile``, an open choice; see
  ``training_runs.grpo.resolve_length_threshold``). Both rewards pay more for one safe label than for a longer list with a
  wrong label in it (``reward_analysis.strategy_rewards`` tabulates this).

Per-label (ours; registrations/Q1_per_label_reward.yaml): the hard reward with J(Y, Yhat) replaced by per-label
  balanced accuracy over the CheXpert labels L, BA = (|Y & Yhat| / |Y| + |(L - Y) - Yhat| / |L - Y|) / 2 (a term is 1
  when its denominator is 0); validity, 0 when invalid and -lambda_len exactly as hard's. It prices each missed true
  label (1 / 2|Y|) and each wrong label (1 / 2|L - Y|) on its own, where J pays for the set.
  components: ``per_label_accuracy`` and ``per_label_length``.

Nuanced (docs/paper.md):  r = r_match + r_partial - r_FP - r_collapse - r_format
  r_match   = +100 if Yhat == Y
  r_partial = 30 * recall + 20 * precision
  r_FP      = sum over false positives k of fp_base * sqrt(p_k / mean(p))   (p: training-pool prevalence;
              common labels such as No Finding and Support Devices cost more; the formula is ours)
  r_collapse: over a sliding window of the last 100 predictions, -30 for each predicted label whose share of
              the window exceeds 70% (an excess repetition) and -50 when the whole predicted set is itself
              above 70% of the window (collapse). Our reading of the paper's one-line description.
  r_format  = 100 per invalid label + 25 per duplicate + extra_text if text outside the blocks
              + missing_tags if the <think>/<solution> contract is broken (the last two amounts are ours).
"""
from __future__ import annotations

import json
import math
from collections import Counter, deque
from pathlib import Path
from typing import Callable

from ..config import REWARDS, GRPOConfig, HardRewardConfig, NuancedRewardConfig
from ..labels import CHEXPERT_LABELS
from ..prompts import Parsed, completion_text, parse_output


def jaccard(truth: set[str], pred: set[str], empty: float = 1.0) -> float:
    if not truth and not pred:
        return empty
    return len(truth & pred) / len(truth | pred)


def hard_components(parsed: Parsed, length: int, truth: set[str], cfg: HardRewardConfig) -> dict[str, float]:
    if not parsed.valid:
        return {"hard_jaccard": 0.0, "hard_length": 0.0}
    short = length < cfg.length_threshold
    return {"hard_jaccard": jaccard(truth, set(parsed.labels), cfg.empty_jaccard),
            "hard_length": -cfg.lambda_len if short else 0.0}


def balanced_accuracy(truth: set[str], pred: set[str], labels=CHEXPERT_LABELS) -> float:
    """Per-label balanced accuracy of one answer over ``labels``: (share of the true labels named + share of the
    other labels not named) / 2, a share being 1 when there is nothing to count."""
    absent = set(labels) - truth
    recall = len(truth & pred) / len(truth) if truth else 1.0
    specificity = len(absent - pred) / len(absent) if absent else 1.0
    return (recall + specificity) / 2


def per_label_components(parsed: Parsed, length: int, truth: set[str], cfg: HardRewardConfig) -> dict[str, float]:
    """The per-label reward's components: the hard reward's, with balanced accuracy in place of J."""
    hard = hard_components(parsed, length, truth, cfg)
    return {"per_label_accuracy": balanced_accuracy(truth, set(parsed.labels)) if parsed.valid else 0.0,
            "per_label_length": hard["hard_length"]}


def fp_weights(prevalence: dict[str, float], fp_base: float) -> dict[str, float]:
    """Per-label false-positive cost: fp_base * sqrt(p_k / mean p) (common labels cost more)."""
    mean = sum(prevalence.values()) / len(prevalence)
    return {k: fp_base * math.sqrt(max(p, 1e-6) / mean) for k, p in prevalence.items()}


def nuanced_components(parsed: Parsed, truth: set[str], cfg: NuancedRewardConfig, weights: dict[str, float],
                       collapse_penalty: float = 0.0) -> dict[str, float]:
    pred = set(parsed.labels)
    hit = len(truth & pred)
    recall = hit / len(truth) if truth else float(not pred)
    precision = hit / len(pred) if pred else float(not truth)
    fmt = (cfg.invalid_label * len(parsed.invalid_labels) + cfg.duplicate_label * len(parsed.duplicate_labels)
           + (cfg.extra_text if parsed.extra_text else 0.0) + (0.0 if parsed.tags_ok else cfg.missing_tags))
    return {"nuanced_match": cfg.exact_match if pred == truth else 0.0,
            "nuanced_partial": cfg.recall_weight * recall + cfg.precision_weight * precision,
            "nuanced_fp": -sum(weights.get(k, max(weights.values())) for k in pred - truth),
            "nuanced_collapse": 0.0 - collapse_penalty,   # +0.0, not -0.0, when there is no penalty
            "nuanced_format": -fmt}


class CollapseGuard:
    """Sliding window of the last predictions; penalises labels (and sets) that dominate it.

    The window is training state: ``state_dict`` / ``load_state_dict`` let it be saved with a checkpoint and
    restored on resume.
    """

    def __init__(self, window: int = 100, dominance: float = 0.70, excess_repetition: float = 30.0,
                 collapse: float = 50.0, min_window: int = 20):
        self.window, self.dominance = window, dominance
        self.excess_repetition, self.collapse, self.min_window = excess_repetition, collapse, min_window
        self.history: deque[tuple[str, ...]] = deque(maxlen=window)

    def shares(self) -> tuple[Counter, Counter]:
        labels = Counter(label for pred in self.history for label in pred)
        sets = Counter(self.history)
        return labels, sets

    def penalty(self, pred: tuple[str, ...]) -> float:
        """Penalty for this prediction given the window so far (0 until min_window predictions are seen)."""
        n = len(self.history)
        if n < self.min_window:
            return 0.0
        labels, sets = self.shares()
        excess = sum(1 for label in pred if labels[label] / n > self.dominance)
        collapsed = sets[pred] / n > self.dominance
        return self.excess_repetition * excess + (self.collapse if collapsed else 0.0)

    def observe(self, pred: tuple[str, ...]) -> float:
        """Penalty for ``pred``, then add it to the window."""
        p = self.penalty(pred)
        self.history.append(tuple(pred))
        return p

    def dominance_index(self) -> float:
        """Share of the most frequent label in the window (the paper's 70% line applies to it)."""
        if not self.history:
            return 0.0
        labels, _ = self.shares()
        return max(labels.values(), default=0) / len(self.history)

    def state_dict(self) -> dict:
        return {"window": self.window, "history": [list(p) for p in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.history = deque((tuple(p) for p in state["history"]), maxlen=self.window)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.state_dict()))

    def load(self, path: Path) -> None:
        self.load_state_dict(json.loads(Path(path).read_text()))


def component_functions(names: tuple[str, ...], score_batch: Callable[..., list[dict]]) -> list[Callable]:
    """trl reward functions, one per component, whose sum is the reward.

    trl calls them in list order with the same batch: the first scores the batch once (advancing any state,
    such as the collapse window, exactly once) and every component reads its column of that result. The first
    also logs each completion's ``image_path`` (a dataset column) with trl's completions, so batches can be traced.
    """
    latest: list[dict] = []

    def component(name: str, first: bool) -> Callable:
        def fn(prompts=None, completions=None, completion_ids=None, truth=None, image_path=None, log_extra=None, **_):
            if first:
                latest[:] = score_batch(completions, completion_ids, truth)
                if image_path is not None and log_extra is not None:
                    log_extra("image_path", list(image_path))
            return [row[name] for row in latest]
        fn.__name__ = name
        return fn

    return [component(n, i == 0) for i, n in enumerate(names)]


def _length_scored(components: Callable, names: tuple[str, ...], cfg: HardRewardConfig,
                   think: bool) -> list[Callable]:
    """trl reward functions of ``components(parsed, length, truth, cfg)`` (dataset column ``truth``: list of labels),
    the length counted in ``cfg.length_unit``."""
    def score_batch(completions, completion_ids, truth):
        out = []
        for c, ids, t in zip(completions, completion_ids, truth):
            text = completion_text(c)
            length = len(ids) if cfg.length_unit == "tokens" else len(text)
            out.append(components(parse_output(text, think), length, set(t), cfg))
        return out

    return component_functions(names, score_batch)


def hard_reward_functions(cfg: HardRewardConfig, think: bool = True) -> list[Callable]:
    """trl reward functions whose sum is the hard reward."""
    return _length_scored(hard_components, ("hard_jaccard", "hard_length"), cfg, think)


def per_label_reward_functions(cfg: HardRewardConfig, think: bool = True) -> list[Callable]:
    """trl reward functions whose sum is the per-label reward (its settings are the hard reward's)."""
    return _length_scored(per_label_components, ("per_label_accuracy", "per_label_length"), cfg, think)


def nuanced_reward_functions(cfg: NuancedRewardConfig, prevalence: dict[str, float], guard: CollapseGuard,
                             think: bool = True) -> list[Callable]:
    """trl reward functions whose sum is the nuanced reward; the collapse guard advances once per batch."""
    weights = fp_weights(prevalence, cfg.fp_base)

    def score_batch(completions, completion_ids, truth):
        parsed = [parse_output(completion_text(c), think) for c in completions]
        return [nuanced_components(p, set(t), cfg, weights, guard.observe(p.labels)) for p, t in zip(parsed, truth)]

    names = ("nuanced_match", "nuanced_partial", "nuanced_fp", "nuanced_collapse", "nuanced_format")
    return component_functions(names, score_batch)


def _hard(cfg: GRPOConfig, prevalence: dict[str, float], think: bool) -> tuple[list[Callable], None]:
    return hard_reward_functions(cfg.hard, think), None


def _per_label(cfg: GRPOConfig, prevalence: dict[str, float], think: bool) -> tuple[list[Callable], None]:
    return per_label_reward_functions(cfg.hard, think), None


def _nuanced(cfg: GRPOConfig, prevalence: dict[str, float], think: bool) -> tuple[list[Callable], CollapseGuard]:
    n = cfg.nuanced
    guard = CollapseGuard(n.window, n.dominance, n.excess_repetition, n.collapse, n.min_window)
    return nuanced_reward_functions(n, prevalence, guard, think), guard


# Every GRPO reward: name -> factory (GRPO settings, pool prevalence, whether the answer has a think block) ->
# (trl reward functions whose sum is the reward, its collapse guard or None). The names are config.REWARDS (config
# sits below this module and validates grpo.rewards with them); the check below keeps the two the same.
REWARD_FACTORIES: dict[str, Callable[[GRPOConfig, dict, bool], tuple[list[Callable], CollapseGuard | None]]] = {
    "hard": _hard, "nuanced": _nuanced, "per_label": _per_label}
if tuple(REWARD_FACTORIES) != REWARDS:
    raise ImportError(f"train.rewards.REWARD_FACTORIES {tuple(REWARD_FACTORIES)} and config.REWARDS {REWARDS} differ")


def reward_functions(reward: str, cfg: GRPOConfig, prevalence: dict[str, float],
                     think: bool = True) -> tuple[list[Callable], CollapseGuard | None]:
    """The trl reward functions of GRPO reward ``reward`` (and its collapse guard, None but for nuanced)."""
    if reward not in REWARD_FACTORIES:
        raise ValueError(f"unknown reward {reward!r}; choose one of {', '.join(REWARD_FACTORIES)}")
    return REWARD_FACTORIES[reward](cfg, prevalence, think)
