"""The competence gate on synthetic scores frames with known answers, its file's schema, and its registration in a
run before the models it judges."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chexreason_utils.evaluation import competence_gate as cg
from chexreason_utils.evaluation import scores
from chexreason_utils.paths import RunPaths

GATE = cg.load()
BEST_HI = 0.20   # the best trivial baseline's CI upper bound on validation in every frame below


def macro(stage, model, name, seed, f1, sets=8.0) -> dict:
    return {"dataset": "validation", "stage": stage, "model": model, "name": name, "checkpoint": stage, "seed": seed,
            "aggregate": scores.SEED if seed is not None else scores.MEAN, "label": "macro", "f1": f1,
            "distinct_sets": sets, "lo": np.nan, "hi": np.nan}


def frame(sft: dict, reference: dict, base: float, sets: dict | None = None) -> pd.DataFrame:
    """``sft``: (model, format) -> per-seed macro-F1; ``reference``: seed -> the SFT-images reference's macro-F1."""
    rows = [macro("sft", m, f, s, v, (sets or {}).get((m, f, s), 8.0)) for (m, f), by in sft.items()
            for s, v in by.items()]
    rows += [macro("reference", "reference", "SFT images", s, v) for s, v in reference.items()]
    rows += [macro("reference", "reference", "site pool", s, 0.9) for s in reference]
    rows.append(macro("base", "medical", "free_reasoning", None, base))
    rows.append({**macro("baseline", "trivial", "prevalence-matched random", None, 0.1), "hi": 0.15})
    rows.append({**macro("baseline", "trivial", "always No Finding", None, 0.12), "hi": BEST_HI})
    return pd.DataFrame(rows).astype({"seed": "Int64"})


GOOD = {("medical", "free_reasoning"): {0: 0.40, 1: 0.42}, ("medical", "only_label"): {0: 0.45, 1: 0.41},
        ("general", "free_reasoning"): {0: 0.30, 1: 0.31}, ("general", "only_label"): {0: 0.33, 1: 0.29}}
REF = {0: 0.48, 1: 0.50}


def test_every_part_passes_when_every_seed_clears_its_bar():
    table = cg.judge(frame(GOOD, REF, base=0.26), GATE, "free_reasoning")
    assert table["passes"].all() and cg.verdict(table) == "passes"
    a = table.loc[table["part"] == "a_reference"].set_index(["entry", "seed"])
    assert a.loc[("free_reasoning", 1), "bar"] == pytest.approx(0.8 * 0.50)   # the same seed's reference
    assert len(table.loc[table["part"] == "b_off_floor"]) == 8                  # 2 models x 2 formats x 2 seeds
    summary = cg.summary(table)
    assert set(summary["verdict"]) == {"pass"} and summary["seeds passing"].iloc[0] == "2 of 2"


def test_one_seed_below_its_own_reference_fails_part_a_although_the_mean_clears_it():
    sft = {**GOOD, ("medical", "only_label"): {0: 0.50, 1: 0.39}}   # mean 0.445 >= 0.8 x mean 0.49; seed 1 < 0.40
    table = cg.judge(frame(sft, REF, base=0.26), GATE, "free_reasoning")
    failing = table.loc[~table["passes"]]
    assert list(zip(failing["part"], failing["entry"], failing["seed"])) == [("a_reference", "only_label", 1)]
    assert "0.390 < 0.8 x reference 0.500" in failing["reason"].iloc[0]
    assert cg.verdict(table) == "fails (a_reference)"


def test_the_summary_lists_each_seeds_bar_beside_its_macro_f1():
    """Seed 0's reference is the larger: its bar comes first, as its macro-F1 does, not in sorted order."""
    table = cg.judge(frame(GOOD, {0: 0.50, 1: 0.48}, base=0.26), GATE, "free_reasoning")
    rows = cg.summary(table).set_index(["part", "model", "entry"])
    only_label = rows.loc[("a_reference", "medical", "only_label")]
    assert only_label["macro-F1 per seed"] == "0.450 / 0.410" and only_label["bar"] == "0.400 / 0.384"
    assert only_label["seeds passing"] == "2 of 2"
    assert rows.loc[("b_off_floor", "general", "free_reasoning"), "bar"] == f"{BEST_HI + 0.05:.3f}"   # shared
    one_missing = cg.summary(cg.judge(frame(GOOD, {1: 0.48}, base=0.26), GATE, "free_reasoning"))   # seed 0: none
    only_label = one_missing.set_index(["part", "model", "entry"]).loc[("a_reference", "medical", "only_label")]
    assert only_label["bar"] == "— / 0.384" and only_label["macro-F1 per seed"] == "0.450 / 0.410"


def test_part_b_needs_the_margin_over_the_best_baselines_upper_bound_and_five_label_sets():
    sft = {**GOOD, ("general", "free_reasoning"): {0: BEST_HI + 0.049, 1: 0.31}}
    sets = {("general", "only_label", 0): 4.0}
    table = cg.judge(frame(sft, REF, base=0.26, sets=sets), GATE, "free_reasoning")
    failing = table.loc[~table["passes"]].set_index(["model", "entry", "seed"])
    assert set(failing.index) == {("general", "free_reasoning", 0), ("general", "only_label", 0)}
    assert "< always No Finding CI upper bound 0.200 + 0.05" in failing.loc[("general", "free_reasoning", 0), "reason"]
    assert failing.loc[("general", "only_label", 0), "reason"] == "4 distinct label set(s) < 5"
    just = cg.judge(frame({**GOOD, ("general", "free_reasoning"): {0: BEST_HI + 0.05, 1: 0.31}}, REF, base=0.26),
                    GATE, "free_reasoning")
    assert just["passes"].all()   # exactly at the bar passes


def test_part_c_needs_the_zero_shot_base_strictly_above_the_upper_bound():
    at = cg.judge(frame(GOOD, REF, base=BEST_HI), GATE, "free_reasoning")
    assert list(at.loc[~at["passes"], "part"]) == ["c_zero_shot"]
    assert cg.judge(frame(GOOD, REF, base=BEST_HI + 0.001), GATE, "free_reasoning")["passes"].all()


def test_a_format_the_run_did_not_train_fails_with_its_reason():
    sft = {k: v for k, v in GOOD.items() if k != ("medical", "only_label")}
    table = cg.judge(frame(sft, REF, base=0.26), GATE, "free_reasoning")
    row = table.loc[~table["passes"]].iloc[0]
    assert row["part"] == "a_reference" and "format not trained" in row["reason"]


def test_a_gate_file_out_of_schema_names_the_file_and_key(tmp_path):
    bad = tmp_path / "gate.yaml"
    bad.write_text(GATE.text.replace("dataset: validation", "dataset: CheXpert"))
    with pytest.raises(cg.GateError, match=f"{bad}: key 'dataset': the gate judges validation only"):
        cg.load(bad)
    bad.write_text(GATE.text.replace("ratio: 0.8", "ratio: 1.8"))
    with pytest.raises(cg.GateError, match="key 'parts.a_reference.ratio': a number in"):
        cg.load(bad)
    bad.write_text(GATE.text.replace("reference: SFT images", "reference: ImageNet"))
    with pytest.raises(cg.GateError, match="key 'parts.a_reference.reference'"):
        cg.load(bad)


def test_a_run_records_the_gate_before_its_models_and_refuses_a_gate_edited_after(tmp_path):
    paths = RunPaths.for_profile("smoke", tmp_path / "run")
    with pytest.raises(cg.GateEditedError, match="built before it recorded the competence gate"):
        cg.check_registered(paths, GATE)
    cg.register(paths, GATE)
    assert paths.competence_gate_record.read_text() == GATE.text
    cg.check_registered(paths, GATE)
    edited = tmp_path / "gate.yaml"
    edited.write_text(GATE.text.replace("ratio: 0.8", "ratio: 0.5"))
    later = cg.load(edited)
    with pytest.raises(cg.GateEditedError, match="was edited after this run's base models were built"):
        cg.check_registered(paths, later)
    with pytest.raises(cg.GateEditedError, match="edited after"):   # 00 rerun on the same run keeps the first record
        cg.register(paths, later)
    assert paths.competence_gate_record.read_text() == GATE.text
