"""Every config option carries help and a paper tag; docs/configuration.md's open-choices table is rendered from them."""
import dataclasses
import re

import pytest

from chexreason_utils import config, config_docs, config_reads
from chexreason_utils.__main__ import main
from chexreason_utils.paths import REPO_ROOT

CONFIG_CLASSES = [c for c in vars(config).values()
                  if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == config.__name__]
PAPER_SECTIONS = set(re.findall(r"^## (.+)$", (REPO_ROOT / "docs" / "paper.md").read_text(), flags=re.M))


def _is_section(f: dataclasses.Field) -> bool:
    return f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory)


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_field_has_help_and_a_tag_and_every_stated_one_a_paper_section(cls):
    for f in dataclasses.fields(cls):
        where = f"{cls.__name__}.{f.name}"
        assert f.metadata.get("help", "").strip(), f"{where}: no help (use config.option / config.section)"
        if _is_section(f):
            assert f.default_factory in CONFIG_CLASSES and "paper" not in f.metadata, where
            continue
        tag = f.metadata.get("paper")
        assert tag in config.PAPER_TAGS, f"{where}: tag {tag!r} not in {sorted(config.PAPER_TAGS)}"
        cite = f.metadata.get("cite", "")
        if tag == "stated":
            assert cite in PAPER_SECTIONS, f"{where}: stated, but cites {cite!r}, not a docs/paper.md section"
        else:
            assert not cite, f"{where}: only a stated value cites the paper"


def test_options_cover_every_leaf_of_the_config_once():
    keys = [o.key for o in config_docs.options()]
    assert len(keys) == len(set(keys))
    assert set(config_reads.minimal(keys)) == set(keys)

    def leaves(obj, prefix=""):
        for name, value in vars(obj).items():
            yield from leaves(value, f"{prefix}{name}.") if dataclasses.is_dataclass(value) else [prefix + name]
    assert set(keys) == set(leaves(config.Config()))
    assert {"grpo.beta", "grpo.hard.lambda_len", "grpo.nuanced.min_window", "seeds"} <= set(keys)


def test_mutable_defaults_are_fresh_per_instance_and_an_unknown_tag_is_refused():
    a, b = config.Config(), config.Config()
    a.sampling.pool_splits.append("test")
    a.grpo.hard.lambda_len = 9.0
    assert b.sampling.pool_splits == ["train", "validate"] and b.grpo.hard.lambda_len == 0.1
    with pytest.raises(ValueError, match="paper tag 'maybe'"):
        config.option(1, "help", "maybe")


def test_help_metadata_leaves_read_tracking_and_fingerprints_alone():
    cfg = config.load_profile("smoke")
    before = config_reads.values(cfg, [""])
    seen = []
    config_reads.track(cfg, seen.append)
    assert cfg.grpo.beta == 0.15 and seen == ["grpo.beta"]
    assert [f.name for f in dataclasses.fields(cfg.grpo)] == [f.name for f in dataclasses.fields(config.GRPOConfig)]
    assert config_reads.values(cfg, [""]) == before


def test_docs_open_choices_table_is_generated_from_the_config():
    assert config_docs.PAGE == REPO_ROOT / "docs" / "configuration.md"
    page = config_docs.PAGE.read_text()
    assert config_docs.readme_block(page) == config_docs.open_choices_table(), (
        "docs/configuration.md's open-choices table is out of date; regenerate it with "
        "`chexreason config --update-readme`")


def test_open_choices_table_shows_the_paper_value_and_tiny_where_it_differs():
    rows = {line.split(" | ")[0].strip("| `"): line for line in config_docs.open_choices_table().splitlines()
            if line.startswith("| `")}
    assert set(rows) == {o.key for o in config_docs.options() if o.tag == "open"}
    assert "`1e-06` (tiny `0.0002`)" in rows["grpo.learning_rate"]
    assert "tiny" not in rows["grpo.hard.lambda_len"].split(" | ")[1]
    assert "grpo.beta" not in rows      # stated


def test_update_readme_rewrites_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{config_docs.BEGIN}\nold\n{config_docs.END}\n\nafter\n")
    assert config_docs.update_readme(readme) and not config_docs.update_readme(readme)
    assert readme.read_text() == f"# x\n\n{config_docs.open_choices_table()}\n\nafter\n"
    readme.write_text("no block\n")
    with pytest.raises(ValueError, match="no .* block"):
        config_docs.update_readme(readme)


def test_config_command_prints_values_tags_and_help(capsys):
    assert main(["config", "--profile", "tiny", "-p", "grpo.beta=0.2"]) == 0
    out = capsys.readouterr().out
    assert "grpo.beta = 0.2 (paper profile: 0.15)  [stated: docs/paper.md, Hyperparameters: GRPO]" in out
    assert "world.seed = 7  [embedded]" in out and "KL penalty" in out
    assert main(["config", "--profile", "paper", "--tag", "open"]) == 0
    out = capsys.readouterr().out
    assert "grpo.learning_rate = 1e-06  [open]" in out and "grpo.beta" not in out
    assert main(["config", "--tag", "maybe"]) == 2
    assert "unknown tag 'maybe'" in capsys.readouterr().err


def test_allowed_values_are_shown_with_the_help_and_cover_every_choice():
    by_key = {o.key: o for o in config_docs.options()}
    assert by_key["device"].text.endswith("Allowed: one of auto | cpu | cuda.")
    assert "Allowed: >= 1." in by_key["evaluation.n_bootstrap"].text
    assert "Allowed: one of paper9 | with_effusion." in config_docs.describe(config.load_profile("smoke"))
    free = {k for k, o in by_key.items() if not o.allowed}
    assert free <= {"evaluation.relabel_csv", "data.padchest_root"} | {k for k, o in by_key.items()
                                                  if isinstance(config.get_value(config.Config(), k), bool)}
