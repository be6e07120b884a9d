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
