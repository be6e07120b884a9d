"""Training seeds (profile parameter, per-seed paths), the two-level bootstrap, and the claims verdicts."""
import numpy as np
import pandas as pd
import pytest

from chexreason_utils import claims, metrics, reporting, scores
from chexreason_utils.config import ConfigError, load_profile
from chexreason_utils.paths import RunPaths, model_tag
from chexreason_utils.steps import diagnostics as diagnostic_steps


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


def test_verdict_rule_on_synthetic_effects():
    assert claims.verdict(0.01, 0.2, +1) == "supported"
    assert claims.verdict(-0.2, -0.01, -1) == "supported"
    assert claims.verdict(-0.2, -0.01, +1) == "contradicted"
    assert claims.verdict(0.01, 0.2, -1) == "contradicted"
    assert claims.verdict(-0.1, 0.1, +1) == "inconclusive"
    assert claims.verdict(0.0, 0.0, -1) == "inconclusive"       # a CI that touches 0 does not exclude it
    with pytest.raises(ValueError, match="direction"):
        claims.verdict(0.1, 0.2, 0)


def test_two_level_bootstrap_known_answer_seed_level():
    """Every image positive for every label: a seed predicting all ones has macro-F1 1 under any image
    resample, one predicting nothing has 0. With 2 of 4 seeds perfect, a replicate's mean is Binomial(4, 1/2)/4,
    so it is 0 with probability 1/16 and the 95% interval is [0, 1]."""
    y = np.ones((40, 3), dtype=int)
    preds = [np.ones_like(y), np.ones_like(y), np.zeros_like(y), np.zeros_like(y)]
    r = metrics.bootstrap_macro_f1(y, preds, n_boot=8000, seed=3)
    assert r["effect"] == 0.5 and r["per_seed"] == [1.0, 1.0, 0.0, 0.0] and r["n_seeds"] == 4
    assert (r["lo"], r["hi"]) == (0.0, 1.0)
    assert r["p_not_positive"] == pytest.approx(1 / 16, abs=0.01)


def test_two_level_bootstrap_with_identical_seeds_is_the_image_bootstrap():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 4))
    p = np.where(rng.random(y.shape) < 0.25, 1 - y, y)
    one = metrics.bootstrap_macro_f1(y, p, 500, seed=5)
    three = metrics.bootstrap_macro_f1(y, [p, p, p], 500, seed=5)
    assert (three["lo"], three["hi"], three["effect"]) == pytest.approx((one["lo"], one["hi"], one["effect"]), abs=1e-12)
    other = np.where(rng.random(y.shape) < 0.45, 1 - y, y)          # seeds that disagree widen the interval
    mixed = metrics.bootstrap_macro_f1(y, [p, other, p, other], 500, seed=5)
    assert mixed["hi"] - mixed["lo"] > one["hi"] - one["lo"]


def test_seed_only_bootstrap_and_paired_with_a_fixed_model():
    r = metrics.two_level_bootstrap(lambda s, w: [0.1, 0.2, 0.3][s], 3, (), n_boot=2000, seed=0)
    assert r["effect"] == pytest.approx(0.2) and 0.1 <= r["lo"] < 0.2 < r["hi"] <= 0.3
    y = np.ones((10, 2), dtype=int)
    d = metrics.paired_bootstrap(y, np.zeros_like(y), [np.ones_like(y), np.zeros_like(y)], 200, seed=0)
    assert d["per_seed"] == [1.0, 0.0]
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
            "collapse": {"final": [0.0] * seeds, "unstable": [0.0] * seeds}}       # nothing to tell: C5 inconclusive


def _contrasts(measured: dict) -> pd.DataFrame:
    return pd.DataFrame([scores.contrast_row({"kind": "claim", "contrast": c}, r) for c, r in measured.items()])


def test_claims_table_has_five_rows_with_effect_ci_and_verdict():
    ev = _evidence()
    ev["NIH"][1]["base"] = [ev["NIH"][1]["sft"][0]]    # base = seed 0's SFT: C3's effect is small, CI spans 0
    table = claims.claims_table(_contrasts(claims.measure(ev, n_boot=400, seed=0)))
    assert table["claim"].tolist() == ["C1", "C2", "C3", "C4", "C5"]
    assert table[["effect", "lo", "hi"]].notna().all().all() and (table["seeds"] == 3).all()
    v = dict(zip(table["claim"], table["verdict"]))
    assert (v["C1"], v["C2"], v["C4"], v["C5"]) == ("supported", "contradicted", "supported", "inconclusive")
    assert set(table["verdict"]) <= set(claims.VERDICTS)
    assert table.loc[table["claim"] == "C4", "paper_value"].item() == pytest.approx(0.1983, abs=1e-4)
    assert table.loc[table["claim"] == "C5", "paper_in_ci"].item() == "stated in words"
    assert "phantom world" in claims.caption("tiny", True, 3) and "reproduced" not in claims.caption("tiny", True, 3)


def test_a_claim_whose_input_is_missing_names_the_artifact(tmp_path):
    ev = _evidence()
    del ev["collapse"]
    with pytest.raises(claims.MissingEvidence, match=r"C5.*'collapse'"):
        claims.measure(ev, n_boot=50)
    with pytest.raises(claims.MissingEvidence, match=r"C5 .*not measured"):
        claims.claims_table(_contrasts(claims.measure(_evidence(), n_boot=50)).iloc[:4])
    cfg = load_profile("smoke")
    paths = RunPaths.for_profile("smoke", tmp_path, tmp_path / "fig")
    with pytest.raises(FileNotFoundError, match=r"03_grpo/seed-1/ablation-hard/log_history\.csv"):
        diagnostic_steps.run_collapse_share(cfg, paths, "ablation-hard", 1)


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
