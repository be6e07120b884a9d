"""What RL does to the policy (issue 37, item 8): three readouts that reuse trained runs, computed here, run and
read out by stage 08 (``steps.policy_readouts``).

- **Drift** (``completion_kl``): KL(SFT || GRPO) along the SFT model's greedy answer to each test prompt,
  teacher-forced through both models: at every answer token the exact KL between their next-token distributions
  over the vocabulary, averaged over the answer's tokens.
- **Reliance on the image** (``blank_images``, ``swapped_images``): the same test set with every image replaced by
  one uniform grey image, or by the image of another patient of the set (a seeded permutation in which no row keeps
  a patient's own image); a model that reads the image loses macro-F1 under both.
- **Coverage** (``sampled_answers``, ``pass_at_k``): whether the true label set is among k answers sampled as GRPO
  samples them (temperature, top-p), with the unbiased pass@k estimator from n samples per image.
"""
from __future__ import annotations

import io
from math import comb
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.nn import functional as F

from ..progress import Bar
from ..prompts import parse_output, prompt_for, requires_think
from ..train.models import load_model, load_processor
from .evaluate import chat_prompt, generation_batch

GREY = 128   # the blank image's pixel value


def _with_answer(inputs: dict, answer_ids: list[int]) -> dict:
    """A prompt's model inputs (one image) with ``answer_ids`` appended: input ids extended, attention on, every
    other per-token field (token type ids) extended with zeros, the image fields as they are."""
    n, out = inputs["input_ids"].shape[1], {}
    extra = torch.tensor([answer_ids], dtype=inputs["input_ids"].dtype)
    for key, value in inputs.items():
        if torch.is_tensor(value) and value.dim() == 2 and value.shape == (1, n):
            fill = extra if key == "input_ids" else torch.ones_like(extra) if key == "attention_mask" else \
                torch.zeros_like(extra)
            out[key] = torch.cat([value, fill], dim=1)
        else:
            out[key] = value
    return out


def completion_kl(sft_dir: str | Path, grpo_dir: str | Path, image_paths: list, prompt_name: str,
                  answers: list[str]) -> np.ndarray:
    """Per image: the mean over the SFT ``answers``' tokens (re-tokenised) of KL(SFT || GRPO) between the two
    models' next-token distributions, teacher-forced on prompt + answer; NaN for an empty answer."""
    if len(image_paths) != len(answers):
        raise ValueError(f"completion_kl: {len(image_paths)} images but {len(answers)} answers")
    models = [load_model(d, device="cpu").eval() for d in (sft_dir, grpo_dir)]
    processor = load_processor(sft_dir)
    text, out = chat_prompt(processor, prompt_for(prompt_name)), []
    with torch.inference_mode():
        for path, answer in zip(image_paths, answers):
            ids = processor.tokenizer(answer, add_special_tokens=False)["input_ids"]
            if not ids:
                out.append(np.nan)
                continue
            prompt = processor(text=[text], images=[[Image.open(path).convert("RGB")]], return_tensors="pt")
            full, start = _with_answer(dict(prompt), ids), prompt["input_ids"].shape[1]
            logp = [F.log_softmax(m(**full).logits[0, start - 1:-1].float(), dim=-1) for m in models]
            out.append(float((logp[0].exp() * (logp[0] - logp[1])).sum(dim=-1).mean()))
    return np.array(out)


def blank_images(images: pd.DataFrame, folder: Path, size: int) -> pd.DataFrame:
    """``images`` with every image_path pointing at one uniform grey PNG (``size`` pixels square) in ``folder``."""
    path = Path(folder) / f"grey_{size}.png"
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), GREY, np.uint8), mode="L").save(buffer, format="PNG")
    if not path.is_file() or path.read_bytes() != buffer.getvalue():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())
    return images.assign(image_path=str(path))


def swapped_images(images: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``images`` (columns image_path, patient_id) with the image paths permuted (``seed``) so that no row keeps an
    image of its own patient; a ValueError when one patient holds more than half the rows (no such permutation)."""
    patients = images["patient_id"].astype(str).to_numpy()
    largest = pd.Series(patients).value_counts().max()
    if largest * 2 > len(images):
        raise ValueError(f"swapped_images: one patient holds {largest} of {len(images)} images; no permutation "
                         "gives every row another patient's image")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    grouped = order[np.argsort(patients[order], kind="stable")]   # rows of one patient together, in random order
    shift = largest   # a rotation by the largest group moves every row out of its own patient's block
    target = np.empty(len(images), int)
    target[grouped] = np.roll(grouped, shift)
    paths = images["image_path"].to_numpy()
    return images.assign(image_path=paths[target])


def sampled_answers(model_dir: str | Path, images: pd.DataFrame, prompt_name: str, n: int, temperature: float,
                    top_p: float, max_new_tokens: int, seed: int, batch_size: int = 16,
                    progress: bool = True) -> pd.DataFrame:
    """``n`` sampled answers per image (rows image_id, sample, labels, valid), sampled as GRPO samples
    (``temperature``, ``top_p``) after ``torch.manual_seed(seed)``, ``batch_size`` images at a time."""
    model, processor = load_model(model_dir, device="cpu").eval(), load_processor(model_dir)
    text, think, rows = chat_prompt(processor, prompt_for(prompt_name)), requires_think(prompt_name), []
    torch.manual_seed(seed)
    bar = Bar(f"sample {Path(str(model_dir)).name}", len(images), unit="image", enabled=progress)
    for start in range(0, len(images), batch_size):
        chunk = images.iloc[start:start + batch_size]
        inputs = generation_batch(processor, text, [[Image.open(p).convert("RGB")] for p in chunk["image_path"]])
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                 top_p=top_p, num_return_sequences=n)
        decoded = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        for k, raw in enumerate(decoded):
            parsed = parse_output(raw, think)
            rows.append({"image_id": chunk["image_id"].iloc[k // n], "sample": k % n, "labels": list(parsed.labels),
                         "valid": parsed.valid})
        bar.update(len(chunk))
    bar.close()
    return pd.DataFrame(rows)


def pass_at_k(correct: np.ndarray, k: int) -> np.ndarray:
    """Per image, the unbiased pass@k from ``correct`` (images x n samples, 1 where a sample's label set is the
    true one): 1 - C(n - c, k) / C(n, k)."""
    correct = np.asarray(correct, int)
    n = correct.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n = {n} samples, got k = {k}")
    return np.array([1.0 - comb(n - c, k) / comb(n, k) for c in correct.sum(axis=1)])
