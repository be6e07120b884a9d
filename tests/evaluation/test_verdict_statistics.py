"""The rules registered for the next run (``verdict_statistics``), each on synthetic cases with a known answer."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from chexreason_utils.evaluation import verdict_statistics as vs


# -- collapse as a count of runs --------------------------------------------------------------------------------------

def test_smallest_achievable_p_of_a_3_vs_3_count_is_computed_for_both_exact_tests():
    fisher, boschloo = vs.smallest_count_p(3, 3, "fisher"), vs.smallest_count_p(3, 3, "boschloo")
    print(f"\nsmallest one-sided p of a 3-vs-3 count: Fisher {fisher:.4f}, Boschloo {boschloo:.4f}")
    assert fisher == pytest.approx(1 / 20)     # 3 of 3 vs 0 of 3: 1 / C(6, 3); never < 0.05
    assert boschloo == pytest.approx(1 / 64)   # the same table, sup over the common rate of pi^3 (1 - pi)^3
    assert vs.smallest_count_p(5, 5, "fisher") == pytest.approx(1 / 252)


def test_the_count_test_reaches_each_verdict_on_known_tables():
    assert vs.collapse_count_test(3, 3, 0, 3)["verdict"] == "supported"          # ablation 3/3, final 0/3
    assert vs.collapse_count_test(0, 3, 3, 3)["verdict"] == "contradicted"
    assert vs.collapse_count_test(3, 3, 0, 3, direction=-1)["verdict"] == "contradicted"
    r = vs.collapse_count_test(1, 3, 2, 3)                                        # the issue's matched reading
    assert r["verdict"] == "inconclusive" and r["p_claim"] > 0.5
    assert vs.collapse_count_test(0, 3, 0, 3)["verdict"] == "not measurable"     # the detector never fired
    fisher = vs.collapse_count_test(3, 3, 0, 3, test="fisher")                    # Fisher cannot decide 3 vs 3
    assert fisher["verdict"] == "not measurable" and "no 3-vs-3 count can reach" in fisher["note"]
    assert -1 <= r["lo"] < r["share_difference"] < r["hi"] <= 1
    assert set(vs.collapse_count_test(2, 5, 1, 4).keys()) >= {"p_claim", "p_other", "smallest_p", "verdict"}
    with pytest.raises(ValueError, match="arm a"):
        vs.collapse_count_test(4, 3, 0, 3)


def test_the_count_test_holds_its_level_at_every_common_collapse_rate():
    """Exact size: under equal rates the 'supported' verdict comes at most alpha/2 of the time (3 and 5 runs)."""
    for n in (3, 5):
        verdicts = {(x, y): vs.collapse_count_test(x, n, y, n)["verdict"] for x in range(n + 1) for y in range(n + 1)}
        for rate in (0.1, 0.3, 0.5, 0.7, 0.9):
            pmf = stats.binom.pmf(np.arange(n + 1), n, rate)
            size = sum(pmf[x] * pmf[y] for (x, y), v in verdicts.items() if v == "supported")
            assert size <= 0.025 + 1e-12, (n, rate, size)


# -- collapse on a common step axis -------------------------------------------------------------------------------

def _run(steps, collapsed_at):
    return pd.DataFrame({"step": steps, "collapsed": [s in collapsed_at for s in steps]})


FINAL = _run(range(1, 41), {11, 12, 13, 14})          # generates every step: 4 collapsed steps
ABLATION = _run(range(2, 41, 2), {22, 24})             # generates every 2nd step: 2 collapsed generations


def test_matched_and_unmatched_step_grids_give_the_right_shares():
    own = {n: vs.collapse_on_axis({n: r}, "generation", 3, last_step=40).iloc[0]
           for n, r in (("final", FINAL), ("ablation", ABLATION))}
    # unmatched (each on its own generation grid, 3 generations): the final recipe collapses, the ablation not
    assert own["final"]["collapsed"] and own["final"]["share"] == pytest.approx(4 / 40)
    assert not own["ablation"]["collapsed"] and own["ablation"]["share"] == 0
    both = {"final": FINAL, "ablation": ABLATION}
    opt = vs.collapse_on_axis(both, "optimiser", 3, last_step=40).set_index("run")
    # optimiser steps: each ablation generation holds for 2 steps, 22-25: 4 steps, the same as the final recipe
    assert opt["points"].tolist() == [40, 40] and opt["collapsed"].all()
    assert opt["share"].tolist() == pytest.approx([4 / 40, 4 / 40])
    gen = vs.collapse_on_axis(both, "generation", 3, last_step=40).set_index("run")
    # the generation grid both share (every 2nd step): the final recipe is read at 12, 14 only: no episode
    assert gen["points"].tolist() == [20, 20] and not gen["collapsed"].any() and (gen["share"] == 0).all()
    assert vs.collapse_on_axis(both, "generation", 2, last_step=40)["share"].tolist() == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError, match="axis must be one of"):
        vs.collapse_on_axis(both, "wall clock", 3)


def test_a_reversal_that_only_the_grid_makes():
    """Three seeds per arm: on their own grids the final recipe collapses in 1 of 3 and the ablation in 2 of 3;
    read on the ablation's grid the final recipe collapses in 2 of 3 (the direction the issue saw move)."""
    finals = [_run(range(1, 41), {10, 12, 14}),            # every 2nd step: episode only on the shared grid
              _run(range(1, 41), {20, 21, 22}),            # own grid: 3 steps; shared grid: 20, 22 (2)
              _run(range(1, 41), {4, 6, 8, 30})]
    ablations = [_run(range(2, 41, 2), {10, 12, 14}), _run(range(2, 41, 2), {30, 32, 34}), _run(range(2, 41, 2), set())]
    own = [vs.collapse_on_axis({"r": r}, "generation", 3, last_step=40)["collapsed"].item() for r in finals]
    shared = [vs.collapse_on_axis({"r": r, "a": ablations[0]}, "generation", 3, last_step=40)["collapsed"].iloc[0]
              for r in finals]
    abl = [vs.collapse_on_axis({"a": r}, "generation", 3, last_step=40)["collapsed"].item() for r in ablations]
    assert (sum(own), sum(shared), sum(abl)) == (1, 2, 2)


# -- power before a null ----------------------------------------------------------------------------------------------

def test_minimum_detectable_effect_at_80_percent_power():
    assert vs.minimum_detectable_effect(se=0.01) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)
    assert vs.minimum_detectable_effect(half_width=1.959964 * 0.01) == pytest.approx(0.028016, rel=1e-4)
    assert vs.minimum_detectable_effect(se=0.01, power=0.5) == pytest.approx(0.0196, rel=1e-3)
    with pytest.raises(ValueError, match="exactly one"):
        vs.minimum_detectable_effect()


def test_a_drop_smaller_than_the_sesoi_is_not_measurable_before_the_run():
    reason = vs.room_for_effect(-0.020, 0.028, "the NIH drop")
    assert "0.020, smaller than the SESOI 0.028" in reason
    assert vs.room_for_effect(0.035, 0.028) == ""


# -- a family-wise view -----------------------------------------------------------------------------------------------

def test_p_from_a_ci_agrees_with_the_verdict_rule():
    z = stats.norm.ppf(0.975)
    assert vs.p_from_ci(0.0, 2 * z * 0.01) == pytest.approx(0.05)          # a CI that touches 0: p = alpha
    assert vs.p_from_ci(-0.01, 0.01) == pytest.approx(1.0)
    t2 = stats.t.ppf(0.975, 2)
    assert vs.p_from_ci(0.05 - t2 * 0.02, 0.05 + t2 * 0.02, df=2) == pytest.approx(2 * stats.t.sf(2.5, 2))
    rng = np.random.default_rng(0)
    for a, b, df in zip(*rng.uniform(-0.1, 0.1, (2, 200)), rng.choice([2, 4, np.inf], 200)):
        lo, hi = min(a, b), max(a, b)     # a t-interval with df: p < 0.05 exactly when the verdict has a sign
        signed = vs.verdict(lo, hi, +1, 0.03) in ("supported", "contradicted")
        assert (vs.p_from_ci(lo, hi, df) < 0.05) == signed
    draws = np.r_[np.full(970, 0.1), np.full(30, -0.1)]
    assert vs.p_from_bootstrap(draws) == pytest.approx(0.06)


def test_holm_and_benjamini_hochberg_on_a_hand_worked_family():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04
    #       -> running max 0.02, 0.03, 0.06, 0.06
    assert vs.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: x4/k = 0.02, 0.02, 0.04, 0.04 -> running min from the top: the same
    assert vs.benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.uniform(0, 0.2, rng.integers(1, 40))
        assert vs.benjamini_hochberg(q) == pytest.approx(stats.false_discovery_control(q))
    assert vs.holm([0.02, 0.5]) == pytest.approx([0.04, 0.5]) and vs.holm([0.9, 0.8]).tolist() == [1.0, 1.0]


def test_holm_adjusted_verdicts_beside_the_unadjusted_ones():
    """35 ruled readouts: C1 at p 0.03 and a residual at p 0.047 lose their sign, a strong effect keeps it."""
    z = stats.norm.ppf(0.975)

    def ci_for(effect, p):                       # the 95% normal CI whose p_from_ci is p
        se = abs(effect) / stats.norm.isf(p / 2)
        return effect - z * se, effect + z * se

    rows = [("C1", -0.033, 0.03, +1, 0.03), ("E0 NIH residual", 0.02, 0.047, +1, 0.028),
            ("strong", 0.20, 1e-6, +1, 0.03), ("tight", 0.004, 0.04, +1, 0.03)]
    rows += [(f"null {i}", 0.01, 0.5, +1, 0.03) for i in range(31)]
    family = pd.DataFrame([{"readout": r, "lo": ci_for(e, p)[0], "hi": ci_for(e, p)[1], "direction": d, "sesoi": s}
                           for r, e, p, d, s in rows])
    family.loc[len(family)] = {"readout": "floor", "lo": -1.0, "hi": 1.0, "direction": 1, "sesoi": 0.03}
    family["not_measurable"] = [""] * 35 + ["floor: both arms"]
    out, summary = vs.family_view(family)
    out = out.set_index("readout")
    assert summary["ruled"] == 35 and summary["not_ruled"] == 1
    assert summary["expected_false_sign_verdicts"] == pytest.approx(1.75)
    assert out.loc["C1", "p"] == pytest.approx(0.03) and out.loc["C1", "verdict"] == "contradicted"
    assert out.loc["C1", "verdict_holm"] == "inconclusive" and out.loc["C1", "p_holm"] == 1.0
    assert out.loc["E0 NIH residual", "verdict_holm"] == "inconclusive"
    assert out.loc["strong", "verdict_holm"] == "supported" and out.loc["strong", "p_holm"] == pytest.approx(35e-6)
    # a tight small effect: excludes 0 unadjusted; widened to Holm's level it lies inside +-SESOI
    assert out.loc["tight", "verdict"] == "supported"
    assert out.loc["tight", "verdict_holm"] == "no effect of the paper's size"
    assert out.loc["floor", "verdict_holm"] == "not measurable" and np.isnan(out.loc["floor", "p_holm"])
    assert (summary["sign_verdicts"], summary["sign_verdicts_holm"]) == (4, 1)


def test_a_count_rule_readout_keeps_its_given_verdict_and_loses_its_sign_to_inconclusive():
    """C5 as a family member: its verdict comes from the count rule (given), its p from the exact tests; with 3
    readouts, p 0.03 is 0.06 after Holm (the second smallest, x2), so 'supported' becomes 'inconclusive' (a count has no 'no effect')."""
    family = pd.DataFrame([
        {"readout": "C5", "lo": -0.2, "hi": 1.0, "direction": 1, "sesoi": np.nan, "p": 0.03, "verdict": "supported",
         "rule": "count"},
        {"readout": "strong", "lo": 0.1, "hi": 0.3, "direction": 1, "sesoi": 0.03, "p": 1e-5, "verdict": "",
         "rule": "ci"},
        {"readout": "null", "lo": -0.1, "hi": 0.1, "direction": 1, "sesoi": 0.03, "p": 0.9, "verdict": "", "rule": "ci"}])
    out = vs.family_view(family)[0].set_index("readout")
    assert out.loc["C5", "verdict"] == "supported" and out.loc["C5", "p_holm"] == pytest.approx(0.06)
    assert out.loc["C5", "verdict_holm"] == "inconclusive"
    assert out.loc["strong", "verdict"] == out.loc["strong", "verdict_holm"] == "supported"
    assert out.loc["null", "verdict"] == "inconclusive"   # computed from its CI: no verdict given


# -- intervals inside the metric's range ------------------------------------------------------------------------------

def _exact_coverage(interval, n, p):
    pmf = stats.binom.pmf(np.arange(n + 1), n, p)
    return sum(pmf[k] for k in range(n + 1) if interval(k)[0] <= p <= interval(k)[1])


def test_wilson_interval_of_a_share_stays_inside_0_1_and_covers():
    """Exact coverage (a sum over the binomial, no simulation) near and away from the bounds."""
    assert vs.wilson_interval(0, 40)[0] == 0 and vs.wilson_interval(40, 40)[1] == 1
    covs = {(n, p): _exact_coverage(lambda k: vs.wilson_interval(k, n), n, p)
            for n in (40, 200) for p in (0.005, 0.02, 0.05, 0.1, 0.3, 0.5, 0.95, 0.99)}
    print("\nWilson exact coverage: " + ", ".join(f"n {n} p {p}: {c:.3f}" for (n, p), c in covs.items()))
    assert all(0.92 <= c <= 0.99 for c in covs.values()), covs     # Wilson's known dip near n p = 1: 0.920
    assert 0.94 <= np.mean(list(covs.values())) <= 0.97


def test_newcombe_difference_of_shares_stays_inside_minus_1_1_and_covers():
    assert vs.newcombe_difference(3, 3, 0, 3)[1] == 1 and vs.newcombe_difference(0, 3, 3, 3)[0] == -1
    n = 40
    for pa, pb in ((0.05, 0.02), (0.5, 0.45), (0.98, 0.9)):
        a, b = stats.binom.pmf(np.arange(n + 1), n, pa), stats.binom.pmf(np.arange(n + 1), n, pb)
        c = sum(a[x] * b[y] for x in range(n + 1) for y in range(n + 1)
                if (lambda ci: ci[0] <= pa - pb <= ci[1])(vs.newcombe_difference(x, n, y, n)))
        print(f"\nNewcombe exact coverage, n {n}, {pa} - {pb}: {c:.3f}")
        assert 0.93 <= c <= 0.99, (pa, pb, c)


def _beta(mu, sd, size, rng):
    k = mu * (1 - mu) / sd ** 2 - 1
    return rng.beta(mu * k, (1 - mu) * k, size)


BOUNDED_CASES = {   # per-seed values with a known mean: (generator, true mean)
    "F1 near 1 (0.97)": (lambda rng, n: _beta(0.97, 0.015, n, rng), 0.97),
    "F1 near 0 (0.05)": (lambda rng, n: _beta(0.05, 0.04, n, rng), 0.05),
    "F1 in the middle (0.5)": (lambda rng, n: _beta(0.5, 0.05, n, rng), 0.5),
    "collapse share of 40 steps (0.05)": (lambda rng, n: rng.binomial(40, _beta(0.05, 0.03, n, rng)) / 40, 0.05),
}


@pytest.mark.parametrize("n_seeds", [3, 5])
@pytest.mark.parametrize("case", list(BOUNDED_CASES))
def test_the_bounded_interval_of_a_mean_over_seeds_covers_the_true_mean(case, n_seeds):
    """2000 simulated experiments each; a mean on a bound (every seed 0) counts as a miss. The plain t-interval
    on the same draws leaves [0, 1] in many of them near a bound."""
    gen, mu = BOUNDED_CASES[case]
    rng, hits, outside = np.random.default_rng(7), 0, 0
    for _ in range(2000):
        v = gen(rng, n_seeds)
        r = vs.bounded_mean_interval(v)
        assert 0 <= r["lo"] <= r["hi"] <= 1
        hits += r["lo"] <= mu <= r["hi"]
        half = stats.t.ppf(0.975, n_seeds - 1) * v.std(ddof=1) / np.sqrt(n_seeds)
        outside += v.mean() - half < 0 or v.mean() + half > 1
    print(f"\nbounded interval, {case}, {n_seeds} seeds: coverage {hits / 2000:.1%}; the t-interval leaves [0, 1] "
          f"in {outside / 2000:.1%}")
    assert 0.93 <= hits / 2000 <= 0.975


def test_the_issue_s_per_seed_shares_get_an_interval_that_cannot_go_below_0():
    r = vs.bounded_mean_interval([0, 0.125, 0])
    assert r["effect"] == pytest.approx(0.125 / 3) and 0 < r["lo"] < 0.001 and r["hi"] < 1
    assert vs.bounded_mean_interval([0, 0, 0])["at_bound"]
    d = vs.bounded_mean_interval([0.5, -0.2, 0.9, 0.1], lower=-1, upper=1)     # a difference of shares
    assert -1 < d["lo"] < d["effect"] < d["hi"] < 1
    given = vs.bounded_mean_interval([0.5, 0.5], se=0.1, df=np.inf)   # a seed_image_interval's SE and df
    assert (given["lo"], given["hi"]) == pytest.approx((1 / (1 + np.exp(0.784)), 1 / (1 + np.exp(-0.784))), abs=1e-4)
    with pytest.raises(ValueError, match="must lie in"):
        vs.bounded_mean_interval([1.2, 0.5])


# -- a floor rule that reads the direction ----------------------------------------------------------------------------

FLOOR = "macro-F1 0.080 does not exceed 'always No Finding' (0.090, CI upper 0.110)"


@pytest.mark.parametrize("lo, hi, reference, treatment, measurable", [
    (0.105, 0.174, FLOOR, "", True),      # C3: SFT - base, base at floor, SFT above: the model's sign
    (-0.20, -0.05, "", FLOOR, True),      # C4: the scaffolded format at floor, worse than label-only: evidence
    (-0.05, 0.04, FLOOR, "", True),       # one arm at floor, no sign: ruled as usual
    (-0.20, -0.05, FLOOR, "", False),     # the reference at floor wins: a trivial answer decides the sign
    (0.05, 0.20, "", FLOOR, False),       # the treatment at floor wins: the same
    (0.05, 0.20, FLOOR, FLOOR, False),    # both at floor
    (-0.05, 0.04, FLOOR, FLOOR, False),
    (0.05, 0.20, "", "", True),           # neither
])
def test_the_floor_rule_reads_the_direction(lo, hi, reference, treatment, measurable):
    reason = vs.directional_floor(lo, hi, reference, treatment)
    assert (reason == "") == measurable
    if not measurable:
        assert "floor" in reason
