"""The paper's two real models as data: architecture configs, image settings, meta-device builds.

The values below are copied from the models' published ``config.json`` and ``preprocessor_config.json`` on
the Hugging Face hub (``google/medgemma-4b-it``, ``Qwen/Qwen2.5-VL-3B-Instruct``), keeping only what fixes
the architecture and the image-token count. They let the suite and ``plan`` build both models at real size
on ``torch.device("meta")`` (no weights, no memory, no hub) to count parameters and check LoRA's targets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from .models import LANGUAGE_LORA_TARGETS, lora_config

MEDGEMMA_4B = {   # google/medgemma-4b-it config.json (Gemma3ForConditionalGeneration, SigLIP vision tower)
    "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144, "mm_tokens_per_image": 256,
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208,
                    "query_pre_attn_scalar": 256, "sliding_window": 1024, "max_position_embeddings": 131072,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
    "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                      "num_attention_heads": 16, "image_size": 896, "patch_size": 14, "vision_use_head": False},
}
QWEN25_VL_3B = {   # Qwen/Qwen2.5-VL-3B-Instruct config.json (Qwen2_5_VLForConditionalGeneration)
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "text_config": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                    "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936,
                    "max_position_embeddings": 128000, "tie_word_embeddings": True, "rope_theta": 1000000.0,
                    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},
    "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                      "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
}


@dataclass(frozen=True)
class RealModel:
    """One real model: its hub id, class, config values and image settings (preprocessor_config.json)."""

    hub_id: str
    family: str                # gemma3 | qwen2_5_vl
    config: dict
    image: dict                # gemma3: fixed size and tokens; qwen2_5_vl: the hub's (unbounded) pixel range


REAL_MODELS = {
    "google/medgemma-4b-it": RealModel("google/medgemma-4b-it", "gemma3", MEDGEMMA_4B,
                                       {"size": 896, "image_seq_length": 256}),
    "Qwen/Qwen2.5-VL-3B-Instruct": RealModel("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl", QWEN25_VL_3B,
                                             {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
                                              "min_pixels": 3136, "max_pixels": 12845056}),
}


def real_model(hub_id: str) -> RealModel:
    if hub_id not in REAL_MODELS:
        raise KeyError(f"no real-size config for {hub_id!r}; known: {', '.join(REAL_MODELS)}")
    return REAL_MODELS[hub_id]


def build_on_meta(hub_id: str):
    """The real architecture with parameters on the meta device (shapes only, nothing allocated)."""
    spec = real_model(hub_id)
    with torch.device("meta"):
        if spec.family == "gemma3":
            return Gemma3ForConditionalGeneration(Gemma3Config(**spec.config))
        return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**spec.config))


@dataclass(frozen=True)
class LoraSummary:
    total: int                 # parameters of the base model
    trainable: int             # LoRA parameters
    modules: tuple[str, ...]   # names of the wrapped modules

    @property
    def language_only(self) -> bool:
        return all(".language_model." in f".{m}." for m in self.modules)


def lora_summary(model, r: int = 16, alpha: int = 32, dropout: float = 0.1) -> LoraSummary:
    """Wrap ``model`` with the paper's LoRA (language-model projections) and count what it trains."""
    import re

    from peft import get_peft_model

    total = sum(p.numel() for p in model.parameters())
    pattern = re.compile(LANGUAGE_LORA_TARGETS)
    modules = tuple(n for n, _ in model.named_modules() if pattern.fullmatch(n))
    peft_model = get_peft_model(model, lora_config(r, alpha, dropout))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return LoraSummary(total=total, trainable=trainable, modules=modules)
