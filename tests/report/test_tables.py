"""Tables in the paper's layouts: Markdown that renders, LaTeX ready to \\input, tidy CSV."""
import numpy as np
import pandas as pd
import pytest
from table_checks import check_latex_file, check_latex_structure, check_markdown_file, markdown_cells

from chexreason_utils.evaluation import reference
from chexreason_utils.report import plotting, reporting, tables


def _table2(profile="tiny"):
    run = reference.TABLE2.drop(columns="table").iloc[[1, 0, 3]].copy()   # one format missing, another order
    run["micro_p"] = [0.5, 0.25, 0.125]
    return reporting.beside(run, reference.TABLE2, "format", profile, reporting.SUMMARY_COLUMNS)


def _table6():
    labels = reference.per_label_table(6).index
    run = pd.DataFrame({"MedGemma SFT": 0.5, "ChexReason": 0.25}, index=labels)
    run.loc["Edema", "ChexReason"] = 0.0
    return reporting.test_table({0: run}, 6, "smoke")


def test_beside_keeps_the_papers_rows_in_order_as_two_column_blocks():
    table = _table2()
    assert list(table.index) == ["only_label", "free_reasoning", "reasoning_narrative", "reasoning_a"]
    assert list(table.columns.get_level_values(0).unique()) == ["reported (paper)", "reproduced (tiny)"]
    assert table.loc["free_reasoning", ("reproduced (tiny)", "micro_p")] == 0.5
    assert table.loc["free_reasoning", ("reported (paper)", "micro_p")] == 0.480
    assert pd.isna(table.loc["reasoning_narrative", ("reproduced (tiny)", "micro_p")])


def test_beside_names_a_missing_column_and_a_repeated_key():
    run = reference.TABLE2.drop(columns="micro_r")
    with pytest.raises(KeyError, match="reproduced table has no column.*micro_r"):
        reporting.beside(run, reference.TABLE2, "format", "tiny", reporting.SUMMARY_COLUMNS)
    with pytest.raises(ValueError, match="repeats format"):
        reporting.beside(pd.concat([reference.TABLE2] * 2), reference.TABLE2, "format", "tiny", ["micro_p"])


def test_test_table_has_label_rows_a_macro_row_and_model_blocks():
    table = _table6()
    assert list(table.index) == [*reference.per_label_table(6).index, "Macro"]
    assert table.loc["Macro", ("reported (paper)", "ChexReason")] == reference.TABLE6_MACRO["ChexReason"]
    assert table.loc["Macro", ("reproduced (smoke)", "ChexReason")] == pytest.approx(0.25 * 8 / 9)
    assert table.columns.names == ["source", "model"]


def test_seed_blocks_sit_beside_as_more_sources():
    table = _table2()
    seeds = table["reproduced (tiny)"] * 2
    wide = pd.concat([table, pd.concat({"reproduced (tiny, seed 1)": seeds}, axis=1)], axis=1)
    tex = tables.latex(wide, "with seeds", "tab:x", reporting.PAPER_HEADINGS)
    assert tex.count(r"\multicolumn{7}{c}") == 3
    check_latex_structure(tex, "seeds")
    assert set(tables.tidy(wide)["source"]) == {"reported (paper)", "reproduced (tiny)", "reproduced (tiny, seed 1)"}


@pytest.mark.parametrize("artifact,make", [("table2_sft_medical", _table2), ("table6_nih", _table6)])
def test_saved_comparison_tables_render_and_compile(tmp_path, artifact, make):
    table = make()
    csv, md, tex = plotting.save_table(table, artifact, tmp_path, caption="reproduced on profile tiny")
    text = md.read_text()
    assert check_markdown_file(md) == 1
    header = markdown_cells(next(line for line in text.splitlines() if line.startswith("| ")))
    assert header[0] in ("format", "label") and not any(" | " in h for h in header)
    assert len(header) <= tables.MAX_MD_COLUMNS                              # fits a page
    assert "reported (paper): ChexReason" in header or "0.500 · paper 0.480" in text   # the paper's value beside ours
    check_latex_file(tex, tmp_path)
    assert r"\multicolumn" in tex.read_text() and r"\cmidrule(lr)" in tex.read_text()
    frame = pd.read_csv(csv)
    assert frame.columns[1] == "source" and len(frame) == 2 * len(table)
    assert list(frame["source"].unique()) == list(table.columns.get_level_values(0).unique())


def test_a_wide_table_fits_a_page_with_the_papers_value_in_each_cell_and_every_seed_below(tmp_path):
    table = _table2()
    ours = table["reproduced (tiny)"]
    wide = pd.concat([table, *(pd.concat({f"seed {s}": ours + s / 100}, axis=1) for s in (0, 1, 2))], axis=1)
    assert wide.shape[1] + 1 > tables.MAX_MD_COLUMNS
    csv, md, _ = plotting.save_table(wide, "table2_sft_medical", tmp_path)
    assert check_markdown_file(md) == 2                                    # this run beside the paper; per seed
    main, per_seed = (t for t in md.read_text().split("\n\n") if t.startswith("| "))
    assert all(len(markdown_cells(line)) <= tables.MAX_MD_COLUMNS for line in md.read_text().splitlines()
               if line.startswith("| "))
    assert "| free_reasoning | 0.500 · paper 0.480 |" in main and "| reasoning_narrative | – · paper 0.565 |" in main
    assert "| free_reasoning | seed 2 | 0.520 |" in per_seed and per_seed.count("| only_label |") == 3
    assert set(pd.read_csv(csv)["source"]) >= {"seed 0", "seed 1", "seed 2"}   # the CSV keeps every block


def test_a_wide_flat_table_lists_its_last_columns_below_each_row():
    table = pd.DataFrame({**{f"c{i}": [i, i + 1] for i in range(12)}, "statement": ["first claim", "second"]},
                         index=pd.Index(["C1", "C2"], name="claim"))
    text = tables.markdown(table)
    assert markdown_cells(text.splitlines()[0])[-1] == "c10"                # the first 12 columns in the table
    assert "- **C1** — c11: 11; statement: first claim" in text and "- **C2** — c11: 12; statement: second" in text


def test_the_lines_below_a_wide_table_name_each_row_and_leave_blank_cells_out():
    table = pd.DataFrame({"rho": [0.0, 0.0, 0.5], "model": ["SFT", "GRPO", "SFT"],
                          **{f"c{i}": [1, 2, 3] for i in range(10)},
                          "note": ["", "the run's final checkpoint", " "], "extra": [float("nan"), 4.0, float("nan")]})
    below = [line for line in tables.markdown(table).splitlines() if line.startswith("- ")]
    assert below == ["- **0.000 · GRPO** — note: the run's final checkpoint; extra: 4.000"]   # rows 1 and 3 say nothing


def test_a_flat_table_with_pipes_and_gaps_still_renders(tmp_path):
    table = pd.DataFrame({"comparison": ["a | b", "c"], "delta": [0.1234, float("nan")], "n": [3, 4]})
    csv, md, tex = plotting.save_table(table, "paired_differences", tmp_path)
    check_markdown_file(md)
    assert r"a \| b" in md.read_text() and "| – |" in md.read_text()
    check_latex_file(tex, tmp_path)
    assert r"0.123 & 3 \\" in tex.read_text() and r"a \textbar{} b" in tex.read_text()
    pd.testing.assert_frame_equal(pd.read_csv(csv), table, check_exact=False, atol=1e-6)
    assert "n" in tex.read_text() and r"\multicolumn" not in tex.read_text()


def test_the_structure_check_catches_a_short_row():
    bad = "\\begin{tabular}{lr}\n\\toprule\na & b \\\\\n\\midrule\nx \\\\\n\\bottomrule\n\\end{tabular}\n"
    with pytest.raises(AssertionError, match="spans 1 of 2"):
        check_latex_structure(bad, "bad")


def test_tables_carry_the_trivial_baselines_as_reference_rows():
    import numpy as np
    from chexreason_utils.evaluation import scores
    from chexreason_utils.labels import CHEXPERT_LABELS, NIH_EVAL_LABELS_PAPER
    rng = np.random.default_rng(0)
    frame = pd.concat([scores.baseline_scores(ds, (rng.random((50, len(labels))) < 0.2).astype(int), labels,
                                              [["Edema"]], 50, 0)
                       for ds, labels in (("validation", CHEXPERT_LABELS), ("NIH", NIH_EVAL_LABELS_PAPER))])
    table = reporting.with_baselines(_table2(), frame, "validation", reporting.SUMMARY_COLUMNS)
    row = table.loc["baseline: always No Finding"]
    assert pd.isna(row["reported (paper)"]).all() and row[("reproduced (tiny)", "fail_rate")] == 0
    macro = scores.select(frame, dataset="validation", name="always No Finding", label="macro")["f1"].item()
    assert row[("reproduced (tiny)", "macro_f1")] == pytest.approx(macro)
    base = reporting.baseline_columns(frame, "NIH")
    assert list(base.columns) == list(scores.BASELINES) and set(base.index) == set(NIH_EVAL_LABELS_PAPER)
    labels = reference.per_label_table(6).index
    t6 = reporting.test_table({0: pd.DataFrame({"ChexReason": 0.25}, index=labels)}, 6, "smoke", baselines=base)
    assert t6.loc["Macro", ("trivial baselines", "prevalence-matched random")] == pytest.approx(base["prevalence-matched random"].mean())


def test_subgroup_scores_give_each_band_its_own_macro_f1_youngest_band_first():
    """Ages 30, 45, 70, 50 and one unknown: bands in age order (not "40-59" before "<40"), each scored on its own
    images; the unknown age has a band of its own rather than being dropped."""
    frame = pd.DataFrame({"sex": ["F", "M", "F", None, "M"], "age": [30, 45, 70, 50, float("nan")]})
    y_true = np.array([[1, 0], [0, 1], [1, 1], [0, 1], [1, 0]])
    right = y_true.copy()
    wrong_for_40s = y_true.copy()
    wrong_for_40s[[1, 3]] = 1 - y_true[[1, 3]]
    table = reporting.subgroup_scores(frame, y_true, {"SFT": {0: right, 1: wrong_for_40s}}, ["A", "B"])
    ages = table.loc[table["group"] == "age band"]
    assert list(dict.fromkeys(ages["value"])) == ["<40", "40-59", "60+", "unknown"]
    by = ages.set_index(["value", "seed"])
    assert by.loc[("40-59", 1), "macro_f1"] == 0.0 and by.loc[("40-59", 0), "macro_f1"] == pytest.approx(0.5)
    assert by.loc[("<40", 1), "macro_f1"] == by.loc[("<40", 0), "macro_f1"]   # its one image is right in both
    assert by.loc[("40-59", 0), "n"] == 2 and by.loc[("unknown", 0), "n"] == 1
    assert set(table.loc[table["group"] == "sex", "value"]) == {"F", "M", "unknown"}
