"""Structural checks for generated tables: Markdown pipe tables and LaTeX tabulars (shared by several tests)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def markdown_cells(line: str) -> list[str]:
    """The cells of one pipe-table row, as GitHub splits them (escaped pipes stay inside a cell)."""
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith(r"\|") else inner
    return [c.strip() for c in _UNESCAPED_PIPE.split(inner)]


def markdown_tables(text: str) -> list[list[str]]:
    """Every pipe table in a Markdown text, as its list of lines."""
    found, current = [], []
    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            current.append(line)
        elif current:
            found.append(current)
            current = []
    if current:
        found.append(current)
    return found


def check_markdown_table(lines: list[str], where: str) -> int:
    """Header cells = separator cells = cells of every row; returns the number of columns."""
    assert len(lines) >= 2, f"{where}: a table needs a header and a separator row"
    header, separator, *rows = lines
    n = len(markdown_cells(header))
    seps = markdown_cells(separator)
    assert len(seps) == n and all(re.fullmatch(r":?-{3,}:?", s) for s in seps), \
        f"{where}: separator {separator!r} does not match a {n}-cell header"
    for row in rows:
        assert len(markdown_cells(row)) == n, f"{where}: {len(markdown_cells(row))} cells in {row!r}, header has {n}"
    return n


def check_markdown_file(path: Path) -> int:
    """Every table in a Markdown file renders; returns how many tables it holds."""
    tables = markdown_tables(path.read_text())
    for i, lines in enumerate(tables):
        check_markdown_table(lines, f"{path.name} table {i + 1}")
    return len(tables)


def _latex_cells(row: str) -> int:
    """Columns a tabular row spans: '&'-separated cells, a \\multicolumn{k} counting k."""
    cells = re.split(r"(?<!\\)&", row)
    return sum(int(m.group(1)) if (m := re.search(r"\\multicolumn\{(\d+)\}", c)) else 1 for c in cells)


def check_latex_structure(text: str, where: str) -> None:
    """Balanced environments and braces; every tabular row spans the declared columns."""
    envs = re.findall(r"\\(begin|end)\{(\w+)\}", text)
    stack = []
    for kind, name in envs:
        if kind == "begin":
            stack.append(name)
        else:
            assert stack and stack.pop() == name, f"{where}: \\end{{{name}}} without its \\begin"
    assert not stack, f"{where}: unclosed {stack}"
    unescaped = re.sub(r"\\[{}]", "", text)
    assert unescaped.count("{") == unescaped.count("}"), f"{where}: unbalanced braces"
    spec = re.search(r"\\begin\{tabular\}\{([lcr|]+)\}", text)
    assert spec, f"{where}: no tabular with a column spec"
    n = len(spec.group(1).replace("|", ""))
    body = text[spec.end():text.index(r"\end{tabular}")]
    for line in body.splitlines():
        line = line.strip()
        if line.endswith(r"\\"):
            assert _latex_cells(line[:-2]) == n, f"{where}: row spans {_latex_cells(line[:-2])} of {n} columns: {line}"
    for rule in ("toprule", "midrule", "bottomrule"):
        assert f"\\{rule}" in text, f"{where}: no \\{rule} (booktabs)"


def compile_latex(path: Path, workdir: Path) -> None:
    """Compile a table file inside a minimal booktabs document with pdflatex."""
    doc = workdir / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
                   f"\\begin{{document}}\n\\input{{{path.resolve().as_posix()}}}\n\\end{{document}}\n")
    done = subprocess.run([shutil.which("pdflatex"), "-interaction=nonstopmode", "-halt-on-error", doc.name],
                          cwd=workdir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{path.name} does not compile:\n{done.stdout[-2000:]}"


def check_latex_file(path: Path, workdir: Path) -> None:
    """Compile with pdflatex when a TeX engine is installed, else check the structure."""
    check_latex_structure(path.read_text(), path.name)
    if shutil.which("pdflatex"):
        compile_latex(path, workdir)


def local_links(page: Path) -> list[str]:
    """Every link and image target of a Markdown or HTML page that is not a web address."""
    text = page.read_text()
    found = re.findall(r"\]\(([^)\s]+)\)", text) if page.suffix == ".md" else re.findall(r'(?:href|src)="([^"]+)"', text)
    return [t for t in found if not re.match(r"^[a-z]+:", t)]


def broken_links(page: Path) -> list[str]:
    """Local link targets of a page that do not exist as files, or whose ``#cell-id=`` anchor the target lacks."""
    broken = []
    for target in local_links(page):
        file, _, anchor = target.partition("#")
        path = page.parent / file
        if not path.is_file() or (anchor.startswith("cell-id=") and f'id="{anchor}"' not in path.read_text()):
            broken.append(target)
    return broken
