"""One seeding function for every stage."""
from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and CUDA), and apply torch's in-code arithmetic settings
    (``arithmetic.configure_torch``). ``PYTHONHASHSEED`` reaches only processes started afterwards (workers), not
    this one's hashing; no deterministic-kernel mode is set."""
    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    import torch

    from .arithmetic import configure_torch

    configure_torch()
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
