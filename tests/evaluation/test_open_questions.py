"""Pre-registered experiments beyond the paper: registrations, E0's decomposition, E4's re-rendered NIH sites."""
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from chexreason_utils.evaluation import label_count
from chexreason_utils.evaluation import metrics, registration
from chexreason_utils.data.phantom import knobs_hash, write_nih_variant


def test_every_experiment_is_registered_and_valid():
    regs = registration.load_all()
    assert list(regs) == ["E0", "E1", "E2", "E3", "E4", "E5", "Q1"]
    assert {r.id for r in regs.values() if r.status == "built"} == {"E0", "E1", "E2", "E3", "E4", "E5", "Q1"}
    assert regs["E0"].sesoi_of("NIH") == 0.028 and regs["E0"].direction_of("CheXpert") == 1
    text = registration.markdown(regs["E4"])
    assert "| factor | acquisition, prevalence, lesions_unscored, labeller_noise, age_effect, all |" in text


@pytest.mark.parametrize("edit, key", [(lambda r: r.pop("sesoi"), "sesoi"),
                                       (lambda r: r.update(sesoi={"NIH": 0, "CheXpert": 0.03}), "sesoi.NIH"),
                                       (lambda r: r.update(direction={"NIH": 2, "CheXpert": 1}), "direction.NIH"),
                                       (lambda r: r.update(id="E9"), "id"),
                                       (lambda r: r.update(grid={"test_set": []}), "grid.test_set"),
                                       (lambda r: r.update(verdict_rule="my own"), "verdict_rule"),
                                       (lambda r: r.update(extra=1), "extra")])
def test_a_broken_registration_names_its_file_and_key(tmp_path, edit, key):
    raw = registration.yaml.safe_load((registration.REGISTRATION_DIR / "E0_label_count.yaml").read_text())
    edit(raw)
    path = tmp_path / "E0_label_count.yaml"
    path.write_text(registration.yaml.safe_dump(raw))
    with pytest.raises(registration.RegistrationError, match=rf"E0_label_count.yaml: key '{key}'"):
        registration.load(path)


def test_count_matching_drops_the_rarest_and_adds_the_commonest():
    order = label_count.commonness_order(["A", "B", "C", "D"], {"A": 0.1, "B": 0.5, "C": 0.3, "D": 0.5})
    assert order.tolist() == [1, 3, 2, 0]                    # B, D (tie: table order), C, A
    pred = np.array([[1, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    matched = label_count.count_matched(pred, [1, 3, 0], order)
    assert matched.tolist() == [[0, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="counts"):
        label_count.count_matched(pred, [1, 2], order)


def test_oracles_on_a_small_truth():
    order = np.array([0, 1, 2])                              # label 0 commonest
    y = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    only = label_count.oracle(y, order, label_count.ORACLES[0])
    plus = label_count.oracle(y, order, label_count.ORACLES[1])
    assert only.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]] and plus.tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 1]]
    # per-label F1 of "only": 1, 2/3, 2/3; of "plus": 1/2, 1, 4/5
    assert metrics.weighted_macro_f1(y, only, np.ones((1, 3)))[0] == pytest.approx((1 + 4 / 3) / 3)
    assert metrics.weighted_macro_f1(y, plus, np.ones((1, 3)))[0] == pytest.approx((1 / 2 + 1 + 4 / 5) / 3)


def test_the_decomposition_sums_to_the_measured_change():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 5)) < 0.35).astype(np.int8)
    sft = [(rng.random((40, 5)) < 0.45).astype(np.int8) for _ in range(3)]
    grpo = [np.where(rng.random((40, 5)) < 0.8, y, 0).astype(np.int8) * (rng.random((40, 5)) < 0.6) for _ in range(3)]
    order = np.arange(5)
    parts = label_count.decompose(y, sft, grpo, order, n_boot=200, seed=1)
    measured, length, residual = (parts[p] for p in label_count.PARTS)
    assert measured["effect"] == pytest.approx(length["effect"] + residual["effect"], abs=1e-12)
    assert np.allclose(measured["per_seed"], np.add(length["per_seed"], residual["per_seed"]), atol=1e-12)
    paired = metrics.paired_bootstrap(y, sft, grpo, n_boot=200, seed=1)
    assert measured["effect"] == pytest.approx(paired["effect"]) and measured["lo"] == pytest.approx(paired["lo"])
    assert abs(length["effect"]) > 0.01 and abs(residual["effect"]) > 0.01     # a real split, not 0 + change
    assert parts["labels_per_image"]["GRPO"] == [float(g.sum(1).mean()) for g in grpo]
    matched = label_count.count_matched(sft[0], grpo[0].sum(1), order)
    assert (matched.sum(1) == grpo[0].sum(1)).all()


def test_the_orders_of_the_amendment_and_their_mean():
    """The registered order, its reverse and 20 seeded random orders; the decomposition under several orders
    averages their count-matched macro-F1 and still sums to the measured change."""
    order = np.array([2, 0, 1, 4, 3])
    assert [o.tolist() for o in label_count.orders(order, "rarest dropped first")] == [order.tolist()]
    assert label_count.orders(order, "commonest dropped first")[0].tolist() == order[::-1].tolist()
    randoms = label_count.orders(order, "random order", seed=3)
    assert len(randoms) == label_count.RANDOM_ORDERS and all(sorted(o) == list(range(5)) for o in randoms)
    assert [o.tolist() for o in randoms] == [o.tolist() for o in label_count.orders(order, "random order", seed=3)]
    rng = np.random.default_rng(0)
    y = (rng.random((40, 5)) < 0.35).astype(np.int8)
    sft = [(rng.random((40, 5)) < 0.45).astype(np.int8) for _ in range(2)]
    grpo = [(rng.random((40, 5)) < 0.2).astype(np.int8) for _ in range(2)]
    both = label_count.decompose(y, sft, grpo, [order, order[::-1]], n_boot=50, seed=1)
    one, other = (label_count.decompose(y, sft, grpo, o, n_boot=50, seed=1) for o in (order, order[::-1]))
    assert both["length part"]["effect"] == pytest.approx((one["length part"]["effect"] + other["length part"]["effect"]) / 2)
    assert both["measured change"]["effect"] == pytest.approx(both["length part"]["effect"] + both["residual"]["effect"])
    with pytest.raises(ValueError, match="unknown order 'backwards'"):
        label_count.orders(order, "backwards")


def _files(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_nih_variants_change_one_factor_and_leave_the_main_world_alone(small_world, tmp_path):
    root, cfg = small_world
    before = _files(root)
    card = json.loads((root / "world_card.json").read_text())
    for factor in ("none", "acquisition", "labeller_noise"):
        if factor != "none":
            write_nih_variant(tmp_path / factor, cfg, factor)
    assert _files(root) == before and card["knobs_hash"] == knobs_hash(cfg)   # main world and fingerprint as they were
    main_nih = root / "ChestX-ray14"
    entry = "Data_Entry_2017_v2020.csv"
    images = sorted(p.relative_to(main_nih) for p in main_nih.rglob("*.png"))
    acq, lab = tmp_path / "acquisition" / "ChestX-ray14", tmp_path / "labeller_noise" / "ChestX-ray14"
    # acquisition: the same patients and labels, other pixels; labeller noise: the same pixels, other labels
    assert (acq / entry).read_text() == (main_nih / entry).read_text()
    assert all((acq / p).read_bytes() != (main_nih / p).read_bytes() for p in images)
    assert all((lab / p).read_bytes() == (main_nih / p).read_bytes() for p in images)
    main_labels = pd.read_csv(main_nih / entry)["Finding Labels"]
    assert (pd.read_csv(lab / entry)["Finding Labels"] != main_labels).any()
    assert (lab / "test_list.txt").read_text() == (main_nih / "test_list.txt").read_text()
    with pytest.raises(ValueError, match="unknown NIH site factor 'contrast'"):
        write_nih_variant(tmp_path / "x", cfg, "contrast")


@pytest.mark.pipeline
def test_the_smoke_run_writes_e0_and_e4_with_verdicts(smoke_run):
    from chexreason_utils.evaluation.verdict_statistics import VERDICTS
    from chexreason_utils.config import load_profile

    paths, _, _ = smoke_run
    table = pd.read_csv(paths.figures / "e0_decomposition.csv").fillna({"order": ""})
    assert set(table["order"]) == {"", *label_count.ORDERS}
    for order in label_count.ORDERS:   # under every order the two parts sum to the measured change
        parts = table.loc[table["order"].isin(["", order])].set_index(["test_set", "part"])["effect"]
        for test_set in ("CheXpert", "NIH", "PadChest"):   # the smoke profile scores PadChest (E0's amendment)
            assert parts[(test_set, "measured change")] == pytest.approx(
                parts[(test_set, "length part")] + parts[(test_set, "residual")], abs=2e-6)   # CSV keeps 6 digits
    for _, g in table.loc[table["order"] != ""].groupby(["test_set", "part"]):
        assert g["over_orders"].nunique() == 1
        assert g["over_orders"].iloc[0] == (g["verdict"].iloc[0] if g["verdict"].nunique() == 1
                                            else "inconclusive (the order decides)")
    contrasts = pd.read_csv(paths.contrasts_file).set_index("contrast")
    assert parts[("NIH", "measured change")] == pytest.approx(contrasts.loc["SFT -> GRPO on NIH", "effect"], abs=2e-6)
    attribution = pd.read_csv(paths.figures / "e4_attribution.csv")
    assert attribution["factor"].tolist() == registration.get("E4").grid["factor"]
    assert set(attribution["verdict"]) <= set(VERDICTS)
    card = json.loads((paths.world / "world_card.json").read_text())
    assert card["knobs_hash"] == knobs_hash(load_profile("smoke").world)
    assert "### E4 · Shift attribution" in paths.report.read_text()
    family = pd.read_csv(paths.figures / "family_view.csv")
    claim_ids = ["C1", "C2", "C3", "C4", "C5", "C2 PadChest", "C3 PadChest", "C6"]
    assert family["readout"].tolist()[:8] == claim_ids and len(family) == 8 + 2 * 3 + len(attribution)
    ruled = family.loc[family["verdict"] != "not measurable"]
    assert ruled["p_holm"].ge(ruled["p"] - 1e-12).all() and family.loc[family["verdict"] == "not measurable", "p_holm"].isna().all()
    assert set(family["verdict_holm"]) <= set(VERDICTS)
    assert paths.report.read_text().index("## The family-wise view") > paths.report.read_text().index("## Claims")


@pytest.mark.parametrize("site, view", [("mimic", "PA"), ("chexpert", "AP"), ("nih", "PA")])
def test_counterfactual_renders_differ_only_in_the_marker_pixels(site, view):
    from chexreason_utils.data.phantom import SITES
    from chexreason_utils.data.phantom_render import counterfactual_pair, shortcut_mask

    plain, marked = counterfactual_pair(["Atelectasis", "Pleural Effusion"], SITES[site], 128, seed=5, view=view)
    changed = plain != marked
    mask = shortcut_mask(128)
    assert changed.any() and not (changed & ~mask).any() and (marked[mask] == 255).all()


def test_a_planted_shortcut_marks_only_training_images_with_its_finding(tmp_path):
    from chexreason_utils.config import WorldConfig
    from chexreason_utils.data.phantom import generate_world

    base = dict(image_size=64, n_mimic_studies=40, n_chexpert_test_studies=4, n_nih_images=4, n_pretrain=2)
    plain, planted = WorldConfig(**base), WorldConfig(**base, shortcut_rho=0.9)
    generate_world(tmp_path / "plain", plain)
    generate_world(tmp_path / "planted", planted)
    assert knobs_hash(plain) != knobs_hash(planted)
    records = [json.loads(line) for line in (tmp_path / "planted" / "phantom_findings.jsonl").read_text().splitlines()]
    marked = {r["path"] for r in records if r.get("shortcut_marker")}
    assert marked and all("Atelectasis" in r["truth"] and r["site"] == "mimic" for r in records if r["path"] in marked)
    with_finding = [r for r in records if r["site"] == "mimic" and "Atelectasis" in r["truth"]]
    assert len(marked) > 0.6 * len(with_finding)
    a, b = _files(tmp_path / "plain"), _files(tmp_path / "planted")
    differ = {p for p in a if a[p] != b[p]}
    assert differ == marked | {"phantom_findings.jsonl", "world_card.json"}   # nothing else moved


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5])
def test_e3_rl_prompts_hold_no_nih_test_patient(small_world, share):
    from chexreason_utils.data import load_nih
    from chexreason_utils.labels import NIH_EVAL_LABELS_PAPER
    from chexreason_utils.data.manifests import manifest_frame
    from chexreason_utils.data.sampling import mix_rl_prompts, select_test_set

    root, _ = small_world
    nih = load_nih(root / "ChestX-ray14", splits=["train_val", "test"])
    frame = manifest_frame(nih.dataset)
    test, _ = select_test_set(frame, nih.labels(), 10, NIH_EVAL_LABELS_PAPER, "random", seed=1)
    rl = pd.DataFrame({"image_id": [f"m{i}" for i in range(16)], "patient_id": [str(10_000_000 + i) for i in range(16)],
                       "dataset": "MIMIC-CXR-JPG", "labels": [["Edema"]] * 16, "subset": "rl"})
    mixed = mix_rl_prompts(rl, frame, test, share, seed=3)
    from_nih = mixed.loc[mixed["image_id"].isin(frame["image_id"])]
    assert len(mixed) == len(rl) and len(from_nih) == round(share * len(rl))
    assert not set(from_nih["patient_id"]) & set(test["patient_id"]) and not from_nih["patient_id"].duplicated().any()
    with pytest.raises(ValueError, match="only"):
        mix_rl_prompts(rl.iloc[:0].reindex(range(400)).assign(patient_id="x"), frame, test, 0.9, seed=3)
