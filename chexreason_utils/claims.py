"""A verdict for every claim of the paper: effect (mean over training seeds), CI (seeds x images), verdict.

Each claim names the metric, the comparison, the paper's direction and value (from ``reference``), and the
artifact it is measured on. The CI is the two-level bootstrap of ``metrics.two_level_bootstrap`` (training
seeds, then images), so it carries training-seed variance. The verdict is one rule, ``verdict``:
*supported* if the CI excludes 0 on the paper's side, *contradicted* if it excludes 0 on the other side,
*inconclusive* otherwise. The paper's value is shown beside the effect (and whether the CI holds it), but the
verdict is about the direction only: a tiny phantom world cannot be expected to hit the paper's magnitudes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import metrics, reference

VERDICTS = ("supported", "contradicted", "inconclusive")
SCAFFOLD = "reasoning_a"


class MissingEvidence(LookupError):
    """A claim's input artifact is not there."""


def verdict(lo: float, hi: float, direction: int) -> str:
    """The one verdict rule: the CI [lo, hi] of an effect whose paper sign is ``direction`` (+1 or -1)."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    if lo > hi:
        raise ValueError(f"CI lower bound {lo} is above its upper bound {hi}")
    if lo > 0 or hi < 0:
        return "supported" if (lo > 0) == (direction > 0) else "contradicted"
    return "inconclusive"


def scaffold_gain(f1_by_format: dict) -> float | np.ndarray:
    """Reasoning A's macro-F1 minus the mean macro-F1 of the other SFT formats (values may be arrays)."""
    if SCAFFOLD not in f1_by_format or len(f1_by_format) < 2:
        raise ValueError(f"the scaffold gain needs {SCAFFOLD!r} and at least one other SFT format, "
                         f"got {sorted(f1_by_format)}")
    others = [v for k, v in f1_by_format.items() if k != SCAFFOLD]
    return f1_by_format[SCAFFOLD] - sum(others) / len(others)


def _paper_scaffold_difference() -> float:
    general = scaffold_gain(dict(zip(reference.TABLE3["format"], reference.TABLE3["macro_f1"])))
    medical = scaffold_gain(dict(zip(reference.TABLE2["format"], reference.TABLE2["macro_f1"])))
    return float(general - medical)


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    metric: str
    comparison: str
    direction: int             # the sign of the effect the paper reports
    paper_value: float | None  # None: the paper states it in words only
    evidence: str              # the artifact it is measured on (a key of the evidence mapping)


T5, T6 = reference.TABLE5_MACRO, reference.TABLE6_MACRO
CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "GRPO raises CheXpert macro-F1 over SFT", "CheXpert test macro-F1",
          "GRPO - SFT (medical model, paired per seed)", +1, T5["ChexReason"] - T5["MedGemma SFT"], "CheXpert"),
    Claim("C2", "GRPO lowers NIH macro-F1 from SFT", "NIH test macro-F1 (9 labels)",
          "GRPO - SFT (medical model, paired per seed)", -1, T6["ChexReason"] - T6["MedGemma SFT"], "NIH"),
    Claim("C3", "SFT raises NIH macro-F1 over the base model", "NIH test macro-F1 (9 labels)",
          "SFT - base (medical model; the base model is fixed)", +1, T6["MedGemma SFT"] - T6["MedGemma base"], "NIH"),
    Claim("C4", "The Reasoning-A scaffold helps the general model more than the medical one",
          "validation macro-F1 scaffold gain: Reasoning A - mean of the other SFT formats",
          "gain(general) - gain(medical), per seed", +1, _paper_scaffold_difference(), "validation formats"),
    Claim("C5", "The final recipe avoids the entropy/mode collapse the unstable recipe shows",
          "share of GRPO steps inside a detected collapse episode (diagnostics.collapse_episodes)",
          "unstable-recipe ablation - final recipe (same reward, per seed)", +1, None, "collapse"),
)


def collapse_share(per_step: pd.DataFrame, episodes: pd.DataFrame) -> float:
    """Share of a run's logged steps that lie inside a detected collapse episode."""
    if not len(per_step):
        raise ValueError("a run without logged steps has no collapse share")
    steps = per_step["step"]
    inside = np.zeros(len(steps), dtype=bool)
    for _, e in episodes.iterrows():
        inside |= ((steps >= e["start"]) & (steps <= e["end"])).to_numpy()
    return float(inside.mean())


def _require(evidence: dict, claim: Claim):
    if evidence.get(claim.evidence) is None:
        raise MissingEvidence(f"claim {claim.id} ({claim.statement}) needs the {claim.evidence!r} artifact, "
                              f"which is missing; have: {sorted(k for k, v in evidence.items() if v is not None)}")
    return evidence[claim.evidence]


def _effect(claim: Claim, evidence: dict, n_boot: int, seed: int) -> dict:
    data = _require(evidence, claim)
    if claim.id in ("C1", "C2", "C3"):
        y_true, preds = data          # preds: {"base": [matrix], "sft": [per seed], "grpo": [per seed]}
        a, b = ("base", "sft") if claim.id == "C3" else ("sft", "grpo")
        return metrics.paired_bootstrap(y_true, preds[a], preds[b], n_boot, seed)
    if claim.id == "C4":
        y_true, preds = data          # preds: {role: {format: [per seed]}}
        n = len(next(iter(preds["general"].values())))

        def effect(s, w):
            gain = {role: scaffold_gain({f: metrics.weighted_macro_f1(y_true, p[s], w[0]) for f, p in by_fmt.items()})
                    for role, by_fmt in preds.items()}
            return gain["general"] - gain["medical"]
        return metrics.two_level_bootstrap(effect, n, [len(y_true)], n_boot, seed)
    shares = data                     # {"final": [per seed], "unstable": [per seed]}
    diff = np.asarray(shares["unstable"], float) - np.asarray(shares["final"], float)
    return metrics.two_level_bootstrap(lambda s, w: diff[s], len(diff), (), n_boot, seed)


def measure(evidence: dict, n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Each claim's effect (mean over seeds, each seed's value) and its 95% CI (seeds x images), by claim id.
    ``evidence`` maps each claim's artifact name to its data (see ``steps.evaluation.measure_contrasts``); a
    missing one is a ``MissingEvidence``."""
    return {claim.id: _effect(claim, evidence, n_boot, seed) for claim in CLAIMS}


def claims_table(contrasts: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: metric, comparison, effect (mean over seeds) and each seed's value, 95% CI (seeds x
    images), the paper's value, whether the CI holds it, and the verdict; from the claim rows of the evaluation's
    contrasts frame (``kind`` = "claim", ``contrast`` = the claim id)."""
    measured = contrasts.loc[contrasts["kind"] == "claim"].set_index("contrast")
    rows = []
    for claim in CLAIMS:
        if claim.id not in measured.index:
            raise MissingEvidence(f"claim {claim.id} ({claim.statement}) was not measured: the contrasts frame has "
                                  f"{sorted(measured.index)}")
        r = measured.loc[claim.id]
        paper = np.nan if claim.paper_value is None else round(float(claim.paper_value), 4)
        rows.append({"claim": claim.id, "statement": claim.statement, "metric": claim.metric,
                     "comparison": claim.comparison, "effect": r["effect"], "lo": r["lo"], "hi": r["hi"],
                     "per_seed": r["per_seed"], "seeds": int(r["seeds"]), "paper_value": paper,
                     "paper_in_ci": "stated in words" if claim.paper_value is None else
                     ("yes" if r["lo"] <= claim.paper_value <= r["hi"] else "no"),
                     "verdict": verdict(r["lo"], r["hi"], claim.direction)})
    return pd.DataFrame(rows)


def caption(profile: str, phantom: bool, n_seeds: int) -> str:
    """The claims table's caption: where it was measured, how the CI was made, how the verdict is ruled."""
    where = f"in the phantom world (profile {profile}, tiny models)" if phantom else f"on profile {profile}"
    return (f"measured {where}; effect = mean over {n_seeds} training seed(s); 95% CI by a two-level bootstrap "
            "(training seeds, then images); verdict: supported if the CI excludes 0 in the paper's direction, "
            "contradicted if it excludes 0 in the other, inconclusive otherwise")
