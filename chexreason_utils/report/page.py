"""One page a reader opens per run: ``figures/<profile>/REPORT.md`` and ``REPORT.html``.

The competence gate, the claims table and the family-wise view of every verdict first (when this run wrote them), then every registered figure with its caption, the
notebook (as executed, exported to HTML beside the report, linked to the cell that saved it) and the package
function(s) that made it, linked to their source lines; then every table, reported beside reproduced. The page holds no number typed by hand:
numbers come from the run's files (tables, ``manifest.json``) and from ``reference``.

``chexreason report --profile tiny``; the runner writes it after the last stage.
"""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

from . import figure_registry
from .. import arithmetic
from ..evaluation import reference
from ..evaluation import registration
from ..paths import PACKAGE_DIR, REPO_ROOT, RunPaths

CLAIMS_ID = "claims"
BEYOND = "07_open_questions"   # its artifacts go under "Beyond the paper", each experiment with its registration
EXPERIMENTS = "08_experiments"  # run only with --experiments: its own page, EXPERIMENTS.md, never in REPORT.md
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }}
table {{ border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1rem; display: block; overflow-x: auto; }}
th, td {{ border: 1px solid #ccc; padding: 0.2rem 0.45rem; }}
th {{ background: #f4f4f4; }}
img {{ max-width: 100%; }}
code {{ background: #f4f4f4; padding: 0 0.2rem; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def display_path(path: Path) -> str:
    """A path as a page shows it: relative to the repository when inside it (so a page made in any clone is the
    same bytes), else absolute."""
    path = Path(path).resolve()
    return os.path.relpath(path, REPO_ROOT) if path.is_relative_to(REPO_ROOT.resolve()) else str(path)


WIDGET = "application/vnd.jupyter.widget-view+json"


def _stable(notebook):
    """What makes two exports of the same run differ, taken out: papermill's random id for its parameters cell,
    and progress-bar widgets (random model ids, speeds), which a static page cannot show anyway."""
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET not in o.get("data", {})]
    return notebook


def export_notebooks(executed: Path, out_dir: Path, run_root: Path | None = None) -> dict[str, Path]:
    """Every executed notebook as ``<stage>.html`` (nbconvert's lab template, images inline, no network).

    A notebook is exported again only when the executed copy is newer than its HTML; the export of the
    same notebook is byte-identical (no timestamps; ``_stable``), and the run directory (``run_root``) and the repository
    appear as ``display_path`` shows them, so a clone elsewhere exports the same bytes.
    """
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", embed_images=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for nb in sorted(Path(executed).glob("[0-9][0-9]_*.ipynb")):
        html = out_dir / f"{nb.stem}.html"
        if not html.exists() or html.stat().st_mtime_ns < nb.stat().st_mtime_ns:
            body, _ = exporter.from_notebook_node(_stable(nbformat.read(str(nb), as_version=4)))
            if run_root is not None:
                body = body.replace(str(Path(run_root).resolve()), display_path(run_root))
            body = body.replace(str(REPO_ROOT.resolve()) + "/", "")
            html.write_text(body, encoding="utf-8")
        written[nb.stem] = html
    return written


def making_cell(executed_notebook: Path, artifact_id: str) -> str | None:
    """The id of the executed notebook's code cell that names the artifact (``"<id>"``), if any."""
    if not executed_notebook.exists():
        return None
    cells = json.loads(executed_notebook.read_text())["cells"]
    return next((c.get("id") for c in cells if c["cell_type"] == "code" and f'"{artifact_id}"' in "".join(c["source"])),
                None)


def source_link(dotted: str, page_dir: Path) -> str:
    """``[`module.function`](relative/path.py)`` for a top-level function of this package: linked by module and
    named by function, never by line (a line number goes stale with any edit above the function).

    The function is looked up in the source with ``ast`` when the page is written (nothing is imported: some
    modules pull in torch and trl), so a renamed or moved function fails here, not as a dead link.
    """
    module, name = dotted.rsplit(".", 1)
    path = PACKAGE_DIR.joinpath(*module.split(".")).with_suffix(".py")
    if not path.exists():
        raise ValueError(f"{dotted!r}: no module {path} in {__package__} (figure_registry.ARTIFACTS' made_by)")
    tree = ast.parse(path.read_text(), filename=str(path))
    if not any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name for node in tree.body):
        raise ValueError(f"{dotted!r}: {path.name} defines no top-level function {name} (figure_registry.ARTIFACTS' made_by)")
    return f"[`{dotted}`]({_relative(path, page_dir)})"


def _relative(path: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(path, page_dir)).as_posix()


def _table(md_file: Path, caption: bool) -> list[str]:
    """A generated table's Markdown (``plotting.save_table``: ``**title** — caption``, a blank line, the table)
    without its bold title line (the page gives the heading). With ``caption``, the caption comes first as a
    paragraph where the table has one: the lead tables and ``CAPTIONED`` show it, because their captions carry a
    page's summary (the gate's verdict, the claims' intervals, the family's count of readouts and of false verdicts
    chance alone would give)."""
    lines = md_file.read_text().splitlines()
    if not (lines and lines[0].startswith("**")):
        return ["\n".join(lines)]
    _, sep, text = lines[0].partition("** — ")
    return [*([text[:1].upper() + text[1:], ""] if caption and sep and text else []), "\n".join(lines[2:])]


CAPTIONED = ("family_view_experiments",)   # the experiments page's family-wise view


def _provenance(art: figure_registry.Artifact, paths: RunPaths, notebooks: dict[str, Path]) -> str:
    page_dir = paths.figures
    made_by = ", ".join(source_link(d, page_dir) for d in art.made_by)
    if art.notebook in notebooks:
        cell = making_cell(paths.executed_notebooks / f"{art.notebook}.ipynb", art.id)
        where = f"[`{art.notebook}`]({_relative(notebooks[art.notebook], page_dir)}{f'#cell-id={cell}' if cell else ''})"
    else:
        where = f"`{art.notebook}` (no executed copy in this run)"
    paper = "new (not in the paper)" if art.paper_ref == "new" else f"paper: {art.paper_ref}"
    return f"*{paper}* · notebook {where} · made by {made_by or 'an unregistered function'}"


def _files(art: figure_registry.Artifact, page_dir: Path, skip: str) -> str:
    return " · ".join(f"[{name.rsplit('.', 1)[1]}]({name})" for name in art.files()
                      if (page_dir / name).exists() and not name.endswith(skip))


def _artifact(art: figure_registry.Artifact, paths: RunPaths, notebooks: dict[str, Path]) -> list[str]:
    """A figure (image, provenance, other files) or a table (provenance, the table, its files)."""
    page_dir = paths.figures
    if art.kind == "figure":
        png = art.files()[0]
        return [f"![{art.title}]({png})", "", _provenance(art, paths, notebooks) + " · " + _files(art, page_dir, ".png")]
    md = page_dir / f"{art.id}.md"
    return [_provenance(art, paths, notebooks), "", *_table(md, caption=art.id in CAPTIONED), "",
            _files(art, page_dir, ".md")]


LEAD_TABLES = {   # shown around the claims, in this order, when the run wrote them: id -> (heading, what it is)
    "competence_gate": ("The competence gate", "Registered before the run (`chexreason_utils/gates/competence_gate.yaml`): "
                        "are the models, on validation only, good enough for the claims below to be about RL rather "
                        "than about weak models?"),
    "family_view": ("The family-wise view", "Every verdict of this report (the claims, E0, E4) beside its Holm-adjusted "
                    "verdict, by the rule registered before the run (docs/statistics.md)."),
}


def _lead_table(page_dir: Path, art_id: str) -> list[str]:
    """A table the report shows beside the claims (``LEAD_TABLES``), when this run wrote it."""
    art = figure_registry.BY_ID.get(art_id)
    md = page_dir / f"{art_id}.md"
    if art is None or not md.exists():
        return []
    heading, intro = LEAD_TABLES[art_id]
    return [f"## {heading}", "", intro, "", *_table(md, caption=True), "", _files(art, page_dir, ".md"), ""]


def _claims(page_dir: Path) -> list[str]:
    art = figure_registry.BY_ID.get(CLAIMS_ID)
    md = page_dir / f"{CLAIMS_ID}.md"
    if art is None or not md.exists():
        return ["## Claims", "",
                f"**No claims table in this run.** The report looks for `{CLAIMS_ID}.md` (registered artifact "
                f"`{CLAIMS_ID}`) in this folder; {'it is not registered yet' if art is None else 'this run did not write it'}.",
                ""]
    return ["## Claims", "", *_table(md, caption=True), "", _files(art, page_dir, ".md"), ""]


def experiment_of(art: figure_registry.Artifact) -> str:
    """The registration id of a "Beyond the paper" artifact: its id's prefix (``e0_...`` -> E0)."""
    return art.id.split("_", 1)[0].upper()


def _beyond(paths: RunPaths, notebooks: dict[str, Path], missing: list) -> list[str]:
    """Every registered experiment: its registration, then its artifacts of this run (or that it has none yet)."""
    lines = ["## Beyond the paper", "",
             "Experiments the paper does not run, each registered in a committed file before its first run "
             "(`chexreason_utils/registrations/`); verdicts follow the claims table's rule.", ""]
    arts = [a for a in figure_registry.ARTIFACTS if a.notebook == BEYOND]
    in_08 = {experiment_of(a) for a in figure_registry.ARTIFACTS if a.notebook == EXPERIMENTS}
    for reg_id, reg in registration.load_all().items():
        lines += [f"### {reg_id} · {reg.title}", "", registration.markdown(reg)]
        mine = [a for a in arts if experiment_of(a) == reg_id]
        if not mine and reg_id in in_08:
            lines += [f"*Built in stage {EXPERIMENTS} (run only with `make experiments`): its result and verdicts are "
                      f"on the EXPERIMENTS page, not in this report.*", ""]
        elif not mine:
            lines += ["*Registered, not built in this version: no result yet.*", ""]
        for art in mine:
            if not all((paths.figures / name).exists() for name in art.files()):
                missing.append(art)
            else:
                lines += [f"#### {art.title}", "", *_artifact(art, paths, notebooks), ""]
    return lines


def _run_record(manifest: Path) -> list[str]:
    """The run's float path, and where its times, versions and commit are: kept out of the page, so identical runs
    give the same page (a portable run's page names no CPU: every x86-64 CPU with AVX2 writes the same one)."""
    record = json.loads(manifest.read_text()).get("arithmetic", {}) if manifest.exists() else {}
    mode = record.get("mode", "native")
    if arithmetic.differs_from_committed(mode):
        made = (f"Made with **{arithmetic.describe(record)}**: another CPU computes other bytes, so its numbers may "
                "differ from this page's (`-p arithmetic=portable` gives the same bytes on any x86-64 CPU with AVX2).")
    else:
        made = ("Made with **portable arithmetic** (`arithmetic.py`): any x86-64 CPU with AVX2, Intel or AMD, at the "
                "locked package versions, writes this page and its files byte for byte.")
    return [made, "", f"Wall times, package versions, seeds, the CPU and the git commit of this run are in its "
            f"`{manifest.name}` (`{display_path(manifest)}`), not on this page, so the page is byte-identical for "
            "identical runs.", ""]


def report_markdown(paths: RunPaths, profile: str, notebooks: dict[str, Path]) -> str:
    page_dir = paths.figures
    notebooks = {stage: html for stage, html in notebooks.items() if stage != EXPERIMENTS}
    head = reference.HEADLINE
    lines = [f"# chexreason report: profile `{profile}`", "",
             f"Reported numbers are the paper's (arXiv 2512.23090; e.g. its headline, macro-F1 SFT → GRPO "
             f"{head['chexpert']['sft']:.3f} → {head['chexpert']['grpo']:.3f} on CheXpert and "
             f"{head['nih']['sft']:.3f} → {head['nih']['grpo']:.3f} on NIH). Reproduced numbers come from this "
             f"run's files under profile `{profile}`"
             + (" — a phantom world with tiny models, never a reproduction of the paper's numbers." if profile != "paper" else "."),
             "", *_run_record(paths.manifest), *_lead_table(page_dir, "competence_gate"), *_claims(page_dir),
             *_lead_table(page_dir, "family_view")]
    missing = []
    for kind, heading in (("figure", "## Figures"), ("table", "## Tables")):
        lines += [heading, ""]
        for art in figure_registry.ARTIFACTS:
            if art.kind != kind or art.id in (CLAIMS_ID, *LEAD_TABLES) or art.notebook in (BEYOND, EXPERIMENTS):
                continue
            if not all((page_dir / name).exists() for name in art.files()):
                missing.append(art)
            else:
                lines += [f"### {art.title}", "", *_artifact(art, paths, notebooks), ""]
    lines += _beyond(paths, notebooks, missing)
    if missing:
        lines += ["## Not generated in this run", "", *[f"- `{a.id}` ({a.notebook})" for a in missing], ""]
    pages = sorted(paths.completions_pages.glob("*.html"))
    if pages:
        lines += ["## GRPO completions", "", "One page per GRPO run (every seed; filter by seed and step): each prompt's "
                  "image, its group of completions with every reward component and advantage, and the frozen SFT "
                  "policy's group for the same batch.", "",
                  *[f"- [`{p.stem}`]({_relative(p, page_dir)})" for p in pages], ""]
    lines += ["## Executed notebooks", "",
              *[f"- [`{stage}`]({_relative(html, page_dir)})" for stage, html in sorted(notebooks.items())], ""]
    return "\n".join(lines)


def to_html(markdown_text: str, title: str) -> str:
    import mistune

    render = mistune.create_markdown(plugins=["table"])
    return _PAGE.format(title=title, body=render(markdown_text))


def write_report(paths: RunPaths, profile: str) -> list[Path]:
    """Export the executed notebooks and write ``REPORT.md`` and ``REPORT.html``; returns both paths."""
    paths.figures.mkdir(parents=True, exist_ok=True)
    notebooks = export_notebooks(paths.executed_notebooks, paths.notebooks_html, paths.root)
    text = report_markdown(paths, profile, notebooks)
    paths.report.write_text(text, encoding="utf-8")
    html = paths.report.with_suffix(".html")
    html.write_text(to_html(text, f"chexreason report: {profile}"), encoding="utf-8")
    return [paths.report, html]


NOT_COMPUTED = {"E1": "The registered readout 'paired reward gain over the frozen-policy control at each step count' "
                      "is not computed in this version: it needs each run's frozen-policy control (grpo.frozen_control), "
                      "a second generation pass over every batch (generation is most of a GRPO step's time), which E1's "
                      "runs are made without."}   # a registered readout left out, said on the page


def experiments_markdown(paths: RunPaths, profile: str, notebooks: dict[str, Path]) -> str:
    """The page of stage 08: every registration with no result in REPORT.md, printed beside this run's result
    and verdicts (or that it has none)."""
    lines = [f"# chexreason experiments: profile `{profile}`", "",
             "The pre-registered training grids (`make experiments`, stage `08_experiments`), each registration as "
             "committed before its first run (`chexreason_utils/registrations/`) beside this run's result; "
             "verdicts follow the claims table's rule. Step counts are the tiny profile's, scaled by this profile's "
             "`experiments.steps_scale`.", "", *_run_record(paths.manifest)]
    arts = [a for a in figure_registry.ARTIFACTS if a.notebook == EXPERIMENTS]
    in_report = {experiment_of(a) for a in figure_registry.ARTIFACTS if a.notebook == BEYOND}
    for reg_id, reg in registration.load_all().items():
        if reg_id in in_report:
            continue
        lines += [f"## {reg_id} · {reg.title}", "", registration.markdown(reg)]
        if reg_id in NOT_COMPUTED:
            lines += [f"*Not computed: {NOT_COMPUTED[reg_id]}*", ""]
        mine = [a for a in arts if experiment_of(a) == reg_id]
        done = [a for a in mine if all((paths.figures / name).exists() for name in a.files())]
        if not mine:
            lines += ["*Registered, not built in this version: no result yet.*", ""]
        elif not done:
            lines += ["*Built, not run into this figure folder yet (`make experiments`).*", ""]
        for art in done:
            lines += [f"### {art.title}", "", *_artifact(art, paths, notebooks), ""]
    shared = [a for a in arts if experiment_of(a) not in registration.load_all()   # e.g. the family-wise view
              and all((paths.figures / name).exists() for name in a.files())]
    if shared:
        lines += ["## Across the experiments", ""]
        for art in shared:
            lines += [f"### {art.title}", "", *_artifact(art, paths, notebooks), ""]
    if EXPERIMENTS in notebooks:
        lines += ["## Executed notebook", "", f"- [`{EXPERIMENTS}`]({_relative(notebooks[EXPERIMENTS], paths.figures)})", ""]
    return "\n".join(lines)


def write_experiments(paths: RunPaths, profile: str) -> list[Path]:
    """Write ``EXPERIMENTS.md`` and ``EXPERIMENTS.html`` beside the report; returns both paths."""
    notebooks = export_notebooks(paths.executed_notebooks, paths.notebooks_html, paths.root)
    md = paths.figures / "EXPERIMENTS.md"
    text = experiments_markdown(paths, profile, notebooks)
    md.write_text(text, encoding="utf-8")
    html = md.with_suffix(".html")
    html.write_text(to_html(text, f"chexreason experiments: {profile}"), encoding="utf-8")
    return [md, html]
