"""One plot style, deterministic figure and table files, each registered in ``figure_registry``.

``save_figure`` writes PNG + PDF with no timestamps or version strings (two saves of the same figure are
byte-identical) and the CSV of the numbers plotted beside them; like ``save_table``, it leaves a file that
already holds the same bytes untouched (``jsonl_store.write_if_changed``). ``show_figure`` saves a figure and
displays it: the notebooks' one call per figure.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import figure_registry, reporting, tables
from ..jsonl_store import write_if_changed

_PNG_METADATA = {"Software": None}
_PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None}

PALETTE = {"base": "#7f7f7f", "sft": "#1f77b4", "grpo": "#d62728", "hard": "#d62728", "nuanced": "#9467bd",
           "ablation": "#ff7f0e", "medical": "#2ca02c", "general": "#8c564b", "reported": "#444444"}


def set_style() -> None:
    """The companion's plot style (seaborn whitegrid, fixed sizes and fonts, fixed hash salt)."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "figure.figsize": (8, 4.5),
                         "svg.hashsalt": "chexreason", "pdf.compression": 6, "axes.titlesize": 11})


def save_figure(fig: plt.Figure, artifact_id: str, data: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Write ``<id>.png``, ``<id>.pdf`` and ``<id>.csv`` (the plotted numbers) deterministically."""
    art = figure_registry.get(artifact_id)
    if art.kind != "figure":
        raise ValueError(f"{artifact_id!r} is registered as a {art.kind}; use save_table")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf, csv = (out_dir / name for name in art.files())
    for path, metadata in ((png, _PNG_METADATA), (pdf, _PDF_METADATA)):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=path.suffix[1:], metadata=metadata, bbox_inches="tight")
        write_if_changed(path, buffer.getvalue())
    write_if_changed(csv, data.to_csv(index=False, float_format="%.6g"))
    plt.close(fig)   # shown once, by show_figure (or the cell that returns it), not again by the inline backend
    return [png, pdf, csv]


def show_figure(fig: plt.Figure, artifact_id: str, data: pd.DataFrame, out_dir: Path) -> None:
    """What a notebook does with each figure it makes: save it (``save_figure``: PNG, PDF and the plotted numbers
    in ``out_dir``), then display it in the cell's output."""
    from IPython.display import display

    save_figure(fig, artifact_id, data, out_dir)
    display(fig)


def table_csv(table: pd.DataFrame) -> str:
    """The text of a registered table's ``<id>.csv`` (tidy, 6 significant digits): what ``save_table`` writes."""
    return tables.tidy(table).to_csv(index=False, float_format="%.6g")


def save_table(table: pd.DataFrame, artifact_id: str, out_dir: Path, caption: str = "") -> list[Path]:
    """Write ``<id>.csv`` (tidy), ``<id>.md`` and ``<id>.tex`` (booktabs) for a registered table.

    A named row index is written as the first column; ``(source, column)`` blocks from ``reporting`` become
    grouped LaTeX columns (see ``tables``). Metric columns carry the paper's headings in MD and LaTeX.
    """
    art = figure_registry.get(artifact_id)
    if art.kind != "table":
        raise ValueError(f"{artifact_id!r} is registered as a {art.kind}; use save_figure")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md, tex = (out_dir / name for name in art.files())
    write_if_changed(csv, table_csv(table))
    write_if_changed(md, f"**{art.title}**{(' — ' + caption) if caption else ''}\n\n"
                     + tables.markdown(table, reporting.PAPER_HEADINGS) + "\n")
    write_if_changed(tex, tables.latex(table, caption=f"{art.title}{(' (' + caption + ')') if caption else ''}",
                                       label=f"tab:{artifact_id}", headings=reporting.PAPER_HEADINGS))
    return [csv, md, tex]
