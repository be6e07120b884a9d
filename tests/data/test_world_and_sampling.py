"""The phantom world (determinism, learnable signal, real loaders) and the penalty-based sampler."""
import hashlib
import json
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from chexreason_utils.config import WorldConfig
from chexreason_utils.data import load_chexpert, load_mimic, load_nih
from chexreason_utils.data.phantom import CHEXPERT_LOADINGS, MIMIC_PREVALENCE, copula_labels, generate_world
from chexreason_utils.labels import CHEXPERT_LABELS
from chexreason_utils.data.sampling import greedy_select, select_test_set, split_train_pool


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_and_card(tmp_path):
    cfg = WorldConfig(n_mimic_studies=20, n_chexpert_test_studies=5, n_nih_images=10, n_pretrain=4)
    fresh = generate_world(tmp_path / "a", cfg)
    generate_world(tmp_path / "b", cfg)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    card = json.loads((tmp_path / "a" / "world_card.json").read_text())
    reread = generate_world(tmp_path / "a", cfg)   # skipped: the card read back, as notebook 00 shows it on a rerun
    assert json.dumps(fresh) == json.dumps(reread) == json.dumps(card)   # same values, same key order
    assert card["config"]["seed"] == cfg.seed and set(card["prevalence_sources"]) == {"mimic", "chexpert_test", "nih"}
    other = WorldConfig(**{**cfg.__dict__, "seed": 8})
    generate_world(tmp_path / "c", other)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_vision_pool_leaves_every_other_file_as_it_was(tmp_path):
    """The vision-pretraining pool draws from its own stream: the sites and the caption pool keep their bytes, the
    card records the pool, and no pool image is a site image."""
    cfg = WorldConfig(n_mimic_studies=20, n_chexpert_test_studies=5, n_nih_images=10, n_pretrain=4)
    generate_world(tmp_path / "a", cfg)
    generate_world(tmp_path / "b", WorldConfig(**{**cfg.__dict__, "n_vision_pretrain": 6}))
    files = lambda root: {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))  # noqa: E731
                          if p.is_file() and p.name != "world_card.json"}
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    vision = {k: v for k, v in b.items() if k.startswith("pretrain/vision/")}
    assert {k: v for k, v in b.items() if k not in vision} == a
    assert len([k for k in vision if k.endswith(".png")]) == 12
    assert not set(vision.values()) & set(a.values())
    card = json.loads((tmp_path / "b" / "world_card.json").read_text())
    assert card["counts"]["vision_pretrain"]["medical"] == 6 and card["config"]["n_vision_pretrain"] == 6
    rows = [json.loads(x) for x in (tmp_path / "b" / "pretrain/vision/medical/captions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all({"image", "text", "findings"} <= set(r) for r in rows)


def test_real_loaders_read_the_world(small_world):
    root, cfg = small_world
    mimic = load_mimic(root / "mimic-cxr-jpg" / "2.0.0")
    assert mimic.dropped["lateral or other view"] > 0 and len(mimic.dataset) > 100
    assert set(mimic.dataset["view"]) <= {"AP", "PA"}
    chex = load_chexpert(root / "CheXpert-v1.0", "test")
    assert len(chex.dataset) == cfg.n_chexpert_test_studies
    nih = load_nih(root / "ChestX-ray14")
    assert len(nih.dataset) + sum(nih.dropped.values()) == cfg.n_nih_images
    assert {"M", "F"} >= set(nih.dataset["sex"])


def _pixels_and_labels(loaded, size=32):
    x = np.stack([np.asarray(Image.open(p).convert("L").resize((size, size)), dtype=np.float32).ravel() / 255
                  for p in loaded.dataset["image_path"]])
    return x, loaded.labels()


def test_phantom_images_carry_learnable_signal(tmp_path):
    """Logistic regression on 32x32 pixels, trained on MIMIC-like images: macro-AUROC >= 0.75 held out."""
    cfg = WorldConfig(n_mimic_studies=1400, n_chexpert_test_studies=10, n_nih_images=600, n_pretrain=2, seed=3)
    generate_world(tmp_path, cfg)
    x, y = _pixels_and_labels(load_mimic(tmp_path / "mimic-cxr-jpg" / "2.0.0"))
    split = int(0.7 * len(x))
    x_nih, y_nih = _pixels_and_labels(load_nih(tmp_path / "ChestX-ray14"))
    aucs, nih_aucs = {}, {}
    for k, label in enumerate(CHEXPERT_LABELS):
        if y[:split, k].sum() >= 3 and 0 < y[split:, k].sum() < len(y) - split:
            clf = LogisticRegression(C=0.05, max_iter=300).fit(x[:split], y[:split, k])
            aucs[label] = roc_auc_score(y[split:, k], clf.decision_function(x[split:]))
            if 0 < y_nih[:, k].sum() < len(y_nih):
                nih_aucs[label] = roc_auc_score(y_nih[:, k], clf.decision_function(x_nih))
    macro, nih_macro = float(np.mean(list(aucs.values()))), float(np.mean(list(nih_aucs.values())))
    print(f"MIMIC-like held-out macro-AUROC {macro:.3f} over {len(aucs)} labels: "
          + ", ".join(f"{k} {v:.2f}" for k, v in aucs.items()))
    print(f"NIH-like (cross-site, same classifier) macro-AUROC {nih_macro:.3f} over {len(nih_aucs)} mapped labels")
    assert len(aucs) >= 10 and macro >= 0.75


def test_sampler_coverage_disjointness_determinism_and_speed():
    rng = np.random.default_rng(0)
    truth = copula_labels(rng, 200_000, MIMIC_PREVALENCE, CHEXPERT_LOADINGS)
    truth["No Finding"] = (truth.drop(columns="Support Devices").sum(axis=1) == 0).astype(np.int8)
    labels = truth[list(CHEXPERT_LABELS)].to_numpy()
    frame = pd.DataFrame({"patient_id": rng.integers(0, 65_000, len(labels)).astype(str)})
    t0 = time.perf_counter()
    out, sel = split_train_pool(frame, labels, 2000, 1000, 500, 0.05, 0.30, 4.0, seed=1)
    assert time.perf_counter() - t0 < 60   # the 10 s goal is measured by bench/sampler.py
    for name in ("sft", "rl"):
        assert not sel[name].shortfalls, sel[name].describe()
        assert (sel[name].fractions >= 0.05).all()
    sizes = out["subset"].value_counts().to_dict()
    assert sizes == {"sft": 2000, "rl": 1000, "val": 500}
    assert not out.index.duplicated().any()
    by_patient = out.groupby("patient_id")["subset"].nunique()
    assert (by_patient == 1).all()                       # patient-disjoint
    again, _ = split_train_pool(frame, labels, 2000, 1000, 500, 0.05, 0.30, 4.0, seed=1)
    assert out.index.equals(again.index) and (out["subset"] == again["subset"]).all()


def test_sampler_reports_labels_the_pool_cannot_cover():
    labels = np.zeros((100, 3), dtype=np.int8)
    labels[:, 0] = 1
    labels[:2, 1] = 1          # only 2 images with label 1
    sel = greedy_select(labels, 60, names=("A", "B", "C"))
    assert set(sel.shortfalls) == {"B", "C"} and sel.shortfalls["B"] == pytest.approx(2 / 60)
    assert "could not bring these labels" in sel.describe()
    with pytest.raises(ValueError, match="only 100 are available"):
        greedy_select(labels, 101, names=("A", "B", "C"))


def test_nih_test_selection_rules():
    labels = np.zeros((50, 14), dtype=np.int8)
    labels[:, CHEXPERT_LABELS.index("No Finding")] = 1
    labels[45:, CHEXPERT_LABELS.index("Edema")] = 1
    labels[45:, CHEXPERT_LABELS.index("No Finding")] = 0
    frame = pd.DataFrame({"patient_id": [str(i) for i in range(50)]})
    picked, report = select_test_set(frame, labels, 20, ("Edema", "No Finding"), "greedy_balanced", 0)
    assert len(picked) == 20 and labels[picked.index, CHEXPERT_LABELS.index("Edema")].sum() == 5
    assert report.counts.to_dict() == {"Edema": 5, "No Finding": 15}
    assert len(select_test_set(frame, labels, 20, ("Edema", "No Finding"), "random", 0)[0]) == 20
    with pytest.raises(ValueError, match="unknown test selection rule"):
        select_test_set(frame, labels, 20, ("Edema",), "best", 0)


def test_a_pretraining_pool_with_a_test_image_or_patient_is_named(tmp_path):
    """data.pool_check: a pool row whose image has a test image's bytes, or whose patient_id is a test patient,
    is an error naming the pool file, the row and the test set; a clean pool passes."""
    from chexreason_utils.data.pool_check import PoolLeakError, check_pools, pool_folders

    test_img = tmp_path / "site" / "t1.png"
    test_img.parent.mkdir()
    Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(test_img)
    tests = {"nih_test": pd.DataFrame({"image_path": [str(test_img)], "patient_id": ["00042"]})}
    pool = tmp_path / "pretrain" / "vision" / "medical"
    (pool / "images").mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 9, dtype=np.uint8)).save(pool / "images" / "a.png")
    rows = [{"image": "images/a.png", "text": "x"}]
    (pool / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert pool_folders(tmp_path / "pretrain") == [pool] and check_pools([pool], tests) == 1
    (pool / "images" / "b.png").write_bytes(test_img.read_bytes())
    (pool / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + [{"image": "images/b.png"}]))
    with pytest.raises(PoolLeakError, match=r"captions.jsonl, row 2: image 'images/b.png' is the nih_test test image"):
        check_pools([pool], tests)
    rows.append({"image": "images/a.png", "patient_id": "00042"})
    (pool / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(PoolLeakError, match="row 2: patient_id '00042' is a patient of the nih_test test set"):
        check_pools([pool], tests)
