"""The ``chexreason`` command: declared by the package, its sub-commands' --help lists every option with its help."""
import argparse
import re
import tomllib

import pytest

from chexreason_utils import __main__ as cli
from chexreason_utils.paths import REPO_ROOT


def sub_commands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_package_declares_the_command():
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"chexreason": "chexreason_utils.__main__:main"}
    assert cli._parser().prog == "chexreason"


@pytest.mark.parametrize("name", sorted(sub_commands()))
def test_each_sub_command_help_lists_every_option_with_its_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([name, "--help"])
    assert done.value.code == 0
    shown = "".join(capsys.readouterr().out.split())   # argparse wraps lines, also at hyphens
    options = [a for a in sub_commands()[name]._actions if a.dest != "help"]
    for option in options:
        assert option.help, f"chexreason {name} {option.option_strings}: no help text"
        assert "".join(option.help.split()) in shown and all(s in shown for s in option.option_strings)


def test_the_readme_and_docs_teach_the_command_not_the_module():
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    text = "\n".join(p.read_text() for p in pages)
    assert "python -m chexreason_utils" not in text and text.count("chexreason run") >= 4
    assert "chexreason run" in pages[0].read_text()
    assert all("accelerate launch" in line for line in text.splitlines() if re.search(r"-m chexreason_utils \w", line))
