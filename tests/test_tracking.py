"""Experiment tracking: a minimal SFT, GRPO and control with report_to=tensorboard, read back by tensorboard."""
import numpy as np
import pytest
from PIL import Image

from chexreason_utils import config_reads
from chexreason_utils.train import grpo, models, sft
from chexreason_utils.config import GRPOConfig, SFTConfig, load_profile
from chexreason_utils.tracking import Tracking, run_name

CORPUS = ["<think>Analysis: enlarged heart.</think><solution>Cardiomegaly</solution>"] * 20


def scalars(folder):
    """tag -> [(step, value)] of the event files in one tensorboard run folder, by tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_sft_grpo_and_control_write_tensorboard_logs_with_trl_metric_names(tmp_path):
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype("uint8")).save(img)
    base = models.TINY_BUILDERS["gemma3"](CORPUS, tmp_path / "base", hidden=32, vocab=300)
    track = tmp_path / "tracking"
    sft_name = run_name("sft", base, "free_reasoning", 0)
    data = sft.make_dataset(["Which findings?"] * 4, ["<solution>Cardiomegaly</solution>"] * 4, [str(img)] * 4)
    cfg = SFTConfig(learning_rate=1e-3, max_steps=2, batch_size=2, grad_accum=1, logging_steps=1,
                    gradient_checkpointing=False, max_length=256)
    res = sft.train_sft(base, data, None, tmp_path / "sft", cfg, full_finetune=True,
                        tracking=Tracking("tensorboard", track, sft_name))
    got = scalars(track / "tensorboard" / sft_name)
    assert {"train/loss", "train/mean_token_accuracy", "train/entropy", "train/learning_rate"} <= set(got)
    assert [v for _, v in got["train/loss"]] == pytest.approx(res.log["loss"].dropna().tolist())

    rl = grpo.make_dataset("Which findings?", [str(img)] * 2, [["Cardiomegaly"]] * 2)
    g = GRPOConfig(learning_rate=1e-4, max_steps=2, prompts_per_step=1, num_generations=2,
                   max_completion_length=6, save_steps=10, seed=0)
    name = run_name("grpo", base, "hard", 0)
    run = grpo.train_grpo(grpo.GRPOInputs(tmp_path / "sft", rl, g, "hard", {}), tmp_path / "grpo", device="cpu",
                          tracking=Tracking("tensorboard", track, name))
    policy, control = scalars(track / "tensorboard" / name), scalars(track / "tensorboard" / f"{name}-control")
    metrics = {"train/reward", "train/reward_std", "train/rewards/hard_jaccard/mean", "train/rewards/hard_length/mean",
               "train/frac_reward_zero_std"}
    assert metrics | {"train/kl", "train/loss"} <= set(policy) and metrics <= set(control)
    log = run.log.dropna(subset=["reward"])
    assert [s for s, _ in policy["train/reward"]] == log["step"].tolist() == run.control["step"].tolist() == [1, 2]
    assert [v for _, v in policy["train/reward"]] == pytest.approx(log["reward"].tolist())
    assert [v for _, v in control["train/reward"]] == pytest.approx(run.control["reward"].tolist())
    assert not (tmp_path / "grpo" / "runs").exists() and not (tmp_path / "sft" / "runs").exists()


def test_tracking_is_no_result():
    cfg = load_profile("smoke", {"report_to": "tensorboard"})
    assert config_reads.values(cfg, ["report_to"]) == {} and "report_to" in config_reads.NOT_RESULTS
    with pytest.raises(ValueError, match="report_to 'mlflow'"):
        Tracking("mlflow")
    assert Tracking().trainer_args() == {"report_to": "none"}
    assert run_name("grpo", "google/medgemma-4b-it", "ablation-hard", 1) == "grpo-medgemma-4b-it-ablation-hard-seed1"
