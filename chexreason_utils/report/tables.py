"""File formats of a registered table: a tidy CSV, Markdown that renders (GitHub, JupyterLab), booktabs LaTeX.

A table is a DataFrame. A named row index (labels, formats, checkpoints) becomes the first column. Two-level
columns ``(source, column)`` — the layout ``reporting`` builds — become grouped column blocks in LaTeX
(``\\multicolumn`` headings over ``\\cmidrule``), a page-wide Markdown view (this run's value beside the paper's
in each cell, per-seed values in a second table; ``markdown``), and a ``source`` column in the CSV (one row per
row label and source).
"""
from __future__ import annotations

import math
import numbers
import re

import pandas as pd

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "|": r"\textbar{}", "<": r"\textless{}", ">": r"\textgreater{}"}
MISSING = "–"
MAX_MD_COLUMNS = 12                                      # what fits a page on GitHub
PAPER_PREFIX = "reported"                                # the paper's block (``reporting.REPORTED``)
OURS_PREFIXES = ("reproduced", "mean over seeds")        # this run's block: its value, or the mean over seeds
SEED_SOURCE = re.compile(r"seed \d+")                    # one training seed's block


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


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_cell(value, floatfmt: str = ".3f", missing: str = MISSING) -> str:
    if _missing(value):
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
    """Pipe table(s) that fit a page (at most ``MAX_MD_COLUMNS`` columns; every row has as many cells as the
    header; a '|' inside a cell is escaped). A wider ``(source, column)`` table becomes this run's values with the
    paper's beside them in each cell, then its per-seed values as a second table (``_compact``); a wider flat table
    shows its first columns and lists the others below it, one line per row that has any (blank cells left
    out), each row named by its first cells."""
    _check(table)
    headings = headings or {}
    flat = _flat_rows(table)
    if flat.shape[1] <= MAX_MD_COLUMNS:
        return _pipe(flat, [_heading(c, headings) for c in flat.columns])
    if table.columns.nlevels == 2:
        compact = _compact(table, headings)
        if compact is not None:
            return compact
    shown, rest = flat.iloc[:, :MAX_MD_COLUMNS], flat.iloc[:, MAX_MD_COLUMNS:]
    below = []
    for label, values in zip(_row_labels(shown), rest.itertuples(index=False)):
        given = [f"{_heading(c, headings)}: {format_cell(v)}" for c, v in zip(rest.columns, values) if not _blank(v)]
        if given:
            below.append(f"- **{label}** — " + "; ".join(given))
    return "\n".join([_pipe(shown, [_heading(c, headings) for c in shown.columns]), "", *below])


def _blank(value) -> bool:
    return _missing(value) or (isinstance(value, str) and not value.strip())


def _row_labels(shown: pd.DataFrame) -> list[str]:
    """Each row's label for the lines below a wide table: its first cells, as many as make every row's label
    distinct (all of them when none do)."""
    k = next((k for k in range(1, shown.shape[1] + 1) if not shown.iloc[:, :k].astype(str).duplicated().any()),
             shown.shape[1])
    return [" · ".join(format_cell(v) for v in row) for row in shown.iloc[:, :k].itertuples(index=False)]


def _pipe(flat: pd.DataFrame, header: list[str]) -> str:
    def row(cells) -> str:
        return "| " + " | ".join(c.replace("|", r"\|").replace("\n", " ") for c in cells) + " |"

    numeric = [pd.api.types.is_numeric_dtype(flat[c]) for c in flat.columns]
    lines = [row(header), "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    lines += [row([format_cell(v) for v in values]) for values in flat.itertuples(index=False)]
    return "\n".join(lines)


def _compact(table: pd.DataFrame, headings: dict[str, str]) -> str | None:
    """A page-wide view of a ``(source, column)`` table: one column per metric whose cell is this run's value
    (the ``reproduced`` / ``mean over seeds`` block) with the paper's beside it, other blocks (e.g. trivial
    baselines) as ``<source>: <column>`` columns; then each training seed's values, one row per row label and
    seed. None when the table has no block of this run's values."""
    sources = list(table.columns.get_level_values(0).unique())
    ours = next((s for s in sources if str(s).startswith(OURS_PREFIXES)), None)
    if ours is None:
        return None
    paper = next((s for s in sources if str(s).startswith(PAPER_PREFIX)), None)
    seeds = [s for s in sources if SEED_SOURCE.fullmatch(str(s))]
    others = [s for s in sources if s not in (ours, paper, *seeds)]
    metrics = list(dict.fromkeys([*(table[paper].columns if paper else []), *table[ours].columns]))
    lead = [n for n in table.index.names if n is not None]
    view = pd.DataFrame({n: list(table.index.get_level_values(n)) for n in lead})
    for m in metrics:
        mine = table[ours][m] if m in table[ours] else pd.Series(math.nan, index=table.index)
        cells = [format_cell(v) for v in mine]
        if paper is not None and m in table[paper]:
            cells = [c if _missing(p) else f"{c} · paper {format_cell(p)}" for c, p in zip(cells, table[paper][m])]
        view[headings.get(m, m)] = cells
    for source in others:
        for m in table[source].columns:
            view[f"{source}: {headings.get(m, m)}"] = [format_cell(v) for v in table[source][m]]
    note = f"Each cell: {ours}" + (f" · {paper}." if paper else ".")
    parts = [note, "", _pipe(view, list(view.columns))]
    if seeds:
        per_seed = pd.concat([_flat_rows(table[s].rename_axis(columns=None)).assign(seed=str(s)) for s in seeds],
                             ignore_index=True)
        names = [c for c in per_seed.columns if c != "seed"]
        n_lead = len(lead)
        per_seed = per_seed[[*names[:n_lead], "seed", *names[n_lead:]]]
        header = [*names[:n_lead], "seed", *(headings.get(c, c) for c in names[n_lead:])]
        parts += ["", "Per training seed:", "", _pipe(per_seed, header)]
    return "\n".join(parts)


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
