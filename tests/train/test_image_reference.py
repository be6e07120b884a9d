"""The supervised image reference on a synthetic image set where Cardiomegaly is an obvious bright blob (a CNN must
learn it), Edema is a coin flip the pixels do not show, Fracture a rare label of the training images only, and No
Finding is "no blob"."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from chexreason_utils.config import load_profile
from chexreason_utils.evaluation import metrics
from chexreason_utils.labels import label_matrix
from chexreason_utils.train import image_reference as ref

BLOB, NOISE, RARE = "Cardiomegaly", "Edema", "Fracture"
SETTINGS = ref.ReferenceSettings(seed=3, image_size=32, widths=(8, 16), epochs=8, batch_size=16, learning_rate=1e-2,
                                 shift=2, labels=(BLOB, NOISE, RARE, "No Finding"))


def blob_images(folder, n: int, seed: int, prevalence: float = 0.3, name: str = "img",
                rare: float = 0.0) -> pd.DataFrame:
    """``n`` 40-px noisy grayscale PNGs; a bright disc somewhere in the middle marks Cardiomegaly; ``rare`` of them
    are labelled Fracture, which the pixels do not show."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        pixels = rng.normal(0.3, 0.08, (40, 40))
        blob, noise = rng.random() < prevalence, rng.random() < 0.3
        if blob:
            y, x = np.mgrid[0:40, 0:40]
            cy, cx = rng.integers(12, 28, 2)
            pixels[(y - cy) ** 2 + (x - cx) ** 2 <= 25] += 0.5
        path = folder / f"{name}-{i}.png"
        Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(path)
        truth = [lbl for lbl, on in ((BLOB, blob), (NOISE, noise), (RARE, rng.random() < rare)) if on] or ["No Finding"]
        rows.append({"image_id": f"{name}-{i}", "image_path": str(path), "truth": truth})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread while this file's networks train: small convolutions spend more time in a second thread's
    synchronisation than in arithmetic (6x the CPU on 2 busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("blobs")
    train, val, test = (blob_images(root / part, n, seed, name=part, rare=rare)
                        for part, n, seed, rare in (("train", 160, 0, 0.1), ("val", 60, 1, 0), ("test", 80, 2, 0)))
    return train, val, test, ref.fit(train, val, SETTINGS)


def test_thresholds_maximise_validation_f1_and_fall_back_where_a_label_has_no_positive():
    y = np.array([[1, 0], [1, 0], [0, 0], [0, 0], [1, 0]])
    p = np.array([[.9, .2], [.6, .8], [.7, .1], [.2, .3], [.4, .5]])
    thresholds, chosen = ref.choose_thresholds(y, p)
    # calling .9, .7, .6, .4 positive: tp 3, 4 called, 3 positives -> F1 6/7, the best cut
    assert thresholds[0] == pytest.approx((.4 + .2) / 2)
    assert list(chosen) == [True, False] and thresholds[1] == ref.FALLBACK_THRESHOLD
    best = max(metrics.per_label(y[:, :1], (p[:, :1] >= t).astype(int), ["a"])["f1"][0] for t in p[:, 0])
    got = metrics.per_label(y[:, :1], (p[:, :1] >= thresholds[0]).astype(int), ["a"])["f1"][0]
    assert got == pytest.approx(best) == pytest.approx(6 / 7)


def test_learns_the_blob_far_above_the_prevalence_matched_random_baseline(world):
    train, val, test, reference = world
    frame = reference.predict(test)
    per_label = metrics.per_label(metrics.label_matrix(frame, [BLOB]), metrics.prediction_matrix(frame, [BLOB]), [BLOB])
    prevalence = metrics.label_matrix(test, [BLOB]).mean()   # the random baseline's expected F1 on this label
    assert prevalence < 0.45 and per_label["f1"][0] >= 0.9
    # the coin-flip label is not learnt: at best the F1 of calling every image positive, 2p / (1 + p)
    noise = metrics.per_label(metrics.label_matrix(frame, [NOISE]), metrics.prediction_matrix(frame, [NOISE]), [NOISE])
    p = metrics.label_matrix(test, [NOISE]).mean()
    assert noise["f1"][0] <= 2 * p / (1 + p) + 0.02
    assert reference.info["epoch_loss"][-1] < reference.info["epoch_loss"][0]


def test_thresholds_come_from_validation_only(world):
    train, val, test, reference = world
    assert reference.threshold_source[BLOB] == "validation"
    # a label with no positive in validation keeps the fallback
    assert reference.threshold_source["Fracture"].startswith("fallback")
    assert reference.thresholds[list(SETTINGS.labels).index("Fracture")] == ref.FALLBACK_THRESHOLD
    # the chosen thresholds are those of the validation probabilities, and give the best F1 there
    probs = reference.probabilities(val)
    expected, _ = ref.choose_thresholds(label_matrix(val, SETTINGS.labels), probs)
    np.testing.assert_array_equal(reference.thresholds, expected)
    # another validation truth moves the thresholds (the training images alone do not decide them)
    other = val.assign(truth=[[NOISE] if BLOB in t else ["No Finding"] for t in val["truth"]])
    moved, _ = ref.choose_thresholds(label_matrix(other, SETTINGS.labels), probs)
    assert moved[list(SETTINGS.labels).index(BLOB)] != reference.thresholds[list(SETTINGS.labels).index(BLOB)]


def test_same_seed_gives_identical_weights_and_predictions_another_seed_other_weights(world):
    train, val, test, reference = world
    again = ref.fit(train, val, SETTINGS)
    for name, tensor in reference.model.state_dict().items():
        assert tensor.numpy().tobytes() == again.model.state_dict()[name].numpy().tobytes(), name
    assert reference.probabilities(test).tobytes() == again.probabilities(test).tobytes()
    assert reference.key == again.key
    other = ref.fit(train, val, ref.ReferenceSettings(**{**SETTINGS.__dict__, "seed": 4}))
    assert not np.array_equal(other.model.head.weight.detach().numpy(), reference.model.head.weight.detach().numpy())
    assert other.key != reference.key


def test_save_load_round_trip_and_the_cache_refits_only_when_the_images_change(world, tmp_path, monkeypatch):
    train, val, test, reference = world
    loaded = ref.ImageReference.load(reference.save(tmp_path / "ref"))
    assert loaded.probabilities(test).tobytes() == reference.probabilities(test).tobytes()
    np.testing.assert_array_equal(loaded.thresholds, reference.thresholds)
    assert loaded.settings == SETTINGS and loaded.key == reference.key
    pd.testing.assert_frame_equal(loaded.predict(test), reference.predict(test))

    def no_refit(*args):
        raise AssertionError("refit although nothing changed")

    monkeypatch.setattr(ref, "fit", no_refit)
    cached = ref.fit_cached(train, val, SETTINGS, tmp_path / "ref")
    assert cached.probabilities(test[:5]).tobytes() == reference.probabilities(test[:5]).tobytes()
    # one training image with other bytes: another key, so fit_cached fits again
    Image.new("L", (40, 40), 200).save(tmp_path / "other.png")
    changed = train.assign(image_path=[str(tmp_path / "other.png"), *train["image_path"][1:]])
    assert ref.reference_key(changed, val, SETTINGS) != reference.key
    with pytest.raises(AssertionError, match="refit"):
        ref.fit_cached(changed, val, SETTINGS, tmp_path / "ref")


def test_predictions_have_the_vlm_schema_and_score_like_vlm_predictions(world):
    train, val, test, reference = world
    frame = reference.predict(test)
    assert {"image_id", "raw", "labels", "valid", "reason", "key", "prompt", "truth"} <= set(frame.columns)
    assert frame["valid"].all() and frame["labels"].map(len).min() >= 1   # nothing above threshold: No Finding
    assert frame["raw"][0].startswith("<solution>") and frame["raw"][0].endswith("</solution>")
    out = metrics.scores(frame, load_profile("smoke"), metrics.eval_labels(load_profile("smoke"), "CheXpert"))
    assert out["fail_rate"] == 0.0 and out["n"] == len(test)
    blob_f1 = metrics.per_label(*metrics.matrices(frame, load_profile("smoke"), [BLOB]), [BLOB])["f1"][0]
    assert blob_f1 >= 0.9


def test_cross_fitted_validation_answers_use_thresholds_chosen_on_the_other_fold(world):
    train, val, test, reference = world
    crossed = reference.predict_cross_fitted(val)
    assert list(crossed["image_id"]) == list(val["image_id"]) and crossed["valid"].all()
    fold = np.random.default_rng(SETTINGS.seed).permutation(len(val)) % 2
    probs, y = reference.probabilities(val), label_matrix(val, SETTINGS.labels)
    first = fold == 0
    cuts, _ = ref.choose_thresholds(y[~first], probs[~first])
    assert list(crossed["labels"][first]) == reference.answers(probs[first], cuts)
    cuts, _ = ref.choose_thresholds(y[first], probs[first])
    assert list(crossed["labels"][~first]) == reference.answers(probs[~first], cuts)


def test_a_label_without_a_positive_training_image_stops_the_fit_naming_it(world):
    train, val, test, reference = world
    without = train.assign(truth=[[lbl for lbl in t if lbl != RARE] or ["No Finding"] for t in train["truth"]])
    with pytest.raises(ValueError, match=f"cannot be trained: label.s. {RARE} have no positive image among its 160"):
        ref.fit(without, val, SETTINGS)
