"""Models: one loading path for real and tiny models, tiny builders of the paper's classes, LoRA configs.

Real models (paper profile): ``google/medgemma-4b-it`` (Gemma3ForConditionalGeneration) and
``Qwen/Qwen2.5-VL-3B-Instruct`` (Qwen2_5_VLForConditionalGeneration), loaded with ``from_pretrained``:
bf16 on GPU, fp32 on CPU, safetensors only, never ``trust_remote_code``.

Tiny models (tiny/smoke): the same two classes built offline from configs, with a byte-level BPE tokenizer
trained in code on the world's text, a processor and a chat template, saved as ordinary model folders.

Qwen2.5-VL's stock processor requires a video processor, which needs torchvision (there is no CPU build
here). ``Qwen2_5_VLImageOnlyProcessor`` is the same processor without the video branch; ``load_processor``
falls back to it whenever the stock one cannot be built.
"""
from __future__ import annotations

import json
import os
import math
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoModelForImageTextToText, AutoProcessor, Gemma3Config, Gemma3ForConditionalGeneration,
                          Gemma3Processor, PreTrainedTokenizerFast, Qwen2_5_VLConfig,
                          Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor)
from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.image_utils import SizeDict
from transformers.processing_utils import ProcessorMixin

from ..paths import ADAPTER_CONFIG

# LoRA on the language model's attention and MLP projections only; the vision tower stays frozen (paper).
LANGUAGE_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor (same chat template, image tokens and expansion) without the video branch."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
        self.video_token = "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def device_and_dtype(device: str = "auto", dtype: str = "auto") -> tuple[str, torch.dtype]:
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dtype == "auto":
        return dev, torch.bfloat16 if dev == "cuda" else torch.float32
    return dev, getattr(torch, dtype)


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_processor(path: str | Path, min_pixels: int = 0, max_pixels: int = 0):
    """The processor saved with a model or adapter folder (or of a hub id).

    ``min_pixels`` / ``max_pixels`` (0: as saved) bound the image area of a Qwen2-VL-style processor; they are
    ignored by fixed-size processors (Gemma3: 896² → 256 tokens). See ``bound_image_pixels``.
    """
    path = str(path)
    cfg = Path(path) / "processor_config.json"
    if cfg.is_file() and json.loads(cfg.read_text()).get("processor_class") == Qwen2_5_VLImageOnlyProcessor.__name__:
        return bound_image_pixels(Qwen2_5_VLImageOnlyProcessor.from_pretrained(path), min_pixels, max_pixels)
    try:
        processor = AutoProcessor.from_pretrained(path)
    except (ImportError, AttributeError, ValueError) as exc:
        if "qwen" not in path.lower() and "torchvision" not in str(exc).lower() and "video" not in str(exc).lower():
            raise
        processor = Qwen2_5_VLImageOnlyProcessor.from_pretrained(path)
    return bound_image_pixels(processor, min_pixels, max_pixels)


def bound_image_pixels(processor, min_pixels: int = 0, max_pixels: int = 0):
    """Set the pixel-area bounds of a dynamic-resolution (Qwen2-VL-style) image processor, in place.

    Qwen2.5-VL-3B's hub processor allows up to 12,845,056 pixels: a 3056×2544 MIMIC JPG becomes ~9,900 image
    tokens, over any sensible SFT ``max_length`` (trl would truncate ``input_ids`` and the image-token count
    would no longer match the image features). Each 28×28 pixel block is one token after merging, so
    ``max_pixels / 784`` bounds the image tokens. A 0 leaves that bound as saved.
    """
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    if not (min_pixels or max_pixels) or getattr(size, "longest_edge", None) is None:
        return processor
    if min_pixels and max_pixels and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels})")
    image_processor.size = SizeDict(shortest_edge=min_pixels or size.shortest_edge,
                                    longest_edge=max_pixels or size.longest_edge)
    return processor


def image_token_count(processor, image) -> int:
    """How many image tokens ``processor`` puts in the prompt for one PIL image."""
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}],
                                         add_generation_prompt=True, tokenize=False)
    ids = processor(text=[text], images=[[image]], return_tensors="pt")["input_ids"][0]
    token = getattr(processor.tokenizer, "image_token", None) or processor.image_token   # Gemma3: the soft token
    token_id = processor.tokenizer.convert_tokens_to_ids(token)
    return int((ids == token_id).sum())


def load_model(path: str | Path, device: str = "auto", dtype: str = "auto", trainable_adapter: bool = False):
    """A model folder, hub id, or LoRA adapter folder (its base is loaded first), ready for generate/train."""
    dev, torch_dtype = device_and_dtype(device, dtype)
    if is_adapter(path):
        from peft import PeftModel

        base_id = json.loads((Path(path) / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
        base = AutoModelForImageTextToText.from_pretrained(base_id, dtype=torch_dtype, use_safetensors=True)
        model = PeftModel.from_pretrained(base, str(path), is_trainable=trainable_adapter)
    else:
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch_dtype, use_safetensors=True)
    if dev == "cuda" and "LOCAL_RANK" in os.environ:   # under accelerate launch: this process's GPU, not cuda:0
        dev = f"cuda:{os.environ['LOCAL_RANK']}"
    return model.to(dev)


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.1):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=LANGUAGE_LORA_TARGETS,
                      task_type="CAUSAL_LM", bias="none")


# ---- tiny builders ------------------------------------------------------------------------------------

GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                 "<end_of_image>", "<image_soft_token>"]
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<start_of_image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def train_tokenizer(texts: list[str], vocab_size: int, special: list[str]) -> Tokenizer:
    """Byte-level BPE trained in code on the world's text (any string stays encodable)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def gemma3_processor(texts: list[str], vocab: int, image_size: int, tokens_per_image: int) -> Gemma3Processor:
    """A Gemma3 processor (MedGemma's class) over a tokenizer trained on ``texts``; fixed square images."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(texts, vocab, GEMMA_SPECIAL), bos_token="<bos>", eos_token="<end_of_turn>",
        pad_token="<pad>", padding_side="left",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"})
    tok.chat_template = GEMMA_TEMPLATE
    image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size}, do_pan_and_scan=False)
    return Gemma3Processor(image_processor=image_processor, tokenizer=tok, chat_template=GEMMA_TEMPLATE,
                           image_seq_length=tokens_per_image)


def qwen25vl_processor(texts: list[str], vocab: int, min_pixels: int, max_pixels: int) -> Qwen2_5_VLImageOnlyProcessor:
    """A Qwen2.5-VL processor over a tokenizer trained on ``texts``; dynamic resolution within the pixel bounds."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(texts, vocab, QWEN_SPECIAL), eos_token="<|im_end|>",
        pad_token="<|endoftext|>", padding_side="left",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"})
    tok.chat_template = QWEN_TEMPLATE
    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=14,
                                               merge_size=2, temporal_patch_size=2)
    return Qwen2_5_VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tok, chat_template=QWEN_TEMPLATE)


def build_tiny_gemma3(texts: list[str], out_dir: Path, hidden: int = 128, layers: int = 2, image_size: int = 112,
                      vocab: int = 1200, seed: int = 0) -> Path:
    """A tiny Gemma3ForConditionalGeneration (MedGemma's class) with tokenizer, processor and template."""
    torch.manual_seed(seed)
    tokens_per_image = 16
    processor = gemma3_processor(texts, vocab, image_size, tokens_per_image)
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids
    config = Gemma3Config(
        text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                         max_position_embeddings=1024, sliding_window=256, layer_types=["full_attention"] * layers,
                         pad_token_id=tok.pad_token_id, eos_token_id=ids("<end_of_turn>"), bos_token_id=tok.bos_token_id),
        vision_config=dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                           num_attention_heads=4, image_size=image_size, patch_size=14, vision_use_head=False),
        mm_tokens_per_image=tokens_per_image, boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"), image_token_index=ids("<image_soft_token>"),
        pad_token_id=tok.pad_token_id, eos_token_id=ids("<end_of_turn>"), bos_token_id=tok.bos_token_id)
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():   # zero-initialised in transformers: a random model would see no image at all
        proj = model.model.multi_modal_projector.mm_input_projection_weight
        proj.normal_(0.0, proj.shape[0] ** -0.5)
    return _save_tiny(model, processor, tok, out_dir)


def build_tiny_qwen25vl(texts: list[str], out_dir: Path, hidden: int = 128, layers: int = 2, image_size: int = 112,
                        vocab: int = 1200, seed: int = 0) -> Path:
    """A tiny Qwen2_5_VLForConditionalGeneration (Qwen2.5-VL-3B's class) with tokenizer, processor, template."""
    torch.manual_seed(seed)
    pixels = image_size * image_size
    processor = qwen25vl_processor(texts, vocab, min_pixels=pixels, max_pixels=pixels)
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids
    head_dim = hidden // 4
    section = head_dim // 2 // 4
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         rope_scaling={"type": "mrope", "mrope_section": [head_dim // 2 - 2 * section, section, section]},
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.pad_token_id),
        vision_config=dict(depth=layers, hidden_size=hidden, intermediate_size=hidden * 2, num_heads=4,
                           out_hidden_size=hidden, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                           window_size=56, fullatt_block_indexes=[layers - 1]),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.pad_token_id)
    model = Qwen2_5_VLForConditionalGeneration(config)
    return _save_tiny(model, processor, tok, out_dir)


def _save_tiny(model, processor, tok, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir


TINY_BUILDERS = {"gemma3": build_tiny_gemma3, "qwen2_5_vl": build_tiny_qwen25vl}


def parameter_count(folder: str | Path) -> int:
    """Parameters of a saved model folder, read from its safetensors headers (no model is loaded)."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {folder}")
    total = 0
    for f in files:
        with safe_open(str(f), framework="pt") as weights:
            total += sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())
    return total
