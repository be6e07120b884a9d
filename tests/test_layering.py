"""The package's layers, read from the source with ``ast``: foundations (top-level modules any layer may use) ->
data -> train -> evaluation -> report -> queries (what several stages read of earlier stages' outputs) ->
training_runs (the training runs several stages launch) -> steps -> orchestration; no import points back up, and no
``steps`` module imports another (what several stages share lives in a layer below)."""
import ast

from chexreason_utils.paths import PACKAGE_DIR

ORCHESTRATION = {"stage", "runner", "launch", "execution", "plan", "rehearsal", "gpu_check", "portable_digest", "verify",
                 "__main__"}
LAYERS = ("foundations", "data", "train", "evaluation", "report", "queries", "training_runs", "steps",
          "orchestration")


def layer_of(module: str) -> str:
    """``data.nih`` -> data; ``config`` -> foundations; ``runner`` -> orchestration (and the package's own
    ``__init__``, which hands out ``stage.Stage`` lazily)."""
    if module == "__init__":
        return "orchestration"
    head = module.split(".")[0]
    if head in LAYERS[1:-1]:
        return head
    return "orchestration" if head in ORCHESTRATION else "foundations"


def package_imports(path, root=PACKAGE_DIR):
    """(``path``'s module, the package modules it imports, dotted relative to the package, anywhere in the file)."""
    module = path.relative_to(root).with_suffix("").as_posix().replace("/", ".")
    package = module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("chexreason_utils"):
                target = node.module.partition(".")[2]
            else:
                continue
            names = [a.name for a in node.names]
            for name in names:   # ``from . import grpo`` names a module
                dotted = f"{target}.{name}" if target else name
                found.add(dotted if root.joinpath(*dotted.split(".")).with_suffix(".py").exists()
                          or root.joinpath(*dotted.split(".")).is_dir() else target)
        elif isinstance(node, ast.Import):
            found |= {a.name.partition(".")[2] for a in node.names if a.name.startswith("chexreason_utils.")}
    return module, {f for f in found if f}


def imports_under(root):
    """Every (module, imported package module) pair of the package at ``root``."""
    for path in sorted(root.rglob("*.py")):
        module, imported = package_imports(path, root)
        yield from ((module, other) for other in sorted(imported))


def imports():
    return imports_under(PACKAGE_DIR)


def upward_imports(pairs) -> list:
    """The pairs whose import points up the layers."""
    return [(m, o) for m, o in pairs if LAYERS.index(layer_of(o)) > LAYERS.index(layer_of(m))]


def cross_step_imports(pairs) -> list:
    """The pairs where one ``steps`` module imports another (``steps/__init__`` gathering them is fine)."""
    return [(m, o) for m, o in pairs if m.startswith("steps.") and not m.endswith("__init__")
            and o.startswith("steps.")]


def test_no_import_points_back_up_the_layers():
    assert upward_imports(imports()) == []


def test_no_step_imports_another():
    assert cross_step_imports(imports()) == []


def test_an_upward_import_is_caught(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "grpo.py").write_text("")
    (tmp_path / "steps" / "sft.py").write_text("from .grpo import run_grpo\n")
    (tmp_path / "data" / "nih.py").write_text("from ..steps import grpo\nfrom chexreason_utils.report import page\n")
    pairs = list(imports_under(tmp_path))
    assert upward_imports(pairs) == [("data.nih", "report"), ("data.nih", "steps.grpo")]
    assert cross_step_imports(pairs) == [("steps.sft", "steps.grpo")]


def test_the_layer_names_follow_the_folders():
    assert [layer_of(m) for m in ("config", "data.nih", "train.grpo", "evaluation.claims", "report.page",
                                  "queries.stage_outputs", "training_runs.grpo", "steps.grpo", "runner")] == list(LAYERS)
