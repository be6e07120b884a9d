"""chexreason_utils: the library behind the chexreason notebooks (arXiv 2512.23090 companion).

Notebooks narrate and call; the logic lives in one module per concern (see Layout in the README).
"""
from .stage import Stage, start_stage

__all__ = ["Stage", "start_stage"]
__version__ = "0.1.0"
