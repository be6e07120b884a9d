"""``python -m chexreason_utils rehearse``: the paper profile's code path on a CPU in minutes.

The real architectures (``real_models``) with the real vocabularies, special-token ids and image settings but the
profile's reduced width and depth (``models.tiny_hidden`` / ``tiny_layers``) and random weights; the real
tokenizers, chat templates and processors (``real_tokenizers``, Qwen2.5-VL bounded to the profile's pixels);
phantom images at the real datasets' sizes (MIMIC-CXR-JPG about 2,500 × 3,000 JPG, NIH 1,024² PNG). The chain is
the project's own: ``sft.train_sft`` with LoRA on the language model → ``grpo.train_grpo`` (MedGemma's class, as the
paper) → ``evaluate.predict``, a few steps each. Every model forward that carries an image is recorded
(``ForwardRecorder``), so the checks in ``check_*`` and the tests see what the model really received.
"""
from __future__ import annotations

import inspect
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .config import Config
from .train.real_models import real_model
from .train.real_tokenizers import real_processor

IMAGE_SIZES = {"mimic": ((2544, 3056), "JPEG"), "nih": ((1024, 1024), "PNG")}   # (width, height), format
FAMILIES = {"medical": "gemma3", "general": "qwen2_5_vl"}
STAGE_COLUMNS = ["model", "stage", "steps", "prompt tokens", "image tokens", "completion tokens", "peak RSS GiB",
                 "RSS growth GiB", "peak GPU GiB", "s/step"]


def phantom_images(folder: Path, dataset: str, n: int, seed: int = 0) -> list[Path]:
    """``n`` grey phantom radiographs at ``dataset``'s real size and format (smooth noise, seeded)."""
    (width, height), fmt = IMAGE_SIZES[dataset]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        small = Image.fromarray(rng.integers(0, 256, (height // 64, width // 64), dtype=np.uint8))
        path = folder / f"{dataset}-{i}.{'jpg' if fmt == 'JPEG' else 'png'}"
        small.resize((width, height), Image.BILINEAR).save(path, fmt)
        paths.append(path)
    return paths


def _spec(family: str):
    return real_model(next(hub for role, hub in (("medical", "google/medgemma-4b-it"),
                                                 ("general", "Qwen/Qwen2.5-VL-3B-Instruct")) if FAMILIES[role] == family))


def reduced_config(family: str, hidden: int, layers: int) -> dict:
    """The real model's config (vocabulary, special-token ids, image settings) at ``hidden`` width, ``layers``
    depth (text and vision) and two attention heads."""
    config = json.loads(json.dumps(_spec(family).config))
    head_dim = hidden // 2
    text = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
            "num_attention_heads": 2, "num_key_value_heads": 1}
    if family == "gemma3":
        config["text_config"].update(text, head_dim=head_dim, query_pre_attn_scalar=head_dim)
        config["vision_config"].update(hidden_size=hidden // 2, intermediate_size=hidden, num_hidden_layers=layers,
                                       num_attention_heads=2)
    else:
        section = head_dim // 2 // 4
        config["text_config"].update(text, rope_scaling={"type": "mrope",
                                                         "mrope_section": [head_dim // 2 - 2 * section, section, section]})
        config["vision_config"].update(depth=layers, hidden_size=hidden // 2, intermediate_size=hidden, num_heads=2,
                                       out_hidden_size=hidden, fullatt_block_indexes=[layers - 1])
    return config


def build_model(family: str, out_dir: Path, hidden: int, layers: int, seed: int = 0, full_size: bool = False) -> Path:
    """A random-weight model folder of the real class, config and processor (see ``reduced_config``); ``full_size``:
    the real config unchanged, saved in bf16 (``gpu_check``)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    processor = real_processor(family)
    tok = processor.tokenizer
    config = json.loads(json.dumps(_spec(family).config)) if full_size else reduced_config(family, hidden, layers)
    if family == "gemma3":
        model = Gemma3ForConditionalGeneration(Gemma3Config(**config, pad_token_id=tok.pad_token_id,
                                                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
        with torch.no_grad():   # zero-initialised in transformers: the image would reach the model as zeros
            proj = model.model.multi_modal_projector.mm_input_projection_weight
            proj.normal_(0.0, proj.shape[0] ** -0.5)
        eos = [tok.eos_token_id, tok.convert_tokens_to_ids("<eos>")]          # MedGemma: <end_of_turn>, <eos>
    else:
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**config, pad_token_id=tok.pad_token_id,
                                                                    eos_token_id=tok.eos_token_id))
        eos = [tok.eos_token_id, tok.pad_token_id]                             # <|im_end|>, <|endoftext|>
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = eos, tok.pad_token_id
    if full_size:
        model = model.to(torch.bfloat16)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    return out_dir


@dataclass
class ForwardRecorder:
    """Records, for every forward of ``cls`` that carries images (pixels or encoded): its keyword names, sequence length, image tokens
    in ``input_ids`` and the image tokens the processor's outputs imply, the chat template's turn markers in its
    first row, under the current ``stage``."""

    cls: type
    image_token_id: int
    turn_token_id: int                      # <start_of_turn> (Gemma3) | <|im_start|> (Qwen2.5-VL)
    stage: str = ""
    calls: list[dict] = field(default_factory=list)

    @contextmanager
    def active(self):
        original = self.cls.forward
        names = list(inspect.signature(original).parameters)[1:]

        def forward(model, *args, **kwargs):
            kwargs = {**dict(zip(names, args)), **kwargs}
            images = kwargs.get("pixel_values") is not None or kwargs.get("mm_encoder_outputs") is not None
            if images and kwargs.get("input_ids") is not None:
                self.calls.append({"stage": self.stage, "keys": sorted(k for k, v in kwargs.items() if v is not None),
                                   "length": int(kwargs["input_ids"].shape[1]),
                                   "image_tokens": int((kwargs["input_ids"] == self.image_token_id).sum()),
                                   "expected": expected_image_tokens(model.config, kwargs),
                                   "turns": int((kwargs["input_ids"][0] == self.turn_token_id).sum())})
            return original(model, **kwargs)

        forward.__signature__ = inspect.signature(original)   # what generate() checks its kwargs against
        self.cls.forward = forward
        try:
            yield self
        finally:
            self.cls.forward = original


def expected_image_tokens(config, inputs: dict) -> int:
    """Image tokens a batch must hold: Gemma3 ``mm_tokens_per_image`` per image; Qwen2.5-VL each image's grid
    (t·h·w patches) over the spatial merge². ``generate`` encodes the images once and passes the pooled features
    (``mm_encoder_outputs``) instead of the pixels: then their count."""
    if inputs.get("pixel_values") is None:
        pooled = inputs["mm_encoder_outputs"]["image"]["pooler_output"]
        return sum(int(p.shape[0]) for p in pooled) if isinstance(pooled, (list, tuple)) else int(pooled.shape[:2].numel())
    if "image_grid_thw" in inputs and inputs["image_grid_thw"] is not None:
        merge = config.vision_config.spatial_merge_size ** 2
        return int(inputs["image_grid_thw"].prod(-1).sum()) // merge
    return int(inputs["pixel_values"].shape[0]) * config.mm_tokens_per_image


def check_image_tokens(calls: list[dict]) -> None:
    """Every recorded forward holds as many image tokens as its images imply (none truncated, none doubled)."""
    bad = [c for c in calls if c["image_tokens"] != c["expected"]]
    if bad:
        raise AssertionError(f"{len(bad)} forward(s) whose image tokens differ from the processor's: {bad[:3]}")


def check_chat_template(calls: list[dict], min_turns: int = 2) -> None:
    """Every forward's prompt went through the chat template: at least a user and an assistant turn marker."""
    bad = {c["stage"] for c in calls if c["turns"] < min_turns}
    if bad:
        raise AssertionError(f"forwards without the chat template's turn markers in: {', '.join(sorted(bad))}")


def check_token_type_ids(calls: list[dict]) -> None:
    """Gemma3 needs ``token_type_ids`` with its images (bidirectional attention over the image tokens)."""
    bad = {c["stage"] for c in calls if "token_type_ids" not in c["keys"]}
    if bad:
        raise AssertionError(f"Gemma3 forwards without token_type_ids in: {', '.join(sorted(bad))}")


@contextmanager
def peak_rss():
    """Yields a dict whose ``gib`` is, after the block, the process's peak resident memory during it and ``growth``
    that peak less the resident memory at its start (Linux: ``/proc/self/clear_refs`` resets the peak first)."""
    def status(key: str) -> float:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
        return int(line.split()[1]) * 1024 / 1024 ** 3

    result = {}
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    start = status("VmRSS:")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    yield result
    result["gib"] = status("VmHWM:")
    result["growth"] = result["gib"] - start
    if torch.cuda.is_available():
        result["gpu"] = torch.cuda.max_memory_allocated() / 1024 ** 3


def prompt_lengths(processor, instruction: str, image: Image.Image) -> tuple[int, int]:
    """(prompt tokens with image tokens, image tokens) of one chat-formatted prompt, as the processor makes it."""
    from .evaluation.evaluate import chat_prompt

    text = chat_prompt(processor, instruction)
    ids = processor(text=[text], images=[[image]], return_tensors="pt")["input_ids"][0]
    token = getattr(processor.tokenizer, "image_token", None) or processor.image_token
    return len(ids), int((ids == processor.tokenizer.convert_tokens_to_ids(token)).sum())


@dataclass
class Rehearsal:
    table: pd.DataFrame                      # one row per model and stage (STAGE_COLUMNS)
    calls: dict[str, list[dict]]             # role -> ForwardRecorder calls
    folders: dict[str, Path]                 # "<role>/base", "<role>/sft", "medical/grpo", "<role>/predictions"
    sft_examples: dict[str, list[dict]]      # role -> the prepared SFT examples (sft_data.prepare)


def rehearse(cfg: Config, out_dir: Path, roles: tuple[str, ...] = ("medical", "general"),
             bases: dict[str, str] | None = None) -> Rehearsal:
    """SFT → GRPO (medical) → evaluation per role on phantom images; checks image tokens and token_type_ids.

    ``bases``: role → a model folder or hub id to start from instead of a reduced random model (``gpu_check``)."""
    from transformers import Gemma3Model, Qwen2_5_VLModel

    from .evaluation import evaluate
    from .train import grpo, sft, sft_data
    from .prompts import format_target, prompt_for

    out_dir = Path(out_dir)
    s, g, e = cfg.sampling, cfg.grpo, cfg.evaluation
    fmt = g.start_format
    mimic = phantom_images(out_dir / "images", "mimic", s.n_sft + s.n_rl, cfg.seed)
    nih = phantom_images(out_dir / "images", "nih", s.n_val, cfg.seed)
    labels = [["Cardiomegaly", "Edema"], ["No Finding"], ["Pleural Effusion"], ["Atelectasis", "Support Devices"]]
    targets = [format_target(fmt, labels[i % len(labels)], "The heart and lungs are described here.")
               for i in range(s.n_sft)]
    pixels = (cfg.models.image_min_pixels, cfg.models.image_max_pixels)
    rows, calls, folders, examples = [], {}, {}, {}
    for role in roles:
        family = FAMILIES[role]
        processor = real_processor(family, *pixels)
        base = (bases or {}).get(role) or build_model(family, out_dir / role / "base", cfg.models.tiny_hidden,
                                                      cfg.models.tiny_layers, cfg.seed)
        cls = Gemma3Model if family == "gemma3" else Qwen2_5_VLModel   # inner: trl patches the outer forward
        token = getattr(processor.tokenizer, "image_token", None) or processor.image_token
        turn = "<start_of_turn>" if family == "gemma3" else "<|im_start|>"
        recorder = ForwardRecorder(cls, *processor.tokenizer.convert_tokens_to_ids([token, turn]))
        prompt, image_tokens = prompt_lengths(processor, prompt_for(fmt), Image.open(mimic[0]).convert("RGB"))
        name = getattr(cfg.models, role)
        train = sft.make_dataset([prompt_for(fmt)] * s.n_sft, targets, [str(p) for p in mimic[:s.n_sft]])
        examples[role] = sft_data.prepare([train], processor, cfg.sft.max_length)[1].examples
        completion = float(np.mean([int((x["labels"] != -100).sum()) for x in examples[role]]))
        with recorder.active():
            recorder.stage = "SFT"
            with peak_rss() as rss:
                result = sft.train_sft(base, train, train.select([0]), out_dir / role / "sft", cfg.sft,
                                       full_finetune=not cfg.sft.use_lora, seed=cfg.seed, device=cfg.device,
                                       image_pixels=pixels)
            rows.append(_row(name, "SFT", result.log, prompt, image_tokens, completion, rss))
            model_dir = result.out_dir
            if role == "medical":
                recorder.stage = "GRPO"
                ds = grpo.make_dataset(prompt_for(fmt), [str(p) for p in mimic[s.n_sft:]],
                                       [labels[i % len(labels)] for i in range(s.n_rl)])
                with peak_rss() as rss:
                    run = grpo.train_grpo(grpo.GRPOInputs(result.out_dir, ds, g, "hard", {}),
                                          out_dir / role / "grpo", cfg.device)
                length = float(run.log["completions/mean_length"].dropna().mean())
                rows.append(_row(name, "GRPO", run.log, prompt, image_tokens, length, rss))
                model_dir = run.checkpoints[-1]
                folders[f"{role}/grpo"] = run.out_dir
            recorder.stage = "evaluation"
            images = pd.DataFrame({"image_id": [p.stem for p in nih], "image_path": [str(p) for p in nih]})
            nih_prompt, nih_image = prompt_lengths(processor, prompt_for(fmt), Image.open(nih[0]).convert("RGB"))
            out_path = out_dir / role / "predictions.jsonl"
            t0 = time.perf_counter()
            with peak_rss() as rss:
                preds = evaluate.predict(model_dir, images, fmt, out_path, batch_size=e.batch_size,
                                         max_new_tokens=e.max_new_tokens, device=cfg.device, progress=False,
                                         image_pixels=pixels)
            batches = -(-len(images) // e.batch_size)
            generated = float(np.mean([len(processor.tokenizer(r, add_special_tokens=False)["input_ids"])
                                       for r in preds["raw"]]))
            rows.append({"model": name, "stage": "evaluation", "steps": batches, "prompt tokens": nih_prompt,
                         "image tokens": nih_image, "completion tokens": generated, "peak RSS GiB": rss["gib"],
                         "RSS growth GiB": rss["growth"], "peak GPU GiB": rss.get("gpu", float("nan")),
                         "s/step": (time.perf_counter() - t0) / batches})
        folders.update({f"{role}/base": base, f"{role}/sft": result.out_dir, f"{role}/predictions": out_path})
        calls[role] = recorder.calls
        check_image_tokens(recorder.calls)
        check_chat_template(recorder.calls)
        if family == "gemma3":
            check_token_type_ids(recorder.calls)
    return Rehearsal(pd.DataFrame(rows, columns=STAGE_COLUMNS), calls, folders, examples)


def _row(name: str, stage: str, log: pd.DataFrame, prompt: int, image: int, completion: float, rss: dict) -> dict:
    steps = int(log["step"].max()) if "step" in log else 0
    runtime = float(log["train_runtime"].dropna().iloc[-1])
    return {"model": name, "stage": stage, "steps": steps, "prompt tokens": prompt, "image tokens": image,
            "completion tokens": completion, "peak RSS GiB": rss["gib"], "RSS growth GiB": rss["growth"],
            "peak GPU GiB": rss.get("gpu", float("nan")),
            "s/step": runtime / max(1, steps)}


def render(table: pd.DataFrame) -> str:
    return table.to_string(index=False, float_format=lambda v: f"{v:,.2f}")

