"""SFT examples tokenised and image-processed once, not at every step of every epoch.

``prepare`` runs trl's own vision-language collator (chat template, tokenisation, image processing, completion
mask) on each example alone and keeps its tensors in memory; ``PreparedCollator`` pads them into the batch that
collator would have built from the same examples (right padding, labels -100 outside the completion).
``SFTTrainer`` requires ``datasets.Dataset`` inputs, so each split becomes a one-column data set of positions in
the prepared examples (an Arrow round trip of the pixel values would cost more per batch than the step it saves).
It needs the ``SFTConfig`` arguments of ``train_args``: the columns are not the model's and are already prepared.
"""
from __future__ import annotations

from dataclasses import dataclass

import datasets
import pandas as pd
import torch


@dataclass
class PreparedCollator:
    """Pads prepared examples on the right (``labels`` with -100, ``input_ids`` with ``pad_token_id``, other
    per-token fields with 0) and concatenates their image fields (``pixel_values``, ``image_grid_thw``)."""

    examples: list[dict[str, torch.Tensor]]
    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        from trl.trainer.utils import pad

        examples = [self.examples[row["example"]] for row in rows]
        fill = {"input_ids": self.pad_token_id, "labels": -100}
        return {key: pad([e[key] for e in examples], padding_value=fill.get(key, 0)) if examples[0][key].dim() == 1
                else torch.cat([e[key] for e in examples]) for key in examples[0]}


def prepare(splits: list[datasets.Dataset | None], processor, max_length: int | None
            ) -> tuple[list[datasets.Dataset | None], PreparedCollator]:
    """Prompt/completion splits (``sft.make_dataset``) as position data sets and the collator that serves them.

    An example longer than ``max_length`` is an error: trl's collator would cut it at the end, silently dropping its
    completion (all labels -100: a step that trains on nothing) or, with long image prompts, image tokens."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    collate = DataCollatorForVisionLanguageModeling(processor, max_length=None, completion_only_loss=True)
    examples, positions = [], []
    for n, split in enumerate(splits):
        if split is None:
            positions.append(None)
            continue
        start = len(examples)
        for i, example in enumerate(split):
            batch = collate([example])
            per_token = batch["input_ids"].shape
            if max_length and per_token[1] > max_length:
                raise ValueError(f"SFT split {n}, example {i}: {per_token[1]} tokens, over sft.max_length = "
                                 f"{max_length}; truncation would cut its completion or image tokens: raise "
                                 "sft.max_length (or bound the image pixels)")
            examples.append({k: v[0] if v.shape == per_token else v for k, v in batch.items()})
        positions.append(datasets.Dataset.from_dict({"example": list(range(start, len(examples)))}))
    return positions, PreparedCollator(examples, processor.tokenizer.pad_token_id)


def train_args() -> dict:
    """The ``trl.SFTConfig`` arguments that prepared data needs."""
    return {"remove_unused_columns": False, "dataset_kwargs": {"skip_prepare_dataset": True}}


def loss_mask(example: dict[str, torch.Tensor], tokenizer, image_token: str) -> pd.DataFrame:
    """One prepared example's tokens as runs of one kind: ``image`` (``image_token``), ``padding`` (attention 0),
    ``prompt`` (template, system and user turn) or ``target`` (labels != -100: the tokens the loss trains on);
    each run with its token count and its text (an image run as ``<token> × n``)."""
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    ids, labels = example["input_ids"].tolist(), example["labels"].tolist()
    attention = example.get("attention_mask", torch.ones(len(ids), dtype=torch.long)).tolist()
    kinds = ["target" if lab != -100 else "padding" if att == 0 else "image" if i == image_id else "prompt"
             for i, lab, att in zip(ids, labels, attention)]
    runs: list[tuple[str, list[int]]] = []
    for kind, token in zip(kinds, ids):
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(token)
        else:
            runs.append((kind, [token]))
    return pd.DataFrame([{"kind": kind, "trains": kind == "target", "tokens": len(run),
                          "text": f"{image_token} × {len(run)}" if kind == "image" else tokenizer.decode(run)}
                         for kind, run in runs])
