"""Loaders for the datasets in their official layouts (MIMIC-CXR-JPG, CheXpert, NIH ChestX-ray14, PadChest), and the
phantom world written in them."""
from .chexpert import load_chexpert
from .mimic import load_mimic
from .nih import load_nih
from .padchest import load_padchest
from .records import DataLayoutError, LoadResult

__all__ = ["load_mimic", "load_chexpert", "load_nih", "load_padchest", "LoadResult", "DataLayoutError"]
