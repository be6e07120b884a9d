"""Both tiny model classes: build, save, reload, chat template with an image, batched generate, SFT."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from chexreason_utils.train import models, sft
from chexreason_utils.config import SFTConfig
from chexreason_utils.prompts import PROMPT_VARIANTS, user_message

CORPUS = list(PROMPT_VARIANTS.values()) + ["<think>Analysis: enlarged heart.</think><solution>Cardiomegaly</solution>"] * 30


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {kind: build(CORPUS, root / kind, hidden=64, vocab=500) for kind, build in models.TINY_BUILDERS.items()}


@pytest.mark.parametrize("kind, cls, proc_cls", [
    ("gemma3", "Gemma3ForConditionalGeneration", "Gemma3Processor"),
    ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLImageOnlyProcessor"),
])
def test_build_reload_template_and_batched_generate(tiny_models, kind, cls, proc_cls):
    model = models.load_model(tiny_models[kind], device="cpu")
    processor = models.load_processor(tiny_models[kind])
    assert type(model).__name__ == cls and type(processor).__name__ == proc_cls
    assert model.dtype == torch.float32
    text = processor.apply_chat_template([user_message("Which findings?")], add_generation_prompt=True, tokenize=False)[0]
    assert "Which findings?" in text
    img = Image.fromarray((np.random.default_rng(0).random((128, 128)) * 255).astype("uint8")).convert("RGB")
    inputs = processor(text=[text] * 3, images=[[img]] * 3, return_tensors="pt", padding=True)
    assert (inputs["input_ids"][:, -1] == inputs["input_ids"][0, -1]).all()           # left padding
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    new = out[:, prompt_len:]
    assert out.shape[0] == 3 and torch.equal(out[:, :prompt_len], inputs["input_ids"])   # each row continues its prompt
    assert 1 <= new.shape[1] <= 5 and (new == new[0]).all()       # at most 5 new tokens; the same prompt, the same answer
    eos = torch.tensor(model.generation_config.eos_token_id).reshape(-1)
    assert new.shape[1] == 5 or torch.isin(new, eos).any(dim=1).all()   # fewer than 5 only when every row reached EOS


def test_gemma3_projector_is_not_zero(tiny_models):
    model = models.load_model(tiny_models["gemma3"], device="cpu")
    assert model.model.multi_modal_projector.mm_input_projection_weight.abs().sum() > 0


@pytest.mark.parametrize("kind", ["gemma3", "qwen2_5_vl"])
def test_lora_targets_leave_the_vision_tower_untouched(tiny_models, kind):
    from peft import get_peft_model

    peft_model = get_peft_model(models.load_model(tiny_models[kind], device="cpu"), models.lora_config())
    adapted = [n for n, _ in peft_model.named_modules() if n.endswith("lora_A")]
    assert len(adapted) == 7 * 2                                   # 7 projections x 2 language layers
    assert all("language_model" in n for n in adapted)
    assert not any(("vision" in n or "visual" in n) for n in adapted)


@pytest.mark.parametrize("kind", ["gemma3", "qwen2_5_vl"])
def test_sft_run_and_reuse(tiny_models, tmp_path, kind):
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(1).random((128, 128)) * 255).astype("uint8")).save(img)
    data = sft.make_dataset(["Which findings?"] * 8, ["<solution>Cardiomegaly</solution>"] * 8, [str(img)] * 8)
    cfg = SFTConfig(learning_rate=1e-3, max_steps=3, batch_size=4, grad_accum=1, logging_steps=1, eval_steps=2,
                    gradient_checkpointing=False, max_length=512)
    import shutil

    from safetensors.torch import load_file, save_file

    base = shutil.copytree(tiny_models[kind], tmp_path / "base")
    first = sft.train_sft(base, data, data.select(range(2)), tmp_path / "out", cfg, full_finetune=True)
    assert not first.reused and {"loss", "mean_token_accuracy", "entropy"} <= set(first.log.columns)
    assert (tmp_path / "out" / "model.safetensors").exists() and (tmp_path / "out" / "processor_config.json").exists()
    again = sft.train_sft(base, data, data.select(range(2)), tmp_path / "out", cfg, full_finetune=True)
    assert again.reused
    models.load_model(tmp_path / "out", device="cpu")
    os.utime(base / "model.safetensors", ns=(0, 10**18))               # touched, same bytes: still the same run
    moved = shutil.copytree(base, tmp_path / "moved")                  # and a copy elsewhere too
    assert sft.train_sft(moved, data, data.select(range(2)), tmp_path / "out", cfg, full_finetune=True).reused
    weights = load_file(str(base / "model.safetensors"))              # the base model's weights changed
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    save_file(weights, str(base / "model.safetensors"), metadata={"format": "pt"})
    assert not sft.train_sft(base, data, data.select(range(2)), tmp_path / "out", cfg, full_finetune=True).reused
    Image.fromarray((np.random.default_rng(2).random((128, 128)) * 255).astype("uint8")).save(img)
    assert not sft.train_sft(base, data, data.select(range(2)), tmp_path / "out", cfg, full_finetune=True).reused


def test_lora_sft_on_a_trained_tiny_checkpoint_saves_an_adapter(tiny_models, tmp_path):
    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((128, 128), dtype=np.uint8)).save(img)
    data = sft.make_dataset(["x"] * 4, ["<solution>Edema</solution>"] * 4, [str(img)] * 4)
    cfg = SFTConfig(max_steps=2, batch_size=2, grad_accum=1, logging_steps=1, gradient_checkpointing=False, max_length=512)
    sft.train_sft(tiny_models["gemma3"], data, None, tmp_path / "lora", cfg, full_finetune=False)
    assert models.is_adapter(tmp_path / "lora")
    reloaded = models.load_model(tmp_path / "lora", device="cpu")
    from peft import PeftModel

    assert isinstance(reloaded, PeftModel)



def _varied_sft_data(tmp_path, n: int = 6):
    rng = np.random.default_rng(2)
    paths = []
    for i in range(n):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray((rng.random((128, 128)) * 255).astype("uint8")).save(paths[-1])
    targets = ["<solution>Cardiomegaly</solution>", "<think>Analysis: enlarged heart.</think><solution>Edema</solution>",
               "<solution>No Finding</solution>"] * (n // 3)
    return sft.make_dataset([f"Which findings? ({i})" for i in range(n)], targets, [str(p) for p in paths])


@pytest.mark.parametrize("kind", ["gemma3", "qwen2_5_vl"])
def test_prepared_batches_equal_trl_collator_batches(tiny_models, tmp_path, kind):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from chexreason_utils.train import sft_data

    processor = models.load_processor(tiny_models[kind])
    data = _varied_sft_data(tmp_path)
    old = DataCollatorForVisionLanguageModeling(processor, max_length=512, completion_only_loss=True)([data[i] for i in range(4)])
    (rows,), collator = sft_data.prepare([data], processor, max_length=512)
    new = collator([rows[i] for i in range(4)])
    prepared = collator.examples
    assert set(new) == set(old) and {"pixel_values", "labels"} <= set(new)
    for key in old:
        assert torch.equal(new[key], old[key]), key
    assert len(set(new["attention_mask"].sum(1).tolist())) > 1       # unequal lengths: padding is exercised
    completion = processor.tokenizer(data[1]["completion"][0]["content"][0]["text"], add_special_tokens=False)["input_ids"]
    labelled = prepared[1]["labels"][prepared[1]["labels"] != -100].tolist()
    assert labelled[:len(completion)] == completion                   # the loss covers the completion only
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.tokenizer.image_token)
    assert int((prepared[0]["input_ids"] == image_token).sum()) == models.image_token_count(processor, data[0]["images"][0])


def test_cpu_trainer_on_prepared_data_logs_what_trl_logs_on_the_collator_path(tiny_models, tmp_path):
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from chexreason_utils.train import sft_data
    from chexreason_utils.train.sft_cpu import CPUSFTTrainer

    processor = models.load_processor(tiny_models["gemma3"])
    data = _varied_sft_data(tmp_path)

    def logged(prepared: bool) -> list[dict]:
        extra = sft_data.train_args() if prepared else {}
        args = TRLSFTConfig(output_dir=str(tmp_path / f"out{prepared}"), per_device_train_batch_size=3, max_steps=4,
                            learning_rate=1e-3, logging_steps=1, seed=0, data_seed=0, max_length=512,
                            completion_only_loss=True, report_to="none", disable_tqdm=True, use_cpu=True,
                            save_strategy="no", **extra)
        (rows,), collator = sft_data.prepare([data], processor, 512) if prepared else ((data,), None)
        trainer = (CPUSFTTrainer if prepared else SFTTrainer)(
            model=models.load_model(tiny_models["gemma3"], device="cpu"), args=args, train_dataset=rows,
            data_collator=collator, processing_class=processor)
        trainer.train()
        return [row for row in trainer.state.log_history if "loss" in row]

    old, new = logged(False), logged(True)      # trl's collator and fused LM head / prepared data and full logits
    assert len(old) == 4 and old[0]["loss"] > old[-1]["loss"]
    assert [r["num_tokens"] for r in new] == [r["num_tokens"] for r in old]
    for key in ("loss", "entropy", "mean_token_accuracy"):
        got, want = [r[key] for r in new], [r[key] for r in old]
        assert got[0] == pytest.approx(want[0], rel=1e-5), key       # the same weights: the same numbers
        # then weights updated by gradients that differ by trl's CPU fused head (below): 8.5e-5 apart on an AMD EPYC
        assert got[1:] == pytest.approx(want[1:], rel=2e-4), key
    # the full-logits gradient is the model's own loss's, to the bit; trl's CPU fused head is off by up to 0.5%
    assert [r["grad_norm"] for r in new] == pytest.approx([r["grad_norm"] for r in old], rel=5e-3)


SFT_RESUME_SCRIPT = """
import os, signal, sys
import torch
import transformers
sys.path.insert(0, sys.argv[4])
from test_models_sft import sft_resume_run
log = transformers.Trainer.log
def log_then_die(self, logs, *args, **kwargs):   # killed right after logging step 5: after checkpoint-4, before 6
    log(self, logs, *args, **kwargs)
    if self.state.global_step == 5 and "loss" in logs:
        os.kill(os.getpid(), signal.SIGKILL)
transformers.Trainer.log = log_then_die
torch.set_num_threads(1)
sft_resume_run(sys.argv[1], sys.argv[2], sys.argv[3] == "lora")
"""


def sft_resume_run(model, out, lora: bool) -> dict:
    """The 8-step SFT run the resume test interrupts (one torch thread: in this process through ``run_jobs``, and
    in the subprocess that is killed): resumed-from, the steps and losses it logged, the steps it evaluated at."""
    from chexreason_utils.jobs import run_jobs

    rng = np.random.default_rng(1)
    imgs = []
    for i in range(4):
        imgs.append(f"{out}-{i}.png")
        Image.fromarray((rng.random((128, 128)) * 255).astype("uint8")).save(imgs[-1])
    targets = ["<solution>Cardiomegaly</solution>", "<solution>Edema</solution>", "<solution>No Finding</solution>",
               "<solution>Cardiomegaly, Edema</solution>"]
    data = sft.make_dataset(["Which findings?"] * 8, targets * 2, imgs * 2)
    cfg = SFTConfig(learning_rate=1e-2 if lora else 1e-3, max_steps=8, batch_size=2, grad_accum=1, logging_steps=1,
                    eval_steps=2, early_stopping_patience=100, gradient_checkpointing=False, max_length=512, lora_r=4,
                    lora_alpha=8, lora_dropout=0.0)
    res = run_jobs(sft.train_sft, [dict(base=model, train=data, evalset=data.select(range(2)), out_dir=Path(out),
                                        cfg=cfg, full_finetune=not lora)], workers=1)[0]
    train = res.log.loc[res.log["loss"].notna()]
    return {"resumed_from": res.resumed_from, "steps": train["step"].tolist(), "loss": train["loss"].tolist(),
            "eval_steps": res.log.loc[res.log["eval_loss"].notna(), "step"].tolist()}


def _saved_tensors(folder):
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if (folder / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(folder / name))


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_a_killed_sft_run_resumes_to_the_weights_of_an_uninterrupted_one(tiny_models, tmp_path, capfd, mode):
    """Killed after checkpoint-4 and rerun: the same loss at every step and the same saved weights as a run that
    was never interrupted (on main before the strict restore, full fine-tuning went on from the base weights)."""
    import subprocess
    import sys

    a = sft_resume_run(tiny_models["gemma3"], tmp_path / "whole", mode == "lora")   # never interrupted
    out = tmp_path / "resumed"
    killed = subprocess.run([sys.executable, "-c", SFT_RESUME_SCRIPT, str(tiny_models["gemma3"]), str(out), mode,
                             str(Path(__file__).parent)], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "trainer" / "checkpoint-4").is_dir() and not (out / "run_info.json").exists()
    capfd.readouterr()
    b = sft_resume_run(tiny_models["gemma3"], out, mode == "lora")
    assert b["resumed_from"].endswith("checkpoint-4") and a["resumed_from"] is None
    assert b["steps"] == a["steps"] == [1, 2, 3, 4, 5, 6, 7, 8]    # complete, strictly increasing, none twice
    assert b["eval_steps"] == [2, 4, 6, 8]
    assert a["loss"][4] != a["loss"][0]                           # the weights move
    assert np.allclose(b["loss"], a["loss"], rtol=1e-5, atol=1e-6), (a["loss"], b["loss"])
    assert "restored all" in capfd.readouterr().out
    wa, wb = _saved_tensors(tmp_path / "whole"), _saved_tensors(out)
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6) for k in wa)
    assert not (out / "trainer").exists()


def test_a_checkpoint_that_cannot_restore_the_model_is_an_error_naming_it(tiny_models, tmp_path):
    from chexreason_utils.train import resume

    other = models.build_tiny_gemma3(CORPUS, tmp_path / "wider", hidden=96, vocab=500)
    model = models.load_model(tiny_models["qwen2_5_vl"], device="cpu")
    with pytest.raises(resume.ResumeError, match="wider"):
        resume.restore(model, other)


@pytest.mark.parametrize("kind, end_of_turn", [("gemma3", "<end_of_turn>\n"), ("qwen2_5_vl", "<|im_end|>\n")])
def test_the_loss_mask_trains_the_assistant_target_and_its_end_of_turn_only(tiny_models, tmp_path, kind, end_of_turn):
    from chexreason_utils.train import sft_data

    processor = models.load_processor(tiny_models[kind])
    data = _varied_sft_data(tmp_path)
    _, collator = sft_data.prepare([data], processor, max_length=512)
    runs = sft_data.loss_mask(collator.examples[1], processor.tokenizer, processor.tokenizer.image_token)
    target = data[1]["completion"][0]["content"][0]["text"]
    assert "".join(runs.loc[runs["trains"], "text"]) == target + end_of_turn
    assert runs["tokens"].sum() == len(collator.examples[1]["input_ids"])
    image = runs.loc[runs["kind"] == "image"]
    assert len(image) == 1 and not image["trains"].any()
    assert image["tokens"].iloc[0] == models.image_token_count(processor, data[1]["images"][0])
    assert "Which findings? (1)" in "".join(runs.loc[runs["kind"] == "prompt", "text"])
