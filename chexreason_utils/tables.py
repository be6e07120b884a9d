"""File formats of a registered table: a tidy CSV, Markdown that renders (GitHub, JupyterLab), booktabs LaTeX.

A table is a DataFrame. A named row index (labels, formats, checkpoints) becomes the first column. Two-level
columns ``(source, column)`` — the layout ``reporting`` builds — become grouped column blocks in LaTeX
(``\\multicolumn`` headings over ``\\cmidrule``), ``<source>: <column>`` headings in Markdown, and a ``source``
column in the CSV (one row per row label and source).
"""
from __future__ import annotations

import math
import numbers

import pandas as pd

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "|": r"\textbar{}", "<": r"\textless{}", ">": r"\textgreater{}"}
MISSING = "–"


def _flat_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The row index as leading column(s) when it carries meaning (a name), else dropped."""
    if any(name is not None for name in table.index.names):
        return table.reset_index()
    return table.reset_index(drop=True)


def _check(table: pd.DataFrame) -> None:
    if table.columns.nlevels > 2:
        raise ValueError(f"a table has flat or (source, column) columns; got {table.columns.nlevels} levels")
    if table.columns.duplicated().any():
        raise ValueError(f"duplicate table columns: {list(table.columns[table.columns.duplicated()])}")


def tidy(table: pd.DataFrame) -> pd.DataFrame:
    """One header row: (source, column) blocks stacked into a ``source`` column, sources in column order."""
    _check(table)
    if table.columns.nlevels == 1:
        return _flat_rows(table)
    parts = [_flat_rows(table[source].rename_axis(columns=None)).assign(source=source)
             for source in table.columns.get_level_values(0).unique()]
    out = pd.concat(parts, ignore_index=True)
    lead = [n for n in table.index.names if n is not None]
    return out[[*lead, "source", *[c for c in out.columns if c not in lead and c != "source"]]]


def format_cell(value, floatfmt: str = ".3f", missing: str = MISSING) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return format(float(value), floatfmt)
    return str(value)


def _heading(column, headings: dict[str, str]) -> str:
    if isinstance(column, tuple):
        source, name = column
        return f"{source}: {headings.get(name, name)}" if name != "" else str(source)
    return headings.get(column, str(column))


def markdown(table: pd.DataFrame, headings: dict[str, str] | None = None) -> str:
    """A pipe table: every row has as many cells as the header; a '|' inside a cell is escaped."""
    _check(table)
    headings = headings or {}
    flat = _flat_rows(table)

    def row(cells) -> str:
        return "| " + " | ".join(c.replace("|", r"\|").replace("\n", " ") for c in cells) + " |"

    numeric = [pd.api.types.is_numeric_dtype(flat[c]) for c in flat.columns]
    lines = [row([_heading(c, headings) for c in flat.columns]),
             "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    lines += [row([format_cell(v) for v in values]) for values in flat.itertuples(index=False)]
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex(table: pd.DataFrame, caption: str, label: str, headings: dict[str, str] | None = None) -> str:
    """A booktabs ``table`` environment ready to ``\\input`` (needs ``\\usepackage{booktabs}``).

    Column blocks get a ``\\multicolumn`` heading and a ``\\cmidrule``; a final row labelled ``Macro`` is set
    off by a rule, as in the paper's Tables 5-6.
    """
    _check(table)
    headings = headings or {}
    flat = _flat_rows(table)
    n_lead = flat.shape[1] - table.shape[1]
    numeric = [pd.api.types.is_numeric_dtype(flat[c]) for c in flat.columns]
    spec = "".join("r" if n else "l" for n in numeric)
    lines = [r"\begin{table}[htbp]", r"\centering", r"\small", rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if table.columns.nlevels == 2:
        group, rules, col = [""] * n_lead, [], n_lead + 1
        for source in table.columns.get_level_values(0).unique():
            width = len(table[source].columns)
            group.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(source)}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + width - 1}}}")
            col += width
        lines += [" & ".join(group) + r" \\", " ".join(rules)]
        names = [*(c[0] for c in flat.columns[:n_lead]), *(c[1] for c in table.columns)]
    else:
        names = list(flat.columns)
    lines += [" & ".join(latex_escape(headings.get(n, n)) for n in names) + r" \\", r"\midrule"]
    for values in flat.itertuples(index=False):
        if n_lead and str(values[0]) == "Macro":
            lines.append(r"\midrule")
        lines.append(" & ".join(latex_escape(format_cell(v, missing="--")) for v in values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
