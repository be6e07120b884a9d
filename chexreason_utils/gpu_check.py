"""``make gpu-check``: the rehearsal on a CUDA device with the real models at real size, beside ``plan``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from .config import Config
from .rehearsal import FAMILIES, build_model, rehearse


def gpu_check(cfg: Config, out_dir: Path) -> pd.DataFrame:
    """``make gpu-check``: the rehearsal on a CUDA device with the real models at real size (the hub's weights when
    they load, else random weights with the real configs), its per-stage s/step and peak GPU memory beside
    ``plan``'s estimate for the same batch and lengths."""
    from .plan import kv_cache_gib, model_shape, training_gib, weights_gib

    if not torch.cuda.is_available():
        raise RuntimeError(f"gpu-check needs a CUDA device: torch {torch.__version__} sees none "
                           f"(torch.cuda.is_available() is False). Run it on a GPU machine; the CPU rehearsal is "
                           f"`python -m chexreason_utils rehearse`")
    from transformers import AutoConfig

    cfg.device = "cuda"
    bases = {}
    for role, family in FAMILIES.items():
        hub = getattr(cfg.models, role)
        try:
            AutoConfig.from_pretrained(hub)
            bases[role] = hub
        except OSError:
            print(f"{hub}: not reachable, random weights with its real config")
            bases[role] = str(build_model(family, Path(out_dir) / role / "base", 0, 0, cfg.seed, full_size=True))
    table = rehearse(cfg, out_dir, bases=bases).table
    g, e = cfg.grpo, cfg.evaluation
    estimates = []
    for _, row in table.iterrows():
        shape = model_shape(row["model"], cfg)
        seq = int(row["prompt tokens"]) + (g.max_completion_length if row["stage"] == "GRPO"
                                           else int(row["completion tokens"]))
        if row["stage"] == "SFT":
            estimates.append(training_gib(shape, cfg.sft.batch_size, seq, seq))
        elif row["stage"] == "GRPO":
            batch = g.prompts_per_step * g.num_generations
            estimates.append(training_gib(shape, batch, seq, g.max_completion_length) + kv_cache_gib(shape, batch, seq))
        else:
            estimates.append(weights_gib(shape) + kv_cache_gib(shape, e.batch_size, seq + e.max_new_tokens))
    return table.assign(**{"plan GiB": estimates})
