"""Reading a transformers / trl trainer's ``log_history``: training rows, and GRPO's per-step measures."""
from __future__ import annotations

import numpy as np
import pandas as pd

LOG_COLUMNS = {"entropy": "entropy", "kl": "kl", "clip_ratio/region_mean": "clip_ratio",
               "frac_reward_zero_std": "frac_zero_std", "completions/mean_length": "mean_length",
               "reward": "reward", "reward_std": "reward_std"}


def log_rows(log: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows of a trainer log that carry ``column`` (training rows carry ``loss`` / ``reward``; eval and
    summary rows do not); no rows when the log never logged it."""
    return log.loc[log[column].notna()] if column in log else log.iloc[0:0]


def step_log(log: pd.DataFrame) -> pd.DataFrame:
    """The per-step training rows of a trl log with friendly column names (missing ones are NaN). Steps that
    reuse an earlier generation (``num_iterations`` or ``steps_per_generation`` > 1) have a loss and clip ratios
    but no reward."""
    rows = log_rows(log, "loss")
    out = pd.DataFrame({"step": rows["step"].to_numpy()})
    for src, dst in LOG_COLUMNS.items():
        out[dst] = rows[src].to_numpy() if src in rows else np.nan
    return out
