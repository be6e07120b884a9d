"""What the smoke run writes for a reader: every table renders, every LaTeX table is sound, the report's links resolve."""
import pytest
from table_checks import broken_links, check_latex_file, check_markdown_file, local_links

pytestmark = pytest.mark.pipeline


def test_every_generated_markdown_table_renders(smoke_run):
    paths, _, _ = smoke_run
    pages = sorted(paths.figures.glob("*.md"))
    assert paths.report in pages and len(pages) > 1
    assert sum(check_markdown_file(md) for md in pages) >= len(pages)


def test_every_generated_latex_table_compiles_or_is_balanced(smoke_run, tmp_path):
    paths, _, _ = smoke_run
    texs = sorted(paths.figures.glob("*.tex"))
    assert texs
    for tex in texs:
        check_latex_file(tex, tmp_path)


def test_the_report_and_its_notebooks_link_to_files_that_exist(smoke_run):
    paths, _, _ = smoke_run
    assert sorted(p.stem for p in paths.notebooks_html.glob("*.html")) == \
        sorted(p.stem for p in paths.executed_notebooks.glob("*.ipynb"))
    for page in (paths.report, paths.report.with_suffix(".html")):
        links = local_links(page)
        assert any(t.startswith("notebooks/") and "#cell-id=" in t for t in links) and any(".py#L" in t for t in links)
        assert broken_links(page) == [], page.name
    assert "## Not generated in this run" not in paths.report.read_text()
