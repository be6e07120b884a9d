"""Training seeds (profile parameter, per-seed paths), the seed x image CI, and the claims verdicts."""
import re

import numpy as np
import pandas as pd
import pytest

from chexreason_utils.evaluation import verdict_statistics
from chexreason_utils.evaluation import claims, metrics
from chexreason_utils.evaluation.diagnostics import CollapseRule, neighbour_rules
from chexreason_utils.report import reporting
from chexreason_utils.config import ConfigError, load_profile
from chexreason_utils.paths import RunPaths, model_tag
from chexreason_utils.queries import entries
from chexreason_utils.train.model_registry import base_model
from chexreason_utils.training_runs import diagnostics as run_diagnostics


def test_profiles_default_seeds_and_bad_seed_lists_name_the_parameter():
    assert len(load_profile("tiny").seeds) >= 3
    assert load_profile("smoke").seeds == [0, 1] and load_profile("paper").seeds == [0]
    for bad, what in (([], "non-empty"), ([0, 1, 0], "repeats"), (["a"], "integers")):
        with pytest.raises(ConfigError, match=rf"seeds.*{what}"):
            load_profile("smoke", {"seeds": bad})


def test_every_seed_has_its_own_folders_and_cache_tags(tmp_path):
    paths = RunPaths.for_profile("smoke", tmp_path, tmp_path / "fig")
    assert paths.sft_model("medical", "free_reasoning", 1) == tmp_path / "02_sft/seed-1/medical/free_reasoning"
    assert paths.grpo_run("hard", 2) == tmp_path / "03_grpo/seed-2/hard"
    assert model_tag("sft-medical-x", 3) == "seed-3-sft-medical-x" and model_tag("base-medical") == "base-medical"
    assert paths.prediction_file(model_tag("grpo-hard", 0), "val", "free_reasoning").name == \
        "seed-0-grpo-hard__val__free_reasoning.jsonl"


def test_each_seed_starts_from_its_own_built_base_and_the_paper_from_one_hub_model(tmp_path):
    paths = RunPaths.for_profile("smoke", tmp_path, tmp_path / "fig")
    tiny = load_profile("smoke")
    assert base_model(tiny, paths, "medical", 1) == str(tmp_path / "models/seed-1/tiny-gemma3")
    assert entries.base_models(tiny, paths, "general") == {
        s: (f"seed-{s}-base-general", str(tmp_path / f"models/seed-{s}/tiny-qwen2_5_vl")) for s in tiny.seeds}
    paper = load_profile("paper")
    assert entries.base_models(paper, paths, "medical") == {None: ("base-medical", paper.models.medical)}
    assert base_model(paper, paths, "medical", 3) == paper.models.medical


SESOI = {"C1": 0.03, "C2": 0.03, "C3": 0.03, "C4": 0.1, "C4 general gain": 0.05}


def flags(collapsed_steps=(), stride=1, last=16) -> pd.DataFrame:
    """One run's detector flags at its generation steps (every ``stride``-th optimiser step from 1)."""
    steps = np.arange(1, last + 1, stride)
    return pd.DataFrame({"step": steps, "collapsed": np.isin(steps, collapsed_steps)})


def collapse_runs(unstable: int, final: int, seeds: int = 3) -> dict:
    """C5's evidence: ``unstable`` / ``final`` of ``seeds`` runs with a 3-point episode on the generation axis."""
    episode = [5, 7, 9]                                  # three consecutive points of the ablation's every-2nd grid
    return {"unstable": [flags(episode if s < unstable else (), 2) for s in range(seeds)],
            "final": [flags(range(5, 10) if s < final else ()) for s in range(seeds)],
            "axis": "generation", "min_steps": 3}


def test_each_of_the_five_verdicts_is_reached_by_a_synthetic_case():
    row = lambda lo, hi, seeds=3, reason="": pd.Series({"effect": (lo + hi) / 2, "lo": lo, "hi": hi,  # noqa: E731
                                                        "seeds": seeds, "var_seeds": 1e-4, "var_images": 1e-5,
                                                        "not_measurable": reason})
    assert claims.judge(row(0.01, 0.2), +1, 0.03, "x") == ("supported", "")
    assert claims.judge(row(-0.2, -0.01), -1, 0.03, "x") == ("supported", "")
    assert claims.judge(row(-0.2, -0.01), +1, 0.03, "x") == ("contradicted", "")
    assert claims.judge(row(-0.02, 0.01), +1, 0.03, "x") == ("no effect of the paper's size", "")
    v, note = claims.judge(row(-0.1, 0.1), +1, 0.03, "x")
    assert v == "inconclusive" and re.search(r"half-width 0.100 > SESOI 0.03: about \d+ seeds would bring it below", note)
    assert claims.judge(row(-0.1, 0.1, reason="floor: general sft only_label"), +1, 0.03, "x") == \
        ("not measurable", "floor: general sft only_label")
    assert verdict_statistics.verdict(0.0, 0.0, -1, 0.03) == "no effect of the paper's size"   # touching 0 does not exclude it
    assert set(verdict_statistics.VERDICTS) == {"supported", "contradicted", "no effect of the paper's size", "inconclusive",
                                    "not measurable"}


def test_bad_verdict_input_names_the_cause():
    with pytest.raises(ValueError, match="direction"):
        verdict_statistics.verdict(0.1, 0.2, 0, 0.03)
    with pytest.raises(ValueError, match=r"claims.sesoi_c1 must be > 0"):
        verdict_statistics.verdict(0.1, 0.2, +1, 0.0, "claims.sesoi_c1")
    one = pd.Series({"effect": 0.1, "lo": 0.05, "hi": 0.15, "seeds": 1, "var_seeds": 0.0, "var_images": 1e-3,
                     "not_measurable": ""})
    v, note = claims.judge(one, +1, 0.03, "claims.sesoi_c1")
    assert v == "not measurable" and "no seed-level CI" in note
    with pytest.raises(ValueError, match=r"claims.sesoi_c5 must be > 0"):
        claims.judge(one, +1, -0.1, "claims.sesoi_c5")
    assert claims.sesoi(load_profile("tiny"))["C4"] == pytest.approx(claims.CLAIMS[3].paper_value / 2, abs=1e-3)


def test_seed_image_ci_of_a_macro_f1_and_identical_seeds():
    """Identical seeds: no between-seed variance, so the interval is the image bootstrap's; seeds that
    disagree widen it."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 4))
    p = np.where(rng.random(y.shape) < 0.25, 1 - y, y)
    one = metrics.bootstrap_macro_f1(y, p, 500, seed=5)
    three = metrics.bootstrap_macro_f1(y, [p, p, p], 500, seed=5)
    assert not one["seed_level"] and three["seed_level"] and three["var_seeds"] == 0
    assert (three["lo"], three["hi"], three["effect"]) == pytest.approx((one["lo"], one["hi"], one["effect"]), abs=1e-9)
    other = np.where(rng.random(y.shape) < 0.45, 1 - y, y)
    mixed = metrics.bootstrap_macro_f1(y, [p, other, p, other], 500, seed=5)
    assert mixed["hi"] - mixed["lo"] > one["hi"] - one["lo"] and mixed["df"] < np.inf


def test_a_macro_f1_interval_near_zero_stays_inside_the_metrics_range():
    """Three seeds near macro-F1 0 (one seed finds a rare label, two answer nothing right): the t-interval leaves
    [0, 1]; the interval on the logit scale does not, and an all-zero entry sits at the bound."""
    y = np.zeros((60, 3), dtype=int)
    y[:6, 0] = 1
    hit = np.zeros_like(y)
    hit[:6, 0] = 1
    out = metrics.bootstrap_macro_f1(y, [hit, np.zeros_like(y), np.zeros_like(y)], 300, seed=2)
    assert out["t_lo"] < 0 <= out["lo"] < out["effect"] < out["hi"] <= 1 and not out["at_bound"]
    zero = metrics.bootstrap_macro_f1(y, [np.zeros_like(y)] * 3, 300, seed=2)
    assert zero["at_bound"] and zero["lo"] == zero["hi"] == zero["effect"] == 0.0


def test_paired_with_a_fixed_model_and_the_probability_of_improvement():
    y = np.ones((10, 2), dtype=int)
    d = metrics.paired_bootstrap(y, np.zeros_like(y), [np.ones_like(y), np.zeros_like(y)], 200, seed=0)
    assert d["per_seed"] == [1.0, 0.0] and d["prob_improvement"] == 0.75    # one win, one tie, of two pairs
    assert metrics.prob_improvement([0.1, 0.2, 0.3], [0.25, 0.35, 0.05]) == pytest.approx(5 / 9)
    with pytest.raises(ValueError, match="same seeds"):
        metrics.paired_bootstrap(y, [y, y], [y, y, y], 10)


def _evidence(n=120, seeds=3):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (n, 5))
    flip = lambda p: np.where(rng.random(y.shape) < p, 1 - y, y)  # noqa: E731
    good = [flip(0.1) for _ in range(seeds)]
    bad = [flip(0.4) for _ in range(seeds)]
    fmts = lambda ra: {"only_label": bad, "free_reasoning": bad, "reasoning_a": ra}  # noqa: E731
    return {"CheXpert": (y, {"base": [flip(0.5)], "sft": bad, "grpo": good}),      # GRPO better: C1 supported
            "NIH": (y, {"base": bad[:1], "sft": bad, "grpo": good}),               # GRPO better: C2 contradicted
            "validation formats": (y, {"general": fmts(good), "medical": fmts(bad)}),   # C4 supported
            "collapse": collapse_runs(3, 0, seeds)}                                  # C5 supported: 3 of 3 vs 0 of 3


def _table(ev, floors=None, n_boot=200):
    contrasts = pd.DataFrame(claims.contrast_rows(claims.measure(ev, floors, n_boot=n_boot, seed=0)))
    return claims.claims_table(contrasts, SESOI).set_index("claim")


def test_claims_table_has_five_rows_leading_with_verdict_and_effect_ci():
    ev = _evidence()
    ev["NIH"][1]["base"] = [ev["NIH"][1]["sft"][0]]    # base = seed 0's SFT: C3's effect is small
    table = _table(ev)
    assert table.index.tolist() == ["C1", "C2", "C3", "C4", "C5"]
    assert table.reset_index().columns[:4].tolist() == ["claim", "verdict", "effect [95% CI]", "note"]
    assert table[["effect", "lo", "hi"]].notna().all().all() and (table["seeds"] == 3).all()
    v = table["verdict"]
    assert (v["C1"], v["C2"], v["C4"], v["C5"]) == ("supported", "contradicted", "supported", "supported")
    assert set(v) <= set(verdict_statistics.VERDICTS)
    assert table.loc["C4", "paper_value"] == pytest.approx(0.1983, abs=1e-4)
    assert "gain(general) +" in table.loc["C4", "note"] and "gain(medical)" in table.loc["C4", "note"]
    assert table.loc["C5", "paper_in_ci"] == "stated in words"
    cap = claims.caption("tiny", True, 3)
    assert "phantom world" in cap and "the claims tested together" in cap and metrics.CI_METHOD in cap


def test_c4_is_the_papers_two_part_claim():
    ev = _evidence()
    y, preds = ev["validation formats"]
    worse = [np.where(np.random.default_rng(s).random(y.shape) < 0.6, 1 - y, y) for s in range(3)]
    # the general model's scaffold hurts it (gain < 0) but hurts the medical one more: difference > 0
    preds["general"]["reasoning_a"] = worse
    preds["medical"]["reasoning_a"] = [np.zeros_like(y)] * 3
    table = _table(ev)
    assert table.loc["C4", "effect"] > 0 and table.loc["C4", "lo"] > 0           # the difference alone would pass
    assert table.loc["C4", "verdict"] == "contradicted" and "gain(general) -" in table.loc["C4", "note"]
    # in the family-wise view the part that contradicts carries C4: its CI and p, not the supporting difference's
    contrasts = pd.DataFrame(claims.contrast_rows(claims.measure(ev, n_boot=200, seed=0)))
    family = claims.family_rows(claims.claims_table(contrasts, SESOI), contrasts, SESOI).set_index("readout")
    gain = contrasts.set_index("contrast").loc["C4 general gain"]
    assert gain["hi"] < 0 and family.loc["C4", "hi"] == gain["hi"] and family.loc["C4", "p"] < 0.05
    assert family.loc["C4", "sesoi"] == SESOI["C4 general gain"]                   # the part's SESOI, not C4's
    assert family.loc["C4", "p"] == pytest.approx(verdict_statistics.p_from_ci(gain["lo"], gain["hi"], gain["df"]))
    # the general model's other formats at floor and better than its scaffold (gain < 0): the floor decides the sign
    floor = "general sft only_label (sft) on validation: answers with 1 distinct label set(s)"
    ev = _evidence()
    ev["validation formats"][1]["general"]["reasoning_a"] = [np.zeros_like(y)] * 3
    row = _table(ev, {"C4 general gain": (floor, "")}).loc["C4"]
    assert row["verdict"] == "not measurable" and row["note"].count(floor) == 1       # said once, for both parts
    assert "the reference, at floor" in row["note"]


def test_a_floor_makes_a_claim_not_measurable_only_where_it_decides_the_sign():
    """Synthetic cases of the directional floor rule: the base at floor and SFT above it (C3: measurable, the model
    beat a trivial answer); both arms at floor (C1: not measurable); the scaffold at floor and worse than the other
    formats (C4's general gain < 0: measurable evidence that the scaffold hurts)."""
    ev = _evidence()
    ev["NIH"][1]["base"] = [np.zeros_like(ev["NIH"][0])]          # a base that answers nothing: SFT beats it
    base_floor, arm_floor = "medical base reasoning_a (base) on NIH: macro-F1 0.000", "an arm at floor"
    table = _table(ev, {"C3": (base_floor, ""), "C1": (arm_floor, arm_floor)})
    assert table.loc["C3", "verdict"] == "supported" and table.loc["C3", "lo"] > 0
    assert table.loc["C1", "verdict"] == "not measurable" and "both arms at floor" in table.loc["C1", "note"]
    y, preds = ev["validation formats"]
    preds["general"]["reasoning_a"] = [np.zeros_like(y)] * 3       # the scaffold collapses to answering nothing
    row = _table(ev, {"C4 general gain": ("", "general sft reasoning_a (sft) on validation: 1 distinct label set")}).loc["C4"]
    assert row["verdict"] == "contradicted" and "gain(general) -" in row["note"]


def test_c5_is_not_measurable_when_the_detector_fires_in_no_run():
    ev = _evidence()
    ev["collapse"] = collapse_runs(0, 0)
    row = _table(ev).loc["C5"]
    assert row["verdict"] == "not measurable" and "fired in no run" in row["note"]


def test_c5_counts_collapsed_runs_on_the_registered_axis_with_an_exact_test():
    """Known answers of the count rule: 3 of 3 vs 0 of 3 is Boschloo's smallest one-sided p, 1/64 < 0.025; 2 of 3
    vs 0 of 3 cannot decide; the reverse count contradicts. On the generation axis a final-recipe episode of three
    consecutive optimiser steps is two points of the ablation's grid: no episode there."""
    table = _table({**_evidence(), "collapse": collapse_runs(3, 0)}).loc["C5"]
    assert table["verdict"] == "supported" and table["effect"] == pytest.approx(1.0)
    assert "unstable 3 of 3, final 0 of 3" in table["note"] and "0.0156" in table["note"]
    assert -1 <= table["lo"] <= table["hi"] <= 1 and np.isnan(table["sesoi"])
    assert _table({**_evidence(), "collapse": collapse_runs(2, 0)}).loc["C5", "verdict"] == "inconclusive"
    short = collapse_runs(0, 0)
    short["final"] = [flags([5, 6, 7]), flags([5, 6, 7]), flags([5, 6, 7])]   # 3 optimiser steps: 2 grid points
    assert _table({**_evidence(), "collapse": short}).loc["C5", "verdict"] == "not measurable"
    short["axis"] = "optimiser"                                               # read on optimiser steps: 3 in a row
    reversed_ = _table({**_evidence(), "collapse": short}).loc["C5"]
    assert reversed_["verdict"] == "contradicted" and "unstable 0 of 3, final 3 of 3" in reversed_["note"]


def test_c5_reports_how_its_verdict_fares_over_the_detectors_neighbourhood():
    """Known answers of the registered neighbourhood (27 threshold settings x 3 episode lengths): long episodes in
    every unstable run and none in the final recipe keep "supported" in all 81 settings; where the looser third of the
    threshold settings also flags every final-recipe step, 27 of the 81 settings say otherwise."""
    runs = collapse_runs(0, 0)
    runs["unstable"] = [flags(range(3, 17, 2), 2) for _ in range(3)]          # 7 points of the ablation's grid
    for arm in ("unstable", "final"):
        for run in runs[arm]:
            for i in range(27):
                run[f"collapsed_{i}"] = run["collapsed"]
    row = _table({**_evidence(), "collapse": runs}).loc["C5"]
    assert row["verdict"] == "supported" and "the same verdict in 81 of 81 settings" in row["note"]
    for run in runs["final"]:
        for i in range(9):
            run[f"collapsed_{i}"] = True
    row = _table({**_evidence(), "collapse": runs}).loc["C5"]
    assert row["verdict"] == "supported" and "the same verdict in 54 of 81 settings" in row["note"]
    assert "final 0-3 of 3 runs collapsed" in row["note"] and "unstable 3-3 of 3" in row["note"]


def test_the_detector_neighbourhood_brackets_the_rule():
    rule = CollapseRule(0.5, 0.2, 0.9, 5, 3)
    near = neighbour_rules(rule)
    assert len(near) == 27 and near[13] == rule
    assert {r.entropy_fraction for r in near} == {0.4, 0.5, 0.625} and max(r.zero_std_min for r in near) == 1.0


def test_a_claim_whose_input_is_missing_names_the_artifact(tmp_path):
    ev = _evidence()
    del ev["collapse"]
    with pytest.raises(claims.MissingEvidence, match=r"C5.*'collapse'"):
        claims.measure(ev, n_boot=50)
    contrasts = pd.DataFrame(claims.contrast_rows(claims.measure(_evidence(), n_boot=50)))
    with pytest.raises(claims.MissingEvidence, match=r"C5 .*not measured"):
        claims.claims_table(contrasts.loc[contrasts["contrast"] != "C5"], SESOI)
    with pytest.raises(KeyError, match=r"claims.sesoi_c4_general_gain"):
        claims.claims_table(contrasts, {k: v for k, v in SESOI.items() if k != "C4 general gain"})
    cfg = load_profile("smoke")
    paths = RunPaths.for_profile("smoke", tmp_path, tmp_path / "fig")
    with pytest.raises(FileNotFoundError, match=r"03_grpo/seed-1/ablation-hard/log_history\.csv"):
        run_diagnostics.collapse_flags(cfg, paths, "ablation-hard", 1)


def test_collapse_share_and_scaffold_gain():
    per_step = pd.DataFrame({"step": range(1, 11)})
    episodes = pd.DataFrame({"start": [3, 8], "end": [5, 9], "steps": [3, 2]})
    assert claims.collapse_share(per_step, episodes) == pytest.approx(0.5)
    assert claims.collapse_share(per_step, episodes.iloc[0:0]) == 0.0
    assert claims.scaffold_gain({"reasoning_a": 0.4, "a": 0.1, "b": 0.3}) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="reasoning_a"):
        claims.scaffold_gain({"a": 0.1, "b": 0.2})


def test_tables_show_the_mean_and_each_seed():
    rows = pd.DataFrame({"format": ["x", "x", "y", "y"], "seed": [0, 1, 0, 1], "macro_f1": [0.2, 0.4, 0.1, 0.3]})
    reported = pd.DataFrame({"format": ["x", "y"], "macro_f1": [0.5, 0.6]})
    t = reporting.beside(rows, reported, "format", "smoke", ["macro_f1"])
    assert list(t.columns) == [("reported (paper)", "macro_f1"), ("reproduced (smoke, mean of 2 seeds)", "macro_f1"),
                               ("seed 0", "macro_f1"), ("seed 1", "macro_f1")]
    assert t.loc["x"].tolist() == pytest.approx([0.5, 0.3, 0.2, 0.4])
    per_seed = {0: pd.DataFrame({"base": 0.1, "SFT": 0.2}, index=["Atelectasis"]),
                1: pd.DataFrame({"base": 0.1, "SFT": 0.4}, index=["Atelectasis"])}
    t5 = reporting.test_table(per_seed, 5, "smoke", fixed=("base",))
    assert t5.loc["Atelectasis", ("reproduced (smoke, mean of 2 seeds)", "SFT")] == pytest.approx(0.3)
    assert ("seed 1", "SFT") in t5.columns and ("seed 1", "base") not in t5.columns
    ranks = reporting.format_ranking(rows.assign(model="m")).set_index("format")
    assert ranks.loc["x"].tolist() == [1, 1, 1]


def test_the_padchest_claims_and_c6_rule_on_both_drops():
    """C2 PadChest and C3 PadChest are ruled like C2 and C3; C6 ("the NIH drop reproduces on PadChest") is
    supported only when both drops are, and its family member takes the larger of their two p."""
    rng = np.random.default_rng(4)
    ev = _evidence()
    y = rng.integers(0, 2, (150, 5))
    flip = lambda p: [np.where(rng.random(y.shape) < p, 1 - y, y) for _ in range(3)]   # noqa: E731
    good, bad = flip(0.1), flip(0.4)
    ev["NIH"] = (ev["NIH"][0], {"base": ev["NIH"][1]["base"], "sft": ev["NIH"][1]["grpo"], "grpo": ev["NIH"][1]["sft"]})
    sesoi = {**SESOI, "C2 PadChest": SESOI["C2"], "C3 PadChest": SESOI["C3"], "C6": SESOI["C2"]}
    active = claims.CLAIMS + claims.PADCHEST_CLAIMS

    def table(pad):
        contrasts = pd.DataFrame(claims.contrast_rows(claims.measure({**ev, "PadChest": pad}, n_boot=200, seed=0,
                                                                     claims=active)))
        return claims.claims_table(contrasts, sesoi, active).set_index("claim"), contrasts

    drops, contrasts = table((y, {"base": bad[:1], "sft": good, "grpo": bad}))   # GRPO worse at both sites
    assert drops.index.tolist() == ["C1", "C2", "C3", "C4", "C5", "C2 PadChest", "C3 PadChest", "C6"]
    v = drops["verdict"]
    assert (v["C2"], v["C2 PadChest"], v["C3 PadChest"], v["C6"]) == ("supported",) * 4
    assert drops.loc["C6", "paper_in_ci"] == "not in the paper" and "C2 PadChest: supported" in drops.loc["C6", "note"]
    family = claims.family_rows(drops.reset_index(), contrasts, sesoi).set_index("readout")
    assert family.loc["C6", "p"] == pytest.approx(max(family.loc["C2", "p"], family.loc["C2 PadChest", "p"]))
    rises, contrasts = table((y, {"base": bad[:1], "sft": bad, "grpo": good}))     # GRPO better at PadChest
    assert (rises.loc["C2 PadChest", "verdict"], rises.loc["C6", "verdict"]) == ("contradicted", "contradicted")
    family = claims.family_rows(rises.reset_index(), contrasts, sesoi).set_index("readout")   # carried by PadChest's rise
    assert family.loc["C6", "lo"] == family.loc["C2 PadChest", "lo"] > 0 and family.loc["C6", "p"] < 0.05
    floored = claims.measure({**ev, "PadChest": (y, {"base": bad[:1], "sft": good, "grpo": bad})},
                             {"C2 PadChest": ("SFT at floor", "GRPO at floor")}, n_boot=100, seed=0, claims=active)
    assert floored["C6"]["not_measurable"] == "as C2 PadChest"
