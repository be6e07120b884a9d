"""What the smoke run writes for a reader: every table renders, every LaTeX table is sound, the report's links resolve."""
import re

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
        assert any(t.startswith("notebooks/") and "#cell-id=" in t for t in links)
        assert any(t.endswith(".py") and "chexreason_utils/" in t for t in links)   # functions linked by name
        assert not any(re.search(r"\.py(#L|:)\d", t) for t in links), "a source line number in a generated page"
        assert broken_links(page) == [], page.name
    assert "## Not generated in this run" not in paths.report.read_text()


def test_each_grpo_run_has_a_completions_page_whose_rewards_are_the_training_logs(smoke_run):
    """Every generation step of every seed, each group of num_generations completions once, with the policy's
    per-step component means, reward and the control's reward equal to log_history.csv and control/log.csv (up to
    float32 rounding: trl sums the components in float32)."""
    import re

    import pandas as pd

    from chexreason_utils.report import browser
    from chexreason_utils.train import grpo
    from chexreason_utils.config import load_profile
    from chexreason_utils.training_runs import grpo as grpo_runs

    paths, _, _ = smoke_run
    cfg = load_profile("smoke")
    report, notebook = paths.report.read_text(), (paths.notebooks_html / "03_grpo.html").read_text()
    for name in grpo_runs.grpo_plan(cfg):
        page = paths.completions_page(name)
        assert f"(completions/{name}.html)" in report and f'href="../completions/{name}.html"' in notebook, name
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.read_text()), "the page must work offline"
        shown = browser.page_groups(page)
        for seed in cfg.seeds:
            folder = paths.grpo_run(name, seed)
            log = pd.read_csv(folder / paths.LOG_HISTORY).dropna(subset=["reward"]).set_index("step")
            mine = shown.loc[(shown["seed"] == seed) & (shown["kind"] == "policy")]
            assert mine.groupby("group").size().eq(cfg.grpo.num_generations).all()
            assert mine.groupby("step")["group"].nunique().eq(cfg.grpo.prompts_per_step).all()
            means = mine.groupby("step").mean(numeric_only=True)
            assert means.index.tolist() == log.index.tolist()
            for component in browser.reward_names(log):
                pd.testing.assert_series_equal(means[component], log[f"rewards/{component}/mean"], check_names=False,
                                               rtol=1e-5)
            pd.testing.assert_series_equal(means["reward"], log["reward"], check_names=False, rtol=1e-5)
            control = grpo.control_log(folder).set_index("step")
            theirs = shown.loc[(shown["seed"] == seed) & (shown["kind"] == "control")].groupby("step")["reward"].mean()
            pd.testing.assert_series_equal(theirs, control["reward"], check_names=False, rtol=1e-5)


def test_a_logged_grpo_completion_rescored_term_by_term_equals_what_trl_logged(smoke_run):
    """The first, the last and the first valid completion of every GRPO run and seed (the last after the whole
    collapse window), rescored by the reward code: each component and the total as trl logged them."""
    import numpy as np

    from chexreason_utils.config import load_profile
    from chexreason_utils.training_runs import grpo as grpo_runs
    from chexreason_utils.steps import grpo as grpo_steps
    from chexreason_utils.train import grpo

    paths, _, _ = smoke_run
    cfg = load_profile("smoke")
    for name in grpo_runs.grpo_plan(cfg):
        for seed in cfg.seeds:
            n = len(grpo.completions_table(paths.grpo_run(name, seed)))
            for index in (0, n - 1, None):        # None: the first that keeps the output contract
                table, about = grpo_steps.scored_completion(cfg, paths, name, seed, index)
                assert len(table) == (3 if about["reward"] == "hard" else 6)
                assert np.allclose(table["recomputed"], table["logged"], atol=1e-6), (name, seed, index)
