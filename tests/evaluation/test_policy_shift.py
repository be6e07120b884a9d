"""What RL does to the policy (issue 37, item 8): the drift measure, the reliance image sets and pass@k, on cases
with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from chexreason_utils.evaluation import policy_shift
from chexreason_utils.prompts import PROMPT_VARIANTS
from chexreason_utils.train import models


def test_pass_at_k_is_the_unbiased_estimate_from_n_samples():
    correct = np.array([[0] * 8, [1] + [0] * 7, [1] * 8, [1, 1] + [0] * 6])
    assert policy_shift.pass_at_k(correct, 1).tolist() == pytest.approx([0, 1 / 8, 1, 2 / 8])
    assert policy_shift.pass_at_k(correct, 8).tolist() == [0, 1, 1, 1]   # any correct sample among all eight
    assert policy_shift.pass_at_k(correct, 2)[1] == pytest.approx(1 - 21 / 28)   # 1 - C(7,2)/C(8,2)
    with pytest.raises(ValueError, match="1 <= k <= n = 8"):
        policy_shift.pass_at_k(correct, 9)


def test_another_patients_image_is_never_the_patients_own_and_each_image_is_used_once(tmp_path):
    images = pd.DataFrame({"image_id": [f"i{k}" for k in range(9)], "patient_id": list("aaabbbccd"),
                           "image_path": [f"p{k}.png" for k in range(9)]})
    swapped = policy_shift.swapped_images(images, seed=3)
    owner = dict(zip(images["image_path"], images["patient_id"]))
    assert sorted(swapped["image_path"]) == sorted(images["image_path"])   # a permutation
    assert all(owner[p] != patient for p, patient in zip(swapped["image_path"], swapped["patient_id"]))
    assert swapped["image_id"].tolist() == images["image_id"].tolist()   # each row keeps its id (and truth)
    with pytest.raises(ValueError, match="one patient holds 5 of 9 images"):
        policy_shift.swapped_images(images.assign(patient_id=list("aaaaabbcd")), seed=0)
    blank = policy_shift.blank_images(images, tmp_path, 32)
    assert blank["image_path"].nunique() == 1
    assert (np.asarray(Image.open(blank["image_path"].iloc[0])) == policy_shift.GREY).all()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """A tiny Gemma3 model and a copy with its language model's weights nudged."""
    root = tmp_path_factory.mktemp("policy")
    corpus = list(PROMPT_VARIANTS.values()) + ["<think>heart.</think><solution>Cardiomegaly</solution>"] * 10
    first = models.TINY_BUILDERS["gemma3"](corpus, root / "a", hidden=64, vocab=500)
    second = root / "b"
    second.mkdir()
    for f in first.iterdir():
        (second / f.name).write_bytes(f.read_bytes())
    weights = next(second.glob("*.safetensors"))
    tensors = load_file(weights)
    generator = torch.Generator().manual_seed(0)
    nudged = {k: v + 0.05 * torch.randn(v.shape, generator=generator) if "lm_head" in k or "embed_tokens" in k else v
              for k, v in tensors.items()}
    save_file(nudged, weights, metadata={"format": "pt"})
    image = root / "x.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype("uint8")).convert("RGB").save(image)
    return first, second, image


def test_the_drift_of_a_model_from_itself_is_zero_and_from_another_is_positive(two_models):
    first, second, image = two_models
    prompt, answers = next(iter(PROMPT_VARIANTS)), ["<think>heart.</think><solution>Cardiomegaly</solution>", ""]
    same = policy_shift.completion_kl(first, first, [image, image], prompt, answers)
    moved = policy_shift.completion_kl(first, second, [image, image], prompt, answers)
    assert same[0] == pytest.approx(0, abs=1e-6) and moved[0] > 1e-4
    assert np.isnan(same[1]) and np.isnan(moved[1])   # an empty answer has no tokens to read
    with pytest.raises(ValueError, match="2 images but 1 answers"):
        policy_shift.completion_kl(first, first, [image, image], prompt, answers[:1])


def test_sampled_answers_are_n_per_image_in_image_order(two_models):
    first, _, image = two_models
    images = pd.DataFrame({"image_id": ["a", "b", "c"], "image_path": [str(image)] * 3})
    sampled = policy_shift.sampled_answers(first, images, next(iter(PROMPT_VARIANTS)), 4, 0.8, 0.95, 8, seed=0,
                                           batch_size=2, progress=False)
    assert sampled["image_id"].tolist() == [i for i in "abc" for _ in range(4)]
    assert sampled["sample"].tolist() == [0, 1, 2, 3] * 3


def test_a_pooled_share_keeps_its_interval_inside_its_range():
    from chexreason_utils.evaluation import metrics

    rare = [[np.r_[1.0, np.zeros(39)]], [np.r_[1.0, 1.0, np.zeros(38)]]]   # shares 0.025 and 0.05: near the floor
    plain, bounded = metrics.pooled_mean_ci(rare, 200), metrics.pooled_mean_ci(rare, 200, bounds=(0.0, 1.0))
    assert plain["lo"] < 0 <= bounded["lo"] < bounded["effect"] < bounded["hi"] <= 1
    assert bounded["t_lo"] == plain["lo"] and bounded["effect"] == pytest.approx(0.0375)
