"""Loaders for the three datasets in their official layouts, and the phantom world written in them."""
from .chexpert import load_chexpert
from .mimic import load_mimic
from .nih import load_nih
from .records import DataLayoutError, LoadResult

__all__ = ["load_mimic", "load_chexpert", "load_nih", "LoadResult", "DataLayoutError"]
