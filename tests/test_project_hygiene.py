"""Notebook hygiene, the package's import layering, environment drift, figure determinism, the figure table of
docs/figures.md and the layout of docs/layout.md."""
import ast
import hashlib
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from chexreason_utils.report import figure_registry, plotting
from chexreason_utils.paths import NOTEBOOK_DIR, REPO_ROOT

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
PACKAGE = REPO_ROOT / "chexreason_utils"
# commands that run stage steps (``__main__`` reaches them via launch and verify)
ENTRY_POINTS = {"chexreason_utils.launch", "chexreason_utils.verify"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(package modules imported at module level, package modules imported anywhere, function bodies included)."""
    path = MODULES[name]
    base = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            parent = base.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (parent, node.module or "") if p)
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        for target in targets:
            if target in MODULES:
                found[target] = found.get(target, False) or id(node) in top_level
    return {m for m, top in found.items() if top}, set(found)


def test_only_entry_points_import_the_stage_steps():
    for name in MODULES:
        if name.startswith("chexreason_utils.steps") or name in ENTRY_POINTS:
            continue
        upward = {m for m in _imports(name)[1] if m.startswith("chexreason_utils.steps")}
        assert not upward, f"{name} imports {sorted(upward)}: modules below the stage steps never import them"


def test_package_modules_import_each_other_without_cycles():
    graph = {name: _imports(name)[1] - {name} for name in MODULES}   # imports inside functions count too
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            assert state.get(dep) != "open", "import cycle: " + " -> ".join(trail[trail.index(dep):] + [dep])
            if dep not in state:
                visit(dep, trail + [dep])
        state[name] = "done"

    for name in MODULES:
        if name not in state:
            visit(name, [name])


def test_the_nine_numbered_notebooks_exist():
    assert [nb.stem[:2] for nb in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06", "07", "08"]


def test_notebooks_are_stripped_parameterised_and_thin():
    for nb in NOTEBOOKS:
        book = json.loads(nb.read_text())
        code = [c for c in book["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{nb.name} has outputs"
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb.name}: exactly one cell tagged parameters"
        assert book["metadata"]["kernelspec"]["name"] == "python3"
        assert book["cells"][0]["cell_type"] == "markdown" and "Reproduces" in "".join(book["cells"][0]["source"])
        assert "Time:" in "".join(book["cells"][0]["source"])
        source = "\n".join("".join(c["source"]) for c in code)
        assert "chexreason_utils" in source
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 4, f"{nb.name}: {node.name} is {length} lines; move logic into chexreason_utils"


def _figure():
    plotting.set_style()
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [0.2, 0.5, 0.4], label="macro-F1")
    ax.legend()
    return fig


def test_saving_the_same_figure_twice_gives_identical_bytes(tmp_path):
    data = pd.DataFrame({"x": [0, 1, 2], "y": [0.2, 0.5, 0.4]})
    digests = []
    for out in (tmp_path / "a", tmp_path / "b"):
        files = plotting.save_figure(_figure(), "headline", data, out)
        digests.append([hashlib.sha256(f.read_bytes()).hexdigest() for f in files])
    assert digests[0] == digests[1]
    assert [f.name for f in files] == ["headline.png", "headline.pdf", "headline.csv"]


def test_saving_the_same_figure_or_table_again_leaves_the_files_untouched(tmp_path):
    data = pd.DataFrame({"x": [0, 1, 2], "y": [0.2, 0.5, 0.4]})
    table = pd.DataFrame({"label": ["Edema"], "f1": [0.5]})
    files = plotting.save_figure(_figure(), "headline", data, tmp_path) + plotting.save_table(table, "sft_final_values", tmp_path)
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = plotting.save_figure(_figure(), "headline", data, tmp_path) + plotting.save_table(table, "sft_final_values", tmp_path)
    assert again == files and [f.stat().st_mtime_ns for f in files] == mtimes     # a rerun of 00 cascades nowhere
    plotting.save_figure(_figure(), "headline", data.assign(y=[0.3, 0.5, 0.4]), tmp_path)
    assert files[2].stat().st_mtime_ns != mtimes[2]                               # changed bytes are written


def test_show_figure_saves_the_figure_then_displays_it(tmp_path, monkeypatch):
    import IPython.display

    shown = []
    folder = tmp_path / "shown"
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append((obj, sorted(p.name for p in folder.iterdir()))))
    data = pd.DataFrame({"x": [0, 1, 2], "y": [0.2, 0.5, 0.4]})
    fig = _figure()
    assert plotting.show_figure(fig, "headline", data, folder) is None
    saved = plotting.save_figure(_figure(), "headline", data, tmp_path / "saved")
    assert shown == [(fig, ["headline.csv", "headline.pdf", "headline.png"])]     # displayed once, after it was saved
    assert [f.read_bytes() for f in saved] == [(folder / f.name).read_bytes() for f in saved]   # as save_figure writes
    with pytest.raises(ValueError, match="registered as a table"):
        plotting.show_figure(_figure(), "sft_final_values", data, tmp_path)
    assert len(shown) == 1


def test_docs_figure_table_matches_the_registry():
    page = (REPO_ROOT / "docs" / "figures.md").read_text()
    assert figure_registry.markdown_table() in page
    notebooks = {nb.stem for nb in NOTEBOOKS}
    for art in figure_registry.ARTIFACTS:
        assert art.notebook in notebooks
        cells = json.loads((NOTEBOOK_DIR / f"{art.notebook}.ipynb").read_text())["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert f'"{art.id}"' in source, f"{art.id} not made by {art.notebook}"


def _docs_layout_modules() -> set[str]:
    """The modules docs/layout.md's Layout block names (``train/sft``), read from the package lines of the block."""
    block = (REPO_ROOT / "docs" / "layout.md").read_text().split("## Layout", 1)[1].split("```")[1]
    named, package = set(), None
    for line in block.splitlines():
        head, rest = line[:20].strip(), line[20:]
        if head.startswith("chexreason_utils/"):
            package = ""
        elif head.endswith("/") and package is not None and line.startswith("  "):
            package = head
        elif head:
            break                                  # the first folder outside the package ends its part
        names = rest.rsplit(":", 1)[-1] if ":" in rest else rest
        named |= {package + n.strip() for n in names.split(",") if n.strip()}
    return named


def test_docs_layout_names_every_module_and_only_modules_that_exist():
    tree = {p.relative_to(PACKAGE).with_suffix("").as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    named = _docs_layout_modules()
    assert not tree - named, f"modules docs/layout.md does not name: {sorted(tree - named)}"
    assert not named - tree, f"docs/layout.md names modules that do not exist: {sorted(named - tree)}"


def test_readme_opens_with_the_two_commands():
    head = (REPO_ROOT / "README.md").read_text()[:1500]
    assert "make figures" in head and "make test" in head
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)


@pytest.mark.parametrize("user_id, allow_root", [("0", True), ("1000", False)])
def test_make_lab_allows_root_only_for_root_and_keeps_loopback_and_token(user_id, allow_root):
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "-o", ".venv/.install-stamp", "lab", f"USER_ID={user_id}"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60).stdout
    command = next(line for line in out.splitlines() if "jupyter lab" in line)
    assert "--ip 127.0.0.1" in command and "token" not in command.lower()
    assert ("--allow-root" in command) == allow_root


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_cell_ids_are_unique(nb):
    """nbformat replaces a repeated cell id by a random one at every execution: the executed HTML would differ."""
    ids = [cell["id"] for cell in json.loads(nb.read_text())["cells"]]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
