"""Real-size checks without a GPU or the hub: LoRA on the real architectures, image-token bounds, the plan."""
import pytest
from PIL import Image

from chexreason_utils.__main__ import main
from chexreason_utils.config import load_profile
from chexreason_utils.train.models import bound_image_pixels, gemma3_processor, image_token_count, qwen25vl_processor
from chexreason_utils.train.real_models import REAL_MODELS, build_on_meta, lora_summary
from chexreason_utils.evaluation.scoring_plan import checkpoints_to_score, planned_steps, scoring_plan

MIMIC_SIZE = (3056, 2544)     # width × height of a typical MIMIC-CXR-JPG image
TEXTS = ["Atelectasis, Cardiomegaly, Edema, No Finding <think> </think> <solution> </solution>"] * 20


@pytest.mark.parametrize("hub_id, trainable, modules", [("google/medgemma-4b-it", 29_802_496, 238),
                                                        ("Qwen/Qwen2.5-VL-3B-Instruct", 29_933_568, 252)])
def test_lora_at_real_size_trains_only_the_language_model(hub_id, trainable, modules):
    model = build_on_meta(hub_id)
    assert next(model.parameters()).device.type == "meta"
    summary = lora_summary(model, r=16, alpha=32, dropout=0.1)
    assert summary.trainable == trainable and len(summary.modules) == modules and summary.language_only
    assert {m.rsplit(".", 1)[1] for m in summary.modules} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                              "up_proj", "down_proj"}
    assert summary.total > 3.5e9


def test_a_mimic_sized_image_fits_the_configured_lengths():
    cfg = load_profile("paper")
    image = Image.new("RGB", MIMIC_SIZE)
    qwen_hub = REAL_MODELS["Qwen/Qwen2.5-VL-3B-Instruct"].image
    qwen = qwen25vl_processor(TEXTS, 300, qwen_hub["min_pixels"], qwen_hub["max_pixels"])
    assert image_token_count(qwen, image) == 109 * 91         # the hub's bound: ~9,900 tokens, over max_length
    bound_image_pixels(qwen, cfg.models.image_min_pixels, cfg.models.image_max_pixels)
    qwen_tokens = image_token_count(qwen, image)
    gemma = gemma3_processor(TEXTS, 300, REAL_MODELS["google/medgemma-4b-it"].image["size"], 256)
    gemma_tokens = image_token_count(gemma, image)
    assert gemma_tokens == 256 and 256 <= qwen_tokens <= cfg.models.image_max_pixels // 784 == 1024
    room = cfg.sft.max_length - max(cfg.grpo.max_completion_length, cfg.evaluation.max_new_tokens) - 400  # prompt text
    assert max(qwen_tokens, gemma_tokens) <= room
    small = Image.new("RGB", (256, 256))                        # a small image is scaled up to min_pixels
    assert image_token_count(qwen, small) >= cfg.models.image_min_pixels // 784


def test_scoring_plan_keeps_validation_dense_and_tests_sparse():
    cfg = load_profile("paper")
    steps = planned_steps(cfg.grpo.max_steps, cfg.grpo.save_steps)
    assert steps == list(range(50, 501, 50)) and planned_steps(120, 50) == [50, 100, 120]
    plan = scoring_plan(cfg.evaluation, steps, best_step=150)
    assert plan.loc[plan["set"] == "val", "step"].tolist() == steps
    assert sorted(plan.loc[plan["set"] == "nih_test", "step"]) == [150, 250, 500]
    assert plan.loc[(plan["set"] == "nih_test") & (plan["step"] == 500), "why"].item() == "every 5, final"
    folders = [f"run/checkpoint-{s}" for s in steps]
    assert checkpoints_to_score(folders, plan, "chexpert_test") == ["run/checkpoint-150", "run/checkpoint-250",
                                                                     "run/checkpoint-500"]
    cfg.evaluation.val_checkpoint_every, cfg.evaluation.test_checkpoints = 4, ["final"]
    plan = scoring_plan(cfg.evaluation, steps)
    assert plan.loc[plan["set"] == "val", "step"].tolist() == [200, 400, 500]
    cfg.evaluation.test_checkpoints = ["best"]
    with pytest.raises(ValueError, match="unknown.*best_f1, final"):
        scoring_plan(cfg.evaluation, steps)


def test_plan_prints_without_gpu_data_or_hub(capsys):
    assert main(["plan", "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    for text in ("google/medgemma-4b-it", "29.8", "29.9", "02 SFT", "03 GRPO", "04 evaluation", "250, 500, best_f1",
                 "GPU GiB"):
        assert text in out


def test_trl_config_carries_dr_grpo_and_passes_vllm_through(tmp_path):
    from chexreason_utils.train.grpo import trl_config, vllm_args

    paper = load_profile("paper").grpo
    args = trl_config(paper, tmp_path, "cpu")
    assert (args.loss_type, args.scale_rewards, args.use_vllm) == ("dr_grpo", "none", False)
    assert trl_config(load_profile("tiny").grpo, tmp_path, "cpu").scale_rewards == "none"   # Dr. GRPO everywhere
    paper.use_vllm, paper.vllm_server_base_url = True, "http://gpu-2:8000"
    args = trl_config(paper, tmp_path, "cpu")
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_base_url) == (True, "server", "http://gpu-2:8000")
    paper.vllm_mode = "colocate"
    with pytest.raises(ValueError, match="colocate with trl 1.16.*6294 and 6401.*vllm_mode=server"):
        trl_config(paper, tmp_path, "cpu")
    assert vllm_args(paper, trl_version="1.17.0") == {"use_vllm": True, "vllm_mode": "colocate"}


def test_the_grpo_argument_table_reads_the_trl_configs_the_project_builds(tmp_path):
    from dataclasses import fields

    from chexreason_utils.config import GRPOConfig
    from chexreason_utils.train.grpo import TRL_ARGUMENTS, argument_table, trl_config

    smoke, paper = load_profile("smoke").grpo, load_profile("paper").grpo
    table = argument_table(smoke, paper).set_index("trl argument")
    built, paper_built = trl_config(smoke, tmp_path, "cpu"), trl_config(paper, tmp_path, "cpu")
    stated = {f.name for f in fields(GRPOConfig) if f.metadata.get("paper") == "stated"}
    assert list(table.index) == list(TRL_ARGUMENTS)
    for name, row in table.iterrows():
        assert row["this profile"] == str(getattr(built, name))
        assert row["paper"] == (str(getattr(paper_built, name)) if name in stated else "open")
        assert row["paper says"] == ("stated" if name in stated else "open")
    assert table.loc["scale_rewards", ["paper", "this profile"]].tolist() == ["none", "none"]
    assert table.loc["beta", "paper"] == "0.15" and table.loc["learning_rate", "paper"] == "open"
