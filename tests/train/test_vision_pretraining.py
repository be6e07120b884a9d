"""Vision pretraining of the tiny bases (train.vision_pretraining): the objectives learn, the pretrained tower
separates a planted label better than a random one, a seed fixes the weights, a bad pool row is named."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from chexreason_utils.data.phantom import _general_pool, _medical_pool
from chexreason_utils.train import models
from chexreason_utils.train.vision_pretraining import PoolError, VisionSettings, pooled_features, pretrain, targets

CORPUS = ["Chest radiograph. Findings: clear lungs, normal heart size.", "A picture of a red circle at the top.",
          "a small bright nodule in the right lung"] * 30


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision")
    built = {kind: build(CORPUS, root / kind, hidden=64, vocab=400) for kind, build in models.TINY_BUILDERS.items()}
    rng = np.random.default_rng(0)
    _medical_pool(root / "medical", 48, 64, rng)
    _general_pool(root / "general", 48, 64, rng)
    return root, built


def _planted_pool(folder: Path, n: int, seed: int) -> list[int]:
    """Noise images of random brightness; half carry a small bright spot (the planted label, Lung Lesion)."""
    rng = np.random.default_rng(seed)
    rows, planted = [], []
    for i in range(n):
        img = rng.normal(rng.uniform(60, 160), 20, (112, 112))
        spot = i % 2
        if spot:
            y, x = rng.integers(20, 80, 2)
            img[y:y + 14, x:x + 14] = 255
        (folder / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("RGB").save(folder / "images" / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "findings": {"Lung Lesion": "a small bright nodule"} if spot else {},
                     "text": "Chest radiograph. Findings: a small bright nodule." if spot else
                     "Chest radiograph. Findings: clear lungs, normal heart size."})
        planted.append(spot)
    (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return planted


def _probe_accuracy(features: np.ndarray, y: np.ndarray) -> float:
    """A ridge linear probe fitted on the first half, accuracy on the second."""
    half = len(y) // 2
    mu, sd = features[:half].mean(0), features[:half].std(0) + 1e-6
    x = np.c_[(features - mu) / sd, np.ones(len(y))]
    w = np.linalg.solve(x[:half].T @ x[:half] + 1.0 * np.eye(x.shape[1]), x[:half].T @ (2 * y[:half] - 1))
    return float(((x[half:] @ w > 0) == y[half:].astype(bool)).mean())


@pytest.mark.parametrize("kind, role", [("gemma3", "medical"), ("qwen2_5_vl", "general")])
@pytest.mark.parametrize("objective", ["multilabel", "contrastive", "both"])
def test_objective_lowers_its_loss(tiny, tmp_path, kind, role, objective):
    root, built = tiny
    record = pretrain(built[kind], root / role, role, tmp_path / "out",
                      VisionSettings(objective=objective, epochs=4, batch_size=16, learning_rate=2e-3))
    losses = record["epoch_losses"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "processor_config.json").is_file()
    models.load_model(tmp_path / "out", "cpu")   # the folder loads back as a model


def test_pretrained_tower_separates_a_planted_label(tiny, tmp_path):
    root, built = tiny
    planted = np.array(_planted_pool(tmp_path / "train", 128, 1))
    probe = np.array(_planted_pool(tmp_path / "probe", 128, 2))
    pretrain(built["gemma3"], tmp_path / "train", "medical", tmp_path / "pre",
             VisionSettings(objective="multilabel", epochs=6, batch_size=16, learning_rate=2e-3))
    paths = [tmp_path / "probe" / "images" / f"{i}.png" for i in range(len(probe))]
    random_acc = _probe_accuracy(pooled_features(built["gemma3"], paths), probe)
    trained_acc = _probe_accuracy(pooled_features(tmp_path / "pre", paths), probe)
    assert planted.mean() == 0.5
    assert trained_acc >= random_acc + 0.1 and trained_acc >= 0.8, (random_acc, trained_acc)


def test_deterministic_under_a_seed(tiny, tmp_path):
    root, built = tiny
    settings = VisionSettings(objective="both", epochs=2, batch_size=16, seed=3)
    first = pretrain(built["gemma3"], root / "medical", "medical", tmp_path / "a", settings)
    second = pretrain(built["gemma3"], root / "medical", "medical", tmp_path / "b", settings)
    assert first["epoch_losses"] == second["epoch_losses"]
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    other = pretrain(built["gemma3"], root / "medical", "medical", tmp_path / "c",
                     VisionSettings(objective="both", epochs=2, batch_size=16, seed=4))
    assert other["epoch_losses"] != first["epoch_losses"]


@pytest.mark.parametrize("role, row, field", [
    ("medical", {"image": "images/med_00000.png", "text": "x"}, "findings"),
    ("medical", {"image": "images/med_00000.png", "text": "x", "findings": ["Edema"]}, "findings"),
    ("medical", {"image": "images/med_00000.png", "text": "x", "findings": {"Flu": "y"}}, "findings"),
    ("general", {"image": "images/gen_00000.png", "text": "x", "objects": [{"colour": "pink", "shape": "circle"}]},
     "objects"),
    ("general", {"image": "images/gen_00000.png", "objects": []}, "text"),
])
def test_a_bad_row_names_the_file_and_field(tiny, tmp_path, role, row, field):
    root, built = tiny
    pool = tmp_path / "pool"
    (pool / "images").mkdir(parents=True)
    src = root / role / row["image"]
    (pool / row["image"]).write_bytes(src.read_bytes())
    good = json.loads((root / role / "captions.jsonl").read_text().splitlines()[0])
    (pool / "captions.jsonl").write_text(json.dumps({**good, "image": row["image"]}) + "\n" + json.dumps(row) + "\n")
    kind = "gemma3" if role == "medical" else "qwen2_5_vl"
    objective = "contrastive" if field == "text" else "multilabel"
    with pytest.raises(PoolError, match=rf"captions\.jsonl, row 2: field '{field}'"):
        pretrain(built[kind], pool, role, tmp_path / "out", VisionSettings(objective=objective, epochs=1))


def test_targets_of_the_phantom_pools(tiny):
    root, _ = tiny
    rows = [json.loads(x) for x in (root / "medical" / "captions.jsonl").read_text().splitlines()]
    y = targets("medical", rows, root / "medical" / "captions.jsonl")
    assert y.shape == (48, 14) and (y.sum(1) >= 1).all()
    rows = [json.loads(x) for x in (root / "general" / "captions.jsonl").read_text().splitlines()]
    y = targets("general", rows, root / "general" / "captions.jsonl")
    assert y.shape == (48, 9) and (y[:, :6].sum(1) >= 1).all() and (y[:, 6:].sum(1) >= 1).all()
