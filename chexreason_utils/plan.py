"""``chexreason plan --profile paper``: what a profile will run, before anything runs.

No GPU, data or hub: parameter counts come from the real architectures built on the meta device
(``real_models``), sequence lengths from the image settings and the prompt text, everything else from the
profile. How each number is estimated:

- trainings / steps: SFT steps per epoch = ceil(n_sft·(1-val_fraction) / (batch·grad_accum)) times epochs (an
  upper bound: early stopping may end sooner); GRPO steps = ``grpo.max_steps``.
- generations (upper bounds: cached predictions are reused): one per image per scored model (greedy, up to ``evaluation.max_new_tokens``), GRPO rollouts =
  steps × prompts_per_step × num_generations (up to ``grpo.max_completion_length``).
- prompt tokens: image tokens (MedGemma 256; Qwen2.5-VL max_pixels / 784) + prompt characters / 4 + 16.
- GPU memory (bf16, GiB): weights = parameters × 2 B; LoRA = trainable × 16 B (fp32 weight, grad, two Adam
  moments); activations under gradient checkpointing = batch × sequence × hidden × layers × 2 B (one saved
  hidden state per layer) + one layer's working set (batch × sequence × (4·hidden + 3·intermediate) × 2 B);
  LM head: trl 1.16 scores through a fused, chunked head (``add_fused_lm_head``, trl/trainer/utils.py:1548, used by
  GRPOTrainer at grpo_trainer.py:1068 and by SFTTrainer) that never holds batch × length × vocabulary logits: one
  fp32 tile of min(tokens scored, 4,096) × 32,768 (trl/kernels/chunked_logprob.py:31 and :347, utils.py:1506) in the
  forward and one in the backward, plus seven fp32 numbers per scored token; with Triton (GPU) only the completion's
  tokens are scored, without it (CPU) every position (utils.py:1642). KV cache = batch × sequence × layers × 2 × kv_heads ×
  head_dim × 2 B. Allocator overhead and CUDA context (~1-2 GiB) are not included.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from . import prompts
from .config import Config
from .train.real_models import build_on_meta, lora_summary, real_model
from .evaluation.scoring_plan import planned_steps, scoring_plan

GiB = 1024 ** 3
TEST_IMAGES = {"chexpert_test": 518, "nih_test": 0, "padchest_test": 0}   # CheXpert: frontal images of the 500-study test set (docs/paper.md, Data)
TOKENS_PER_QWEN_IMAGE_TOKEN = 28 * 28


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimates need from one real architecture."""

    name: str
    parameters: int
    lora_trainable: int
    hidden: int
    intermediate: int
    layers: int
    kv_heads: int
    head_dim: int
    vocab: int
    image_tokens: int


def model_shape(hub_id: str, cfg: Config) -> ModelShape:
    spec = real_model(hub_id)
    text = spec.config["text_config"]
    lora = lora_summary(build_on_meta(hub_id), cfg.sft.lora_r, cfg.sft.lora_alpha, cfg.sft.lora_dropout)
    if spec.family == "gemma3":
        image_tokens = spec.image["image_seq_length"]
    else:
        image_tokens = (cfg.models.image_max_pixels or spec.image["max_pixels"]) // TOKENS_PER_QWEN_IMAGE_TOKEN
    head_dim = text.get("head_dim", text["hidden_size"] // text["num_attention_heads"])
    return ModelShape(hub_id, lora.total, lora.trainable, text["hidden_size"], text["intermediate_size"],
                      text["num_hidden_layers"], text["num_key_value_heads"], head_dim, text["vocab_size"], image_tokens)


def prompt_tokens(shape: ModelShape, prompt_name: str) -> int:
    return shape.image_tokens + len(prompts.prompt_for(prompt_name)) // 4 + 16


def weights_gib(m: ModelShape) -> float:
    return m.parameters * 2 / GiB


def kv_cache_gib(m: ModelShape, batch: int, seq: int) -> float:
    return batch * seq * m.layers * 2 * m.kv_heads * m.head_dim * 2 / GiB


FUSED_TOKEN_TILE, FUSED_VOCAB_TILE = 4096, 32768   # trl/kernels/chunked_logprob.py:31, trl/trainer/utils.py:1506


def fused_head_bytes(scored: int, vocab: int) -> int:
    """Peak of trl's fused LM head over ``scored`` tokens: a forward and a backward fp32 tile, 7 fp32 per token."""
    return 2 * min(scored, FUSED_TOKEN_TILE) * min(vocab, FUSED_VOCAB_TILE) * 4 + 7 * scored * 4


def training_gib(m: ModelShape, batch: int, seq: int, scored_tokens: int, weight_bytes: int = 2) -> float:
    """``weight_bytes``: 2 (bf16 on GPU) | 4 (fp32 on CPU, where activations are fp32 too)."""
    activations = (batch * seq * m.hidden * m.layers + batch * seq * (4 * m.hidden + 3 * m.intermediate)) * weight_bytes
    return (m.parameters * weight_bytes + m.lora_trainable * 16 + activations
            + fused_head_bytes(batch * scored_tokens, m.vocab)) / GiB


def plan_table(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(stage table, model table, checkpoint-scoring plan) for a profile."""
    med, gen = model_shape(cfg.models.medical, cfg), model_shape(cfg.models.general, cfg)
    s, g, e = cfg.sft, cfg.grpo, cfg.evaluation
    n_val, n_nih = cfg.sampling.n_val, cfg.sampling.nih_test_size
    test_sizes = {**TEST_IMAGES, "nih_test": n_nih,
                  "padchest_test": cfg.sampling.padchest_test_size if cfg.data.padchest_root else 0}
    fmt = g.start_format
    sft_steps = math.ceil(cfg.sampling.n_sft * (1 - s.val_fraction) / (s.batch_size * s.grad_accum)) * s.epochs
    roles = [med, gen] if s.general_model_too else [med]
    n_sft_runs = len(s.formats) * len(roles)
    sft_seq = s.max_length
    grpo_runs = len(g.rewards) + (1 if cfg.diagnostics.run_ablation else 0)
    rollouts = g.max_steps * g.prompts_per_step * g.num_generations
    grpo_seq = prompt_tokens(med, fmt) + g.max_completion_length
    steps = planned_steps(g.max_steps, g.save_steps)
    plan = scoring_plan(e, steps, test_sets=[t for t, n in test_sizes.items() if n])
    val_scored = int((plan["set"] == "val").sum()) + 1            # + the SFT start
    test_scored = plan.loc[plan["set"] != "val"].groupby("set")["step"].nunique()
    test_images = sum(test_sizes[t] * n for t, n in test_scored.items())   # an upper bound: best_f1 may repeat one
    eval_seq = prompt_tokens(med, fmt) + e.max_new_tokens
    rows = [
        {"stage": "02 SFT", "trainings": n_sft_runs, "steps each (max)": int(sft_steps),
         "generations": n_sft_runs * (n_val + e.sample_validity_n), "max new tokens": e.max_new_tokens,
         "sequence": sft_seq,
         "GPU GiB (MedGemma)": training_gib(med, s.batch_size, sft_seq, sft_seq),
         "GPU GiB (Qwen2.5-VL)": training_gib(gen, s.batch_size, sft_seq, sft_seq)},
        {"stage": "03 GRPO", "trainings": grpo_runs, "steps each (max)": g.max_steps,
         "generations": grpo_runs * rollouts + len(g.rewards) * val_scored * n_val,
         "max new tokens": g.max_completion_length, "sequence": grpo_seq,
         "GPU GiB (MedGemma)": training_gib(med, g.prompts_per_step * g.num_generations, grpo_seq,
                                            g.max_completion_length)
         + kv_cache_gib(med, g.prompts_per_step * g.num_generations, grpo_seq), "GPU GiB (Qwen2.5-VL)": "-"},
        {"stage": "04 evaluation", "trainings": 0, "steps each (max)": 0,
         "generations": 4 * sum(test_sizes.values()) + len(g.rewards) * test_images,
         "max new tokens": e.max_new_tokens, "sequence": eval_seq,
         "GPU GiB (MedGemma)": weights_gib(med) + kv_cache_gib(med, e.batch_size, eval_seq),
         "GPU GiB (Qwen2.5-VL)": weights_gib(gen) + kv_cache_gib(gen, e.batch_size, prompt_tokens(gen, fmt) + e.max_new_tokens)},
        {"stage": "05 cross-model", "trainings": 0, "steps each (max)": 0,
         "generations": (2 if cfg.cross_model.general_zero_shot else 1) * len(cfg.cross_model.prompt_variants) * n_val,
         "max new tokens": e.max_new_tokens, "sequence": eval_seq,
         "GPU GiB (MedGemma)": weights_gib(med) + kv_cache_gib(med, e.batch_size, eval_seq),
         "GPU GiB (Qwen2.5-VL)": weights_gib(gen) + kv_cache_gib(gen, e.batch_size, prompt_tokens(gen, fmt) + e.max_new_tokens)},
    ]
    table = pd.DataFrame(rows)
    models = pd.DataFrame([{"model": m.name, "parameters (M)": m.parameters / 1e6, "LoRA trainable (M)": m.lora_trainable / 1e6,
                            "image tokens (max)": m.image_tokens, "prompt tokens (est.)": prompt_tokens(m, fmt)}
                           for m in (med, gen)])
    return table, models, plan


def render(cfg: Config) -> str:
    table, models, plan = plan_table(cfg)
    per_reward = plan.groupby("set")["step"].apply(lambda s: ", ".join(map(str, s))).rename("checkpoints (per reward run)")
    sft_fit = int(models["prompt tokens (est.)"].max())
    lines = [f"profile {cfg.profile}: real architectures built on the meta device (no GPU, data or hub)", "",
             models.to_string(index=False, float_format=lambda v: f"{v:,.1f}"), "",
             table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"), "",
             "checkpoint scoring plan (GRPO steps; best_f1 is chosen on validation):",
             per_reward.to_frame().to_string(), "",
             f"longest prompt ≈ {sft_fit} tokens + a completion of up to {cfg.grpo.max_completion_length} "
             f"must fit sft.max_length = {cfg.sft.max_length}",
             "estimates: see the docstring of chexreason_utils/plan.py"]
    return "\n".join(lines)
