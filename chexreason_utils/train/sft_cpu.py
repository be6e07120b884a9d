"""``SFTTrainer`` for the CPU: trl's loss and metrics, with the per-token outputs of its fused LM head taken from the
model's own logits instead.

Without Triton, trl's fused head scores every position (padding and prompt included) in plain-torch tiles and
recomputes them in the backward: on the tiny Gemma3 (1,200-token vocabulary) that is a third of a CPU step
(``bench/throughput.py``), while the full logits it exists to avoid are a few MB. On a GPU trl's head stays.
"""
from __future__ import annotations

import torch
from trl import SFTTrainer
from trl.trainer.utils import FusedCausalLMOutput


class FullLogitsHead:
    """Calls ``model``; with ``fused_lm_head=True`` returns what trl's fused head returns (per-token log-probability,
    entropy and top-1 hit of each next-token label, zero where the label is -100), from the full logits."""

    def __init__(self, model):
        self.model = model

    def __call__(self, *, fused_lm_head: bool = False, labels: torch.Tensor | None = None, **inputs):
        if not fused_lm_head:
            return self.model(labels=labels, **inputs)
        targets = labels[:, 1:]
        mask = targets != -100
        scored = self.model(**inputs).logits[:, :-1][mask].float()
        log_p = torch.log_softmax(scored, dim=-1)
        target_log_p = log_p.gather(-1, targets[mask][:, None])[:, 0]
        with torch.no_grad():
            entropy = -(log_p.exp() * log_p).sum(-1)
            is_top1 = scored.argmax(-1) == targets[mask]
        spread = lambda x: torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_scatter(mask, x)  # noqa: E731
        return FusedCausalLMOutput(log_probs=spread(target_log_p), entropy=spread(entropy), is_top1=spread(is_top1),
                                   label_mask=mask)


class CPUSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss and metrics are computed by trl from ``FullLogitsHead``'s outputs."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(FullLogitsHead(model), inputs, return_outputs, num_items_in_batch)
