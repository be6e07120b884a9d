"""Batched greedy generation to prediction files (one JSONL row per image), resumable.

A row holds the image id, raw output, parsed labels, validity and reason, and the key it was made with
(``prediction_key``: model fingerprint, instruction and generation settings). Rerunning skips images already
predicted with the same key; rows of another key (an edited ``max_new_tokens``, a retrained model) are dropped from
the file, counted, and redone, so a file never mixes settings; a last line cut off by a crash is detected and
redone (``jsonl_store``).

Under ``accelerate launch`` (``predict_sharded``), process i of n predicts every n-th image still to do into
its own shard file ``<name>.shard-<i>-of-<n>.jsonl``; the main process then merges the shards into the
prediction file (one row per image, model and prompt: no duplicates) and removes them. A run cut off midway
resumes from the prediction file and any shard files left behind, with the same or another process count.
"""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from .. import jsonl_store
from ..cache_keys import digest, model_fingerprint
from ..train.models import device_and_dtype, load_model, load_processor
from ..progress import Bar
from ..prompts import parse_output, prompt_for, requires_think, user_message
from ..run_records import count, record_time, timed

def default_batch_size(device: str) -> int:
    return 64 if device == "cuda" else 32


def shard_files(out_path: Path) -> list[Path]:
    out_path = Path(out_path)
    return sorted(out_path.parent.glob(f"{out_path.stem}.shard-*-of-*.jsonl"))


def prediction_key(model_dir: str | Path, prompt_name: str, max_new_tokens: int,
                   image_pixels: tuple[int, int] = (0, 0)) -> str:
    """What a prediction row depends on: the model (its fingerprint), the instruction, and greedy decoding up to
    ``max_new_tokens`` of images bounded to ``image_pixels``."""
    return digest({"model": model_fingerprint(model_dir), "instruction": prompt_for(prompt_name),
                   "decoding": "greedy", "max_new_tokens": int(max_new_tokens), "image_pixels": list(image_pixels)})


def drop_stale(out_path: Path, key: str) -> int:
    """Remove the rows of ``out_path`` made with another key; returns how many were removed (and counts them)."""
    rows, _ = jsonl_store.read_rows(out_path)
    keep = [r for r in rows if r.get("key") == key]
    if len(keep) < len(rows):
        jsonl_store.rewrite(out_path, keep)
        stale = len(rows) - len(keep)
        print(f"{Path(out_path).name}: {stale} row(s) made with other settings or another model are redone")
        count(f"prediction rows redone after a settings or model change ({Path(out_path).name})", stale)
    return len(rows) - len(keep)


def merge_shards(out_path: Path) -> int:
    """Append the shard files' rows not yet in ``out_path`` (same image and key) and remove them."""
    out_path = Path(out_path)
    key = lambda row: (row["image_id"], row.get("key"))  # noqa: E731
    seen = {key(r) for r in jsonl_store.read_rows(out_path)[0]}
    added = 0
    for shard in shard_files(out_path):
        rows = []
        for row in jsonl_store.read_rows(shard)[0]:   # a cut-off last line is dropped: that image is redone
            if key(row) not in seen:
                seen.add(key(row))
                rows.append(row)
        jsonl_store.append_rows(out_path, rows)
        added += len(rows)
        shard.unlink()
    return added


def chat_prompt(processor, instruction: str) -> str:
    """The generation prompt of one user turn (an image and ``instruction``) as the processor's chat template
    writes it."""
    return processor.apply_chat_template([user_message(instruction)], add_generation_prompt=True, tokenize=False)[0]


def generation_batch(processor, text: str, images: list[list]):
    """One prompt per image, padded on the left whatever side the tokenizer pads (a decoder-only model continues
    from the last position: right padding would make it continue from pad tokens). Images whose token counts differ
    (Qwen2.5-VL at each image's own size) give prompts of different lengths."""
    return processor(text=[text] * len(images), images=images, return_tensors="pt", padding=True, padding_side="left")


def predict(model_dir: str | Path, images: pd.DataFrame, prompt_name: str, out_path: Path, batch_size: int = 0,
            max_new_tokens: int = 256, device: str = "auto", progress: bool = True,
            image_pixels: tuple[int, int] = (0, 0), write_path: Path | None = None) -> pd.DataFrame:
    """Predictions for every row of ``images`` (columns image_id, image_path), appended to ``out_path``.

    ``image_pixels``: (min, max) image area for dynamic-resolution processors (``models.bound_image_pixels``).
    ``write_path``: append new rows there instead (a shard file, see ``predict_sharded``).
    """
    out_path = Path(out_path)
    write_path = Path(write_path or out_path)
    instruction = prompt_for(prompt_name)
    think = requires_think(prompt_name)
    key = prediction_key(model_dir, prompt_name, max_new_tokens, image_pixels)
    if write_path == out_path and shard_files(out_path):
        merge_shards(out_path)                 # left behind by an interrupted multi-process run
    broken = jsonl_store.repair(write_path)
    if broken:
        print(f"{write_path.name}: {broken} incomplete line(s) from an interrupted run were dropped and are redone")
        count(f"prediction lines redone ({out_path.name})", broken)
    if write_path == out_path:
        drop_stale(out_path, key)
    mine = lambda row: row.get("key") == key  # noqa: E731
    done = {row["image_id"] for f in {out_path, write_path} for row in jsonl_store.read_rows(f)[0] if mine(row)}
    todo = images.loc[~images["image_id"].isin(done)]
    if len(todo):
        task = f"predict {out_path.stem}"
        dev, _ = device_and_dtype(device)
        with timed(task, "load"):
            model = load_model(model_dir, device=dev).eval()
            processor = load_processor(model_dir, *image_pixels)
        bs = batch_size or default_batch_size(dev)
        text = chat_prompt(processor, instruction)
        bar = Bar(task, len(todo), unit="image", enabled=progress)
        seconds = defaultdict(float)
        for start in range(0, len(todo), bs):
            chunk = todo.iloc[start:start + bs]
            t0 = time.perf_counter()
            pics = [[Image.open(p).convert("RGB")] for p in chunk["image_path"]]
            inputs = generation_batch(processor, text, pics).to(dev)
            t1 = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            decoded = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            seconds["preprocess"] += t1 - t0
            seconds["generate"] += time.perf_counter() - t1
            rows = []
            for image_id, raw in zip(chunk["image_id"], decoded):
                parsed = parse_output(raw, think)
                rows.append({"image_id": image_id, "raw": raw, "labels": list(parsed.labels), "valid": parsed.valid,
                             "reason": parsed.reason, "key": key, "prompt": prompt_name})
            jsonl_store.append_rows(write_path, rows)
            bar.update(len(chunk))
        bar.close()
        for phase, sec in seconds.items():
            record_time(task, phase, sec)
    rows = [r for r in jsonl_store.read_rows(out_path)[0] if mine(r)]
    frame = pd.DataFrame(rows or {"image_id": []}).drop_duplicates("image_id", keep="last")
    return images[["image_id"]].merge(frame, on="image_id", how="left")


def predict_sharded(model_dir: str | Path, images: pd.DataFrame, prompt_name: str, out_path: Path,
                    **kwargs) -> pd.DataFrame:
    """``predict`` spread over the processes of ``accelerate launch`` (one process: the same as ``predict``).

    Process i takes rows i, i+n, ... of ``images`` (fixed before anything is written), on its own device
    (``cuda:<local rank>`` or the CPU), into its own shard file; the main process merges the shards.
    """
    from accelerate import PartialState

    state = PartialState(cpu=device_and_dtype(kwargs.get("device", "auto"))[0] == "cpu")   # gloo on CPU
    if state.num_processes == 1:
        return predict(model_dir, images, prompt_name, out_path, **kwargs)
    out_path = Path(out_path)
    if state.is_main_process:
        merge_shards(out_path)                 # shards of an interrupted run, whatever its process count
        drop_stale(out_path, prediction_key(model_dir, prompt_name, kwargs.get("max_new_tokens", 256),
                                            kwargs.get("image_pixels", (0, 0))))
    state.wait_for_everyone()
    kwargs["device"] = "cpu" if state.device.type == "cpu" else str(state.device)
    shard = out_path.with_name(f"{out_path.stem}.shard-{state.process_index}-of-{state.num_processes}.jsonl")
    predict(model_dir, images.iloc[state.process_index::state.num_processes], prompt_name, out_path,
            write_path=shard, **kwargs)
    state.wait_for_everyone()
    if state.is_main_process:
        merge_shards(out_path)
    state.wait_for_everyone()
    return predict(model_dir, images, prompt_name, out_path, **kwargs)   # all done: reads the merged file


def sample_validity(model_dir: str | Path, images: pd.DataFrame, prompt_name: str, n: int = 64,
                    temperature: float = 0.8, top_p: float = 0.95, max_new_tokens: int = 256,
                    device: str = "auto", seed: int = 0) -> dict:
    """Share of *sampled* completions (T=0.8, top-p 0.95, as in GRPO) that satisfy the output contract."""
    task = f"sample validity {'/'.join(Path(str(model_dir)).parts[-2:])} / {prompt_name}"
    dev, _ = device_and_dtype(device)
    with timed(task, "load"):
        model = load_model(model_dir, device=dev).eval()
        processor = load_processor(model_dir)
    instruction, think = prompt_for(prompt_name), requires_think(prompt_name)
    text = chat_prompt(processor, instruction)
    chunk = images.iloc[:n]
    torch.manual_seed(seed)
    pics = [[Image.open(p).convert("RGB")] for p in chunk["image_path"]]
    inputs = generation_batch(processor, text, pics).to(dev)
    with torch.inference_mode(), timed(task, "generate"):
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                             top_p=top_p)
    decoded = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    parsed = [parse_output(t, think) for t in decoded]
    reasons = pd.Series([p.reason for p in parsed if not p.valid], dtype=str).value_counts().to_dict()
    return {"model": str(model_dir), "prompt": prompt_name, "n": len(parsed),
            "valid_fraction": sum(p.valid for p in parsed) / max(1, len(parsed)), "invalid_reasons": reasons,
            "example": decoded[0] if decoded else ""}
