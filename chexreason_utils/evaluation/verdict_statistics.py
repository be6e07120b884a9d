"""The shared verdict rule and the rules registered with issue 37: the statistics a verdict needs.

Each function states a rule fixed before the run it judges; tests/evaluation/test_verdict_statistics.py checks each
on synthetic cases with a known answer; docs/statistics.md, "Rules registered for the next run", says where each is
read (``claims`` reads the floor rule, the count rule and the family view).

- **The shared verdict rule** (``verdict``, ``VERDICTS``): the five verdicts of a CI against 0 and the SESOI, which
  the claims table (``claims``) and every registered readout use.
- **Collapse as a count of runs** (``collapse_count_test``): collapsed / not collapsed runs in two arms, a one-sided
  Boschloo exact test per side, the verdict in the shared vocabulary (``VERDICTS``);
  ``smallest_count_p`` computes the smallest p any table of the given arm sizes can reach, so a design that cannot
  decide is "not measurable" before the run.
- **Collapse on a common step axis** (``collapse_on_axis``): runs that generate at different strides are read on
  the axis a registration names: optimiser steps, or the generation grid every run shares.
- **Power before a null** (``minimum_detectable_effect``, ``room_for_effect``): the effect a readout detects with
  80% power, and whether the effect available to it is smaller than the SESOI asked of it.
- **A family-wise view** (``p_from_ci``, ``p_from_bootstrap``, ``holm``, ``benjamini_hochberg``, ``family_view``):
  p-values that agree with the verdict rule, Holm-adjusted verdicts beside the unadjusted ones, and the number of
  false "supported / contradicted" verdicts chance alone would give.
- **Intervals inside the metric's range** (``wilson_interval``, ``newcombe_difference``, ``bounded_mean_interval``).
- **A floor rule that reads the direction** (``directional_floor``).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .diagnostics import episodes_of

VERDICTS = ("supported", "contradicted", "no effect of the paper's size", "inconclusive", "not measurable")
ALPHA = 0.05   # the shared rule's level: a two-sided 95% CI; one side of it is a one-sided test at ALPHA / 2
COUNT_TEST = "one-sided Boschloo exact test (unconditional; Fisher's exact p as its statistic), each side at alpha/2"
AXES = ("optimiser", "generation")


# -- the shared verdict rule ------------------------------------------------------------------------------------------

def verdict(lo: float, hi: float, direction: int, sesoi: float, option: str = "sesoi") -> str:
    """The verdict rule on a CI [lo, hi] of an effect whose paper sign is ``direction`` (+1 or -1), with the
    smallest effect of interest ``sesoi`` (> 0; ``option`` names it in the error)."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    if not sesoi > 0:
        raise ValueError(f"{option} must be > 0 (the smallest effect of interest), got {sesoi!r}")
    if lo > hi:
        raise ValueError(f"CI lower bound {lo} is above its upper bound {hi}")
    if lo > 0 or hi < 0:
        return "supported" if (lo > 0) == (direction > 0) else "contradicted"
    return "no effect of the paper's size" if -sesoi < lo and hi < sesoi else "inconclusive"


# -- collapse as a count of runs ------------------------------------------------------------------------------------

def _one_sided_p(collapsed_a: int, n_a: int, collapsed_b: int, n_b: int, test: str) -> float:
    """p of "arm a collapses more often than arm b" (a one-sided exact test of two binomial shares)."""
    table = [[collapsed_a, collapsed_b], [n_a - collapsed_a, n_b - collapsed_b]]   # columns: the two arms
    if test == "boschloo":
        return float(stats.boschloo_exact(table, alternative="greater").pvalue)
    if test == "fisher":
        return float(stats.fisher_exact(table, alternative="greater").pvalue)
    raise ValueError(f"test must be 'boschloo' or 'fisher', got {test!r}")


def _check_counts(collapsed: int, n: int, arm: str) -> None:
    if not (isinstance(n, (int, np.integer)) and n >= 1 and 0 <= collapsed <= n):
        raise ValueError(f"arm {arm}: need 0 <= collapsed runs <= runs and runs >= 1, got {collapsed} of {n}")


@lru_cache(maxsize=None)
def smallest_count_p(n_a: int, n_b: int, test: str = "boschloo") -> float:
    """The smallest one-sided p any count table with ``n_a`` and ``n_b`` runs can give (every table tried): if it is
    not below the side's level, no outcome of the design can decide, whatever the runs do."""
    _check_counts(0, n_a, "a")
    _check_counts(0, n_b, "b")
    return min(_one_sided_p(x, n_a, y, n_b, test) for x in range(n_a + 1) for y in range(n_b + 1))


def collapse_count_test(collapsed_a: int, n_a: int, collapsed_b: int, n_b: int, direction: int = +1,
                        alpha: float = ALPHA, test: str = "boschloo") -> dict:
    """The count rule of a collapse claim: arm a (e.g. the unstable ablation) against arm b (the final recipe),
    ``collapsed_*`` of ``n_*`` runs collapsed; ``direction`` +1: the claim says a collapses more often.

    Rule: each side is a one-sided exact test at ``alpha / 2`` (the level at which a 95% CI excludes 0 on one
    side, as in ``verdict``). Verdict: "not measurable" when no run of either arm collapsed (the detector
    never fired) or when ``smallest_count_p`` of the design is not below ``alpha / 2`` (no count could decide);
    "supported" / "contradicted" when the side of the claim / the other side rejects; otherwise "inconclusive"
    (a count of a few runs never shows an effect inside a SESOI, so "no effect of the paper's size" is not
    reachable). Boschloo rather than Fisher: the arms' sizes are fixed by design but the total of collapsed runs
    is not, so conditioning on it (Fisher) throws away power; Boschloo's test is exact (size <= alpha at every
    common collapse rate) and at least as powerful as Fisher's (its statistic is Fisher's p). With 3 vs 3 runs
    Fisher's smallest p is 1/20 = 0.05, Boschloo's 1/64 = 0.0156.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    _check_counts(collapsed_a, n_a, "a")
    _check_counts(collapsed_b, n_b, "b")
    p_more = _one_sided_p(collapsed_a, n_a, collapsed_b, n_b, test)    # a collapses more often than b
    p_less = _one_sided_p(collapsed_b, n_b, collapsed_a, n_a, test)    # b collapses more often than a
    p_claim, p_other = (p_more, p_less) if direction > 0 else (p_less, p_more)
    smallest = smallest_count_p(n_a, n_b, test)
    side = alpha / 2
    if collapsed_a + collapsed_b == 0:
        v, note = "not measurable", "the collapse detector fired in no run of either arm"
    elif not smallest < side:
        v, note = "not measurable", (f"no {n_a}-vs-{n_b} count can reach one-sided p < {side:g} "
                                     f"(smallest p {smallest:.4f}, {test})")
    elif p_claim < side:
        v, note = "supported", ""
    elif p_other < side:
        v, note = "contradicted", ""
    else:
        v, note = "inconclusive", f"one-sided p {p_claim:.3f} (claim's side), {p_other:.3f} (other side)"
    lo, hi = newcombe_difference(collapsed_a, n_a, collapsed_b, n_b, alpha)
    return {"collapsed_a": collapsed_a, "n_a": n_a, "collapsed_b": collapsed_b, "n_b": n_b,
            "share_difference": collapsed_a / n_a - collapsed_b / n_b, "lo": lo, "hi": hi,
            "p_claim": p_claim, "p_other": p_other, "smallest_p": smallest, "test": test, "verdict": v, "note": note}


# -- collapse on a common step axis --------------------------------------------------------------------------------

def _stride(steps: np.ndarray) -> int:
    gaps = np.unique(np.diff(steps))
    if len(steps) < 2:
        raise ValueError("a run needs at least two generation steps to have a stride")
    if len(gaps) != 1 or gaps[0] < 1:
        raise ValueError(f"generation steps must be evenly spaced, got gaps {gaps.tolist()}")
    return int(gaps[0])


def _episode_mask(flags: np.ndarray, min_steps: int) -> np.ndarray:
    """Which points lie in an episode (``diagnostics.episodes_of``)."""
    inside = np.zeros(len(flags), bool)
    for a, b in episodes_of(flags, min_steps):
        inside[a:b] = True
    return inside


def collapse_on_axis(runs: dict[str, pd.DataFrame], axis: str, min_steps: int,
                     last_step: int | None = None) -> pd.DataFrame:
    """Collapse of runs that generate at different strides, read on one axis. Each run: a frame of its generation
    steps (``step``, the optimiser step at which it generated, evenly spaced) and ``collapsed`` (the detector's
    flag on that step, ``diagnostics.collapsed_steps``).

    ``axis`` "optimiser": each flag holds for the optimiser steps its generation batch trains (up to the next
    generation); an episode is ``min_steps`` consecutive *optimiser* steps; the share is over optimiser steps
    1..``last_step``. ``axis`` "generation": every run is read on the coarsest generation grid (the generation steps
    of the first run with the largest stride, e.g. the ablation's every second step), each at the flag in force
    there; an episode is ``min_steps`` consecutive points of that grid. One row per run: stride, points read,
    share of them inside an episode, episodes, collapsed (any episode).
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES} (the axis the registration names), got {axis!r}")
    if min_steps < 1:
        raise ValueError(f"min_steps must be >= 1, got {min_steps}")
    strides = {name: _stride(np.asarray(r["step"])) for name, r in runs.items()}
    coarsest = max(strides, key=strides.get)                           # the first run of the largest stride
    coarse_grid = np.asarray(runs[coarsest]["step"], int)
    end = last_step if last_step is not None else max(int(r["step"].max()) + strides[n] - 1 for n, r in runs.items())
    rows = []
    for name, run in runs.items():
        steps, flags = np.asarray(run["step"], int), np.asarray(run["collapsed"], bool)
        if axis == "optimiser":
            grid = np.arange(1, end + 1)
        else:
            grid = coarse_grid[coarse_grid <= end]
        where = np.searchsorted(steps, grid, side="right") - 1        # the generation in force at each grid step
        read = np.where(where >= 0, flags[np.clip(where, 0, None)], False)
        inside = _episode_mask(read, min_steps)
        starts = int(np.sum(inside & ~np.r_[False, inside[:-1]]))
        rows.append({"run": name, "stride": strides[name], "axis": axis, "points": len(grid),
                     "share": float(inside.mean()) if len(grid) else np.nan, "episodes": starts,
                     "collapsed": starts > 0})
    return pd.DataFrame(rows)


# -- power before a null -------------------------------------------------------------------------------------------

def minimum_detectable_effect(se: float | None = None, half_width: float | None = None, alpha: float = ALPHA,
                              power: float = 0.8) -> float:
    """The smallest true effect a two-sided level-``alpha`` test detects with probability ``power``:
    MDE = (z_{1-alpha/2} + z_{power}) * SE, with SE given or read from a 95% CI's ``half_width``
    (SE = half-width / z_{1-alpha/2}; normal approximation, as a design quantity before the run)."""
    if (se is None) == (half_width is None):
        raise ValueError("give exactly one of se and half_width")
    z = stats.norm.ppf(1 - alpha / 2)
    se = half_width / z if se is None else se
    if not se >= 0:
        raise ValueError(f"the standard error must be >= 0, got {se!r}")
    return float((z + stats.norm.ppf(power)) * se)


def room_for_effect(available: float, sesoi: float, what: str = "the effect") -> str:
    """The pre-run check of a readout that asks an intervention to move ``what`` by at least ``sesoi``: when the
    whole effect available (e.g. the drop the intervention is to shrink) is smaller than the SESOI, "no effect of
    the paper's size" is near-certain before the run, so the readout is "not measurable"; the reason, or ""."""
    if not sesoi > 0:
        raise ValueError(f"sesoi must be > 0, got {sesoi!r}")
    if abs(available) < sesoi:
        return (f"{what} available is {abs(available):.3f}, smaller than the SESOI {sesoi:g} asked of it: "
                f"no outcome can show an effect of that size")
    return ""


# -- a family-wise view --------------------------------------------------------------------------------------------

def p_from_ci(lo: float, hi: float, df: float = np.inf, alpha: float = ALPHA) -> float:
    """Two-sided p of "effect = 0" from a symmetric t-interval [lo, hi] at level 1 - ``alpha`` with ``df`` (as
    ``metrics.seed_image_interval`` makes it): effect = midpoint, SE = half-width / t_{df,1-alpha/2},
    p = 2 P(T_df > |effect| / SE). p < alpha exactly when the CI excludes 0 (the verdict rule's test)."""
    if lo > hi:
        raise ValueError(f"CI lower bound {lo} is above its upper bound {hi}")
    effect, half = (lo + hi) / 2, (hi - lo) / 2
    if half == 0:
        return 1.0 if effect == 0 else 0.0
    se = half / stats.t.ppf(1 - alpha / 2, df)
    return float(2 * stats.t.sf(abs(effect) / se, df))


def p_from_bootstrap(draws: Sequence[float]) -> float:
    """Two-sided p from a bootstrap distribution of an effect: 2 * min(share of draws <= 0, share >= 0), capped at 1;
    p < alpha exactly when the percentile interval at level 1 - alpha excludes 0."""
    draws = np.asarray(draws, float)
    if not len(draws):
        raise ValueError("no bootstrap draws")
    return float(min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0))))


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: sorted ascending, p_(k) * (m - k + 1), made non-decreasing, capped at
    1; rejecting where the adjusted p < alpha keeps the family-wise error rate <= alpha."""
    p = np.asarray(p, float)
    m, order = len(p), np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out


def benjamini_hochberg(p: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate): sorted ascending, p_(k) * m / k, made
    non-increasing from the top, capped at 1."""
    p = np.asarray(p, float)
    m, order = len(p), np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.minimum.accumulate((p[order] * m / np.arange(1, m + 1))[::-1])[::-1])
    out = np.empty(m)
    out[order] = adjusted
    return out


def family_view(family: pd.DataFrame, alpha: float = ALPHA) -> tuple[pd.DataFrame, dict]:
    """Holm-adjusted verdicts beside the unadjusted ones over a registered family of readouts.

    ``family``: one row per readout with ``readout``, ``lo``, ``hi`` (95% CI), ``direction``, ``sesoi``, and
    optionally ``df`` (default inf), ``p`` (else ``p_from_ci``), ``not_measurable`` (a reason; such rows are
    not ruled and leave the family) and ``rule`` ("count" for a count rule's readout, whose ``verdict`` is given:
    losing its sign, it becomes "inconclusive", a count never showing an effect inside a SESOI). ``verdict`` is
    ``verdict`` on the CI unless the row gives one. The Holm verdict: a supported /
    contradicted readout whose Holm-adjusted p is not below ``alpha`` loses its sign and is ruled on its CI widened
    to Holm's level at its rank, alpha / (m - k + 1) ("no effect of the paper's size" when that CI lies inside
    +-SESOI, else "inconclusive"); every other verdict stands. Summary: readouts ruled (m), the false "supported /
    contradicted" verdicts chance alone would give if every effect were zero (alpha * m), and the sign verdicts
    before and after the adjustment.
    """
    out = family.copy()
    if "df" not in out:
        out["df"] = np.inf
    reason = out["not_measurable"].fillna("").astype(str) if "not_measurable" in out else pd.Series("", out.index)
    ruled = reason == ""
    if "p" not in out:
        out["p"] = [p_from_ci(r.lo, r.hi, r.df, alpha) for r in out.itertuples()]
    given = out["verdict"] if "verdict" in out else pd.Series("", out.index)
    out["verdict"] = [("not measurable" if not ok else g if isinstance(g, str) and g else
                       verdict(r.lo, r.hi, r.direction, r.sesoi)) for r, ok, g in zip(out.itertuples(), ruled, given)]
    rule = out["rule"] if "rule" in out else pd.Series("ci", out.index)
    out["p_holm"], out["p_bh"], out["verdict_holm"] = np.nan, np.nan, out["verdict"]
    m = int(ruled.sum())
    if m:
        p = out.loc[ruled, "p"].to_numpy(float)
        out.loc[ruled, "p_holm"], out.loc[ruled, "p_bh"] = holm(p), benjamini_hochberg(p)
        rank = pd.Series(p, index=out.index[ruled]).rank(method="first").astype(int)
        for i in out.index[ruled]:
            r = out.loc[i]
            if r["verdict"] in ("supported", "contradicted") and not r["p_holm"] < alpha:
                if rule[i] == "count":
                    out.loc[i, "verdict_holm"] = "inconclusive"
                    continue
                level = alpha / (m - rank[i] + 1)
                half = (r["hi"] - r["lo"]) / 2 * stats.t.ppf(1 - level / 2, r["df"]) / stats.t.ppf(1 - alpha / 2,
                                                                                                   r["df"])
                mid = (r["lo"] + r["hi"]) / 2
                inside = -r["sesoi"] < mid - half and mid + half < r["sesoi"]
                out.loc[i, "verdict_holm"] = "no effect of the paper's size" if inside else "inconclusive"
    signs = ("supported", "contradicted")
    summary = {"ruled": m, "not_ruled": int((~ruled).sum()), "expected_false_sign_verdicts": alpha * m,
               "sign_verdicts": int(out["verdict"].isin(signs).sum()),
               "sign_verdicts_holm": int(out["verdict_holm"].isin(signs).sum())}
    return out, summary


FAMILY_MEMBER_COLUMNS = ["readout", "verdict", "effect", "lo", "hi", "df", "direction", "sesoi", "not_measurable",
                         "p", "rule"]   # a family member's row (``family_table``)


def family_members(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Readout tables as family members (``FAMILY_MEMBER_COLUMNS``): a not-measurable row's
    reason is its ``not_measurable`` or, failing that, its ``note``; ruled rows have none."""
    columns = [*FAMILY_MEMBER_COLUMNS, "note"]
    family = pd.concat([p.reindex(columns=columns) for p in parts], ignore_index=True)
    given, note = (family[c].astype(object).fillna("").astype(str) for c in ("not_measurable", "note"))
    why = given.where(given != "", note)
    family["not_measurable"] = [(w or v) if v == "not measurable" else "" for w, v in zip(why, family["verdict"])]
    return family.drop(columns="note")


def family_table(members: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """``family_view`` of registered ``members`` (``FAMILY_MEMBER_COLUMNS``: a not-measurable row's reason in
    ``not_measurable``; a missing ``p`` from its CI, ``p_from_ci``; ``rule`` "ci" unless given), with the effect
    each CI readout detects with 80% power (``mde_80``, ``minimum_detectable_effect``: a null is only as strong as
    that; none without a CI, e.g. one seed); and the summary (readouts ruled, false sign verdicts chance alone would give)."""
    family = members.reindex(columns=FAMILY_MEMBER_COLUMNS).copy()
    family["rule"] = family["rule"].fillna("ci")
    family["p"] = [p if not np.isnan(p) else p_from_ci(lo, hi, df)
                   for p, lo, hi, df in zip(family["p"].astype(float), family["lo"], family["hi"],
                                            family["df"].fillna(np.inf))]
    viewed, summary = family_view(family)
    viewed["mde_80"] = [minimum_detectable_effect(half_width=(hi - lo) / 2) if rule == "ci" and np.isfinite(hi - lo)
                        else np.nan for lo, hi, rule in zip(viewed["lo"], viewed["hi"], viewed["rule"])]
    return viewed[["readout", "verdict", "verdict_holm", "effect", "lo", "hi", "p", "p_holm", "p_bh", "sesoi",
                   "mde_80", "rule"]], summary


def family_caption(profile: str, summary: dict) -> str:
    """A family view's caption: how many readouts were ruled and how many false sign verdicts chance would give."""
    return (f"profile {profile}: {summary['ruled']} readouts ruled ({summary['not_ruled']} not measurable, outside "
            f"the family); if every effect were zero, chance alone would give about "
            f"{summary['expected_false_sign_verdicts']:.2f} false 'supported / contradicted' verdicts at 95% each; "
            f"sign verdicts {summary['sign_verdicts']} unadjusted, {summary['sign_verdicts_holm']} after Holm "
            "(p_bh: Benjamini-Hochberg, for reference)")


# -- intervals inside the metric's range ---------------------------------------------------------------------------

def wilson_interval(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson's score interval of a share k / n: the shares p whose score test does not reject; inside [0, 1]."""
    if not (n >= 1 and 0 <= k <= n):
        raise ValueError(f"need 0 <= k <= n and n >= 1, got {k} of {n}")
    z, p = stats.norm.ppf(1 - alpha / 2), k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def newcombe_difference(k_a: int, n_a: int, k_b: int, n_b: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) of a difference of shares k_a/n_a - k_b/n_b, built from
    the two Wilson intervals; inside [-1, 1]."""
    pa, pb = k_a / n_a, k_b / n_b
    (la, ua), (lb, ub) = wilson_interval(k_a, n_a, alpha), wilson_interval(k_b, n_b, alpha)
    d = pa - pb
    lo = d - np.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    hi = d + np.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    return float(max(-1.0, lo)), float(min(1.0, hi))


def bounded_mean_interval(values: Sequence[float], lower: float = 0.0, upper: float = 1.0, se: float | None = None,
                          df: float | None = None, alpha: float = ALPHA) -> dict:
    """A CI of a mean over training seeds of a bounded quantity (a share, an F1 in [0, 1]; a difference of shares
    in [-1, 1]) that stays inside [``lower``, ``upper``]: the t-interval built on the logit scale of the mean
    rescaled to (0, 1), SE by the delta method (SE / (m (1 - m)) on that scale), back-transformed.

    ``values``: each seed's value; ``se`` and ``df`` default to the seeds' t-interval (sd / sqrt(n), n - 1) and may
    be a ``metrics.seed_image_interval``'s (seed and image parts). Where the mean sits on a bound (every seed at 0,
    say) there is no spread to scale: the interval is the bound itself and ``at_bound`` is True (the caller rules
    such a readout "not measurable", as ``claims`` does for a detector that never fired).
    """
    values = np.asarray(values, float)
    if not upper > lower:
        raise ValueError(f"upper {upper} must be above lower {lower}")
    if np.any(values < lower) or np.any(values > upper):
        raise ValueError(f"values must lie in [{lower}, {upper}], got {values.tolist()}")
    n = len(values)
    if se is None:
        if n < 2:
            raise ValueError("one value has no seed-level spread: give se and df")
        se, df = values.std(ddof=1) / np.sqrt(n), n - 1 if df is None else df
    df = np.inf if df is None else df
    mean, width = values.mean(), upper - lower
    m = (mean - lower) / width
    if m <= 0 or m >= 1 or se == 0:
        return {"effect": float(mean), "lo": float(mean), "hi": float(mean), "at_bound": True}
    centre, scale = np.log(m / (1 - m)), se / width / (m * (1 - m))
    t = stats.t.ppf(1 - alpha / 2, df)
    back = lambda x: lower + width / (1 + np.exp(-x))   # noqa: E731
    return {"effect": float(mean), "lo": float(back(centre - t * scale)), "hi": float(back(centre + t * scale)),
            "at_bound": False}


# -- a floor rule that reads the direction -------------------------------------------------------------------------

def directional_floor(lo: float, hi: float, reference_floor: str = "", treatment_floor: str = "") -> str:
    """Whether a floor makes a contrast treatment - reference with CI [lo, hi] "not measurable"; the reason, or "".

    ``*_floor``: the ``scores.floor_reason`` text of each arm ("" when it is above floor). Rule: a floor makes the
    comparison not measurable only where the floor, not the model, decides the sign:
    - neither arm at floor: measurable;
    - both arms at floor: not measurable (both values are a trivial answer's);
    - one arm at floor: measurable when the CI excludes 0 in favour of the arm above floor (the model beat a
      trivial answer: SFT over a base at floor; or a format that collapses to a constant is worse than one that
      does not, which is evidence the format hurts) and when the CI holds 0 (ruled as usual); not measurable when
      the CI excludes 0 in favour of the arm at floor (a trivial answer's score decides the sign).
    """
    if lo > hi:
        raise ValueError(f"CI lower bound {lo} is above its upper bound {hi}")
    if reference_floor and treatment_floor:
        return f"both arms at floor: reference {reference_floor}; treatment {treatment_floor}"
    if reference_floor and hi < 0:
        return f"the reference, at floor ({reference_floor}), is the better arm: the floor decides the sign"
    if treatment_floor and lo > 0:
        return f"the treatment, at floor ({treatment_floor}), is the better arm: the floor decides the sign"
    return ""
