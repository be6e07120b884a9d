"""Batched greedy generation to prediction files (one JSONL row per image), resumable.

A row holds the image id, raw output, parsed labels, validity and reason, and the model fingerprint and
prompt hash it was made with. Rerunning skips images already predicted by the same checkpoint and prompt;
a last line cut off by a crash is detected and redone (``jsonl_store``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import jsonl_store
from .models import device_and_dtype, load_model, load_processor, model_fingerprint
from .prompts import parse_output, prompt_for, requires_think, user_message
from .stage import count

def default_batch_size(device: str) -> int:
    return 64 if device == "cuda" else 32


def predict(model_dir: str | Path, images: pd.DataFrame, prompt_name: str, out_path: Path, batch_size: int = 0,
            max_new_tokens: int = 256, device: str = "auto", progress: bool = True) -> pd.DataFrame:
    """Predictions for every row of ``images`` (columns image_id, image_path), appended to ``out_path``."""
    out_path = Path(out_path)
    instruction = prompt_for(prompt_name)
    think = requires_think(prompt_name)
    fp, prompt_sha = model_fingerprint(model_dir), hashlib.sha256(instruction.encode()).hexdigest()[:16]
    broken = jsonl_store.repair(out_path)
    if broken:
        print(f"{out_path.name}: {broken} incomplete line(s) from an interrupted run were dropped and are redone")
        count(f"prediction lines redone ({out_path.name})", broken)
    mine = lambda row: row.get("model_fp") == fp and row.get("prompt_sha") == prompt_sha  # noqa: E731
    done = {row["image_id"] for row in jsonl_store.read_rows(out_path)[0] if mine(row)}
    todo = images.loc[~images["image_id"].isin(done)]
    if len(todo):
        dev, _ = device_and_dtype(device)
        model = load_model(model_dir, device=dev).eval()
        processor = load_processor(model_dir)
        bs = batch_size or default_batch_size(dev)
        text = processor.apply_chat_template([user_message(instruction)], add_generation_prompt=True, tokenize=False)[0]
        bar = tqdm(total=len(todo), desc=f"predict {Path(str(model_dir)).name} / {prompt_name}", disable=not progress)
        for start in range(0, len(todo), bs):
            chunk = todo.iloc[start:start + bs]
            pics = [[Image.open(p).convert("RGB")] for p in chunk["image_path"]]
            inputs = processor(text=[text] * len(chunk), images=pics, return_tensors="pt", padding=True).to(dev)
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            decoded = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            rows = []
            for image_id, raw in zip(chunk["image_id"], decoded):
                parsed = parse_output(raw, think)
                rows.append({"image_id": image_id, "raw": raw, "labels": list(parsed.labels), "valid": parsed.valid,
                             "reason": parsed.reason, "model_fp": fp, "prompt_sha": prompt_sha,
                             "model": str(model_dir), "prompt": prompt_name})
            jsonl_store.append_rows(out_path, rows)
            bar.update(len(chunk))
        bar.close()
    rows = [r for r in jsonl_store.read_rows(out_path)[0] if mine(r)]
    frame = pd.DataFrame(rows).drop_duplicates("image_id", keep="last")
    return images[["image_id"]].merge(frame, on="image_id", how="left")


def sample_validity(model_dir: str | Path, images: pd.DataFrame, prompt_name: str, n: int = 64,
                    temperature: float = 0.8, top_p: float = 0.95, max_new_tokens: int = 256,
                    device: str = "auto", seed: int = 0) -> dict:
    """Share of *sampled* completions (T=0.8, top-p 0.95, as in GRPO) that satisfy the output contract."""
    dev, _ = device_and_dtype(device)
    model = load_model(model_dir, device=dev).eval()
    processor = load_processor(model_dir)
    instruction, think = prompt_for(prompt_name), requires_think(prompt_name)
    text = processor.apply_chat_template([user_message(instruction)], add_generation_prompt=True, tokenize=False)[0]
    chunk = images.iloc[:n]
    torch.manual_seed(seed)
    pics = [[Image.open(p).convert("RGB")] for p in chunk["image_path"]]
    inputs = processor(text=[text] * len(chunk), images=pics, return_tensors="pt", padding=True).to(dev)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                             top_p=top_p)
    decoded = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    parsed = [parse_output(t, think) for t in decoded]
    reasons = pd.Series([p.reason for p in parsed if not p.valid], dtype=str).value_counts().to_dict()
    return {"model": str(model_dir), "prompt": prompt_name, "n": len(parsed),
            "valid_fraction": sum(p.valid for p in parsed) / max(1, len(parsed)), "invalid_reasons": reasons,
            "example": decoded[0] if decoded else ""}
