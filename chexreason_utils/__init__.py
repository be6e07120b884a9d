"""chexreason_utils: the library behind the chexreason notebooks (arXiv 2512.23090 companion).

Notebooks narrate and call; the logic lives in one module per concern (see docs/layout.md).
"""
__all__ = ["Stage", "start_stage"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``Stage`` and ``start_stage`` on first use: importing the package (as the CLI, every worker process and every
    submodule import does) then costs nothing, where ``stage`` pulls in torch and the plotting stack (about 2 s)."""
    if name in __all__:
        from . import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'chexreason_utils' has no attribute {name!r}")
