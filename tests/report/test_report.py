"""The run report: claims first, figures with notebook and function links, tables, notebooks as HTML."""
import json
import re

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from table_checks import broken_links, check_markdown_file, local_links

from chexreason_utils.evaluation import reference
from chexreason_utils.report import figure_registry, plotting, page as report, reporting
from chexreason_utils.paths import REPO_ROOT, RunPaths
from conftest import write_notebook


def _fake_run(tmp_path, with_claims=False):
    paths = RunPaths.for_profile("smoke", tmp_path / "run", tmp_path / "fig")
    paths.executed_notebooks.mkdir(parents=True)
    write_notebook(paths.executed_notebooks / "04_evaluation.ipynb",
                   [("md", "# 04"), ("code", "1 + 1"), ("code", 'save_figure(fig, "headline", data, out)')])
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0.2, 0.3])
    plotting.save_figure(fig, "headline", pd.DataFrame({"x": [0, 1]}), paths.figures)
    run = reference.TABLE1.drop(columns="table").assign(micro_f1=0.25)
    table = reporting.beside(run, reference.TABLE1, "variant", "smoke", ["micro_f1", "macro_f1", "fail_rate"])
    plotting.save_table(table, "table1_prompts", paths.figures, caption="reproduced on profile smoke")
    paths.manifest.write_text(json.dumps({"git_commit": "abc", "stages": {"04_evaluation": {"status": "ran", "wall_s": 1.5}}}))
    if with_claims:
        (paths.figures / "claims.md").write_text("**Claims**\n\n| claim | verdict |\n|:---|:---|\n| RL helps CheXpert | supported |\n")
    return paths


def test_report_links_the_figure_to_its_notebook_and_function_and_every_link_resolves(tmp_path):
    paths = _fake_run(tmp_path)
    md, html = report.write_report(paths, "smoke")
    text = md.read_text()
    assert text.index("## Claims") < text.index("## Figures") < text.index("## Tables")
    assert "No claims table in this run" in text
    assert f"![{figure_registry.get('headline').title}](headline.png)" in text
    cell = report.making_cell(paths.executed_notebooks / "04_evaluation.ipynb", "headline")
    assert f"[`04_evaluation`](notebooks/04_evaluation.html#cell-id={cell})" in text
    assert f'id="cell-id={cell}"' in (paths.notebooks_html / "04_evaluation.html").read_text()
    made_by = figure_registry.get("headline").made_by[-1]                      # figures.headline, wherever it lives
    module_file = f"chexreason_utils/{made_by.rpartition('.')[0].replace('.', '/')}.py"
    assert f"[`{made_by}`](" in text and f"{module_file})" in text
    assert "reported (paper): Micro F1" in text and "`table2_sft_medical` (04_evaluation)" in text
    assert "1.5" not in text and "abc" not in text   # times and commit stay in manifest.json: identical runs, same page
    assert f"{reference.HEADLINE['chexpert']['sft']:.3f}" in text
    check_markdown_file(md)
    for page in (md, html):
        assert local_links(page) and broken_links(page) == [], page.name
    assert f"\ndef {made_by.rpartition('.')[2]}(" in (REPO_ROOT / module_file).read_text()


def test_a_generated_page_links_functions_by_name_never_by_line(tmp_path):
    paths = _fake_run(tmp_path)
    md, html = report.write_report(paths, "smoke")
    for page in (md, html):
        text = page.read_text()
        assert "made by" in text
        assert not re.search(r"#L\d+", text), page.name
        assert not re.search(r"\.py:\d+", text), page.name


def test_claims_come_first_when_the_run_wrote_them(tmp_path, monkeypatch):
    paths = _fake_run(tmp_path, with_claims=True)
    claims = figure_registry.Artifact("claims", "table", "04_evaluation", "new", "Claims", ("evaluation.claims.claims_table",))
    monkeypatch.setitem(figure_registry.BY_ID, "claims", claims)
    text = report.write_report(paths, "smoke")[0].read_text()
    assert "| RL helps CheXpert | supported |" in text and "No claims table" not in text
    assert text.index("RL helps CheXpert") < text.index("## Figures")


def test_the_family_view_and_the_gate_show_their_summary_caption(tmp_path):
    """The lead tables' captions carry the page's summary: the gate's verdict, the number of readouts ruled and the
    false verdicts chance alone would give (issue 37); a table without a caption shows none."""
    paths = _fake_run(tmp_path)
    body = "| readout | verdict |\n|:---|:---|\n| C1 | supported |\n"
    (paths.figures / "family_view.md").write_text(
        "**The family-wise view** — profile smoke: 12 readouts ruled; chance alone would give about 0.60 false "
        "'supported / contradicted' verdicts\n\n" + body)
    (paths.figures / "competence_gate.md").write_text(body)
    md = report.write_report(paths, "smoke")[0]
    text = md.read_text()
    family = text[text.index("## The family-wise view"):]
    assert "Profile smoke: 12 readouts ruled; chance alone would give about 0.60 false" in family
    assert family.index("12 readouts ruled") < family.index("| C1 | supported |")
    gate = text[text.index("## The competence gate"):text.index("## Claims")]
    assert "| C1 | supported |" in gate and "—" not in gate
    check_markdown_file(md)


def test_the_experiments_page_shows_the_family_summary(tmp_path):
    paths = _fake_run(tmp_path)
    art = figure_registry.get("family_view_experiments")
    for name in art.files():
        (paths.figures / name).write_text("readout,verdict\nE1,supported\n")
    (paths.figures / f"{art.id}.md").write_text("**Family** — profile smoke: 30 readouts ruled; chance alone would "
                                                 "give about 1.50 false verdicts\n\n| readout | verdict |\n|:---|:---|\n")
    text = report.write_experiments(paths, "smoke")[0].read_text()
    assert "Profile smoke: 30 readouts ruled; chance alone would give about 1.50 false verdicts" in text


def test_notebook_export_is_deterministic_and_skipped_when_up_to_date(tmp_path):
    paths = _fake_run(tmp_path)
    first = report.export_notebooks(paths.executed_notebooks, tmp_path / "a")["04_evaluation"].read_bytes()
    second = report.export_notebooks(paths.executed_notebooks, tmp_path / "b")["04_evaluation"].read_bytes()
    assert first == second and b"<main>" in first
    html = tmp_path / "a" / "04_evaluation.html"
    html.write_text("kept")
    report.export_notebooks(paths.executed_notebooks, tmp_path / "a")
    assert html.read_text() == "kept"


def test_every_artifact_names_the_functions_its_notebook_calls():
    for art in figure_registry.ARTIFACTS:
        assert art.made_by, f"name the functions that make {art.id} (figure_registry.ARTIFACTS, made_by)"
        cells = json.loads((REPO_ROOT / "notebooks" / f"{art.notebook}.ipynb").read_text())["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        for dotted in art.made_by:
            call = ".".join(dotted.split(".")[-2:])        # as the notebook calls it: module.function
            assert f"{call}(" in source, f"{art.notebook} does not call {dotted}"
            assert report.source_link(dotted, REPO_ROOT).startswith(f"[`{dotted}`](chexreason_utils/")


def test_report_command_writes_both_pages(tmp_path, capsys):
    from chexreason_utils.__main__ import main

    paths = _fake_run(tmp_path)
    assert main(["report", "--profile", "smoke", "--run-dir", str(paths.root), "--figure-dir", str(paths.figures)]) == 0
    assert capsys.readouterr().out.split() == [str(paths.report), str(paths.report.with_suffix(".html"))]


def test_a_made_by_entry_that_names_nothing_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="defines no top-level function nope"):
        report.source_link(figure_registry.get("headline").made_by[-1].rpartition(".")[0] + ".nope", tmp_path)
    with pytest.raises(ValueError, match="no module"):
        report.source_link("nomodule.f", tmp_path)
