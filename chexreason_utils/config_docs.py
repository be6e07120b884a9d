"""The config options' help texts and paper tags, rendered for people.

- ``options()``: every option (leaf field) of ``Config`` as a dotted key with its tag, citation, help and what
  values it allows (checked at load, ``config.check_values``).
- ``describe(cfg)``: each option's value, tag and help (``chexreason config --profile tiny``).
- ``open_choices_table()``: the "Where the paper is open" table of ``docs/configuration.md`` (``PAGE``), one row
  per ``open`` option, with the paper profile's value (and tiny's where it differs). A test checks that the page's
  block equals it; ``chexreason config --update-readme`` rewrites the block.
"""
from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import PAPER_TAGS, Config, allowed, get_value, load_profile
from .paths import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "configuration.md"   # the page that holds the open-choices block
BEGIN = "<!-- open-choices: generated from config.py by chexreason config --update-readme -->"
END = "<!-- /open-choices -->"


@dataclass(frozen=True)
class Option:
    key: str     # dotted, e.g. grpo.hard.lambda_len
    tag: str     # one of config.PAPER_TAGS ("" for a field that lacks one: a test catches it)
    cite: str    # the docs/paper.md section of a stated value
    help: str
    allowed: str  # what the loader accepts ('' when any value of the type will do): config.allowed

    @property
    def text(self) -> str:
        """The help with what is allowed."""
        return f"{self.help} Allowed: {self.allowed}." if self.allowed else self.help


def options(cls: type = Config, prefix: str = "") -> list[Option]:
    """Every leaf field under ``cls`` in declaration order; nested sections are walked, not listed."""
    out: list[Option] = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out.extend(options(type(default), f"{prefix}{f.name}."))
        else:
            out.append(Option(prefix + f.name, f.metadata.get("paper", ""), f.metadata.get("cite", ""),
                              f.metadata.get("help", ""), allowed(f)))
    return out


def show(value: Any) -> str:
    """A value as it would be written in a profile (YAML flow style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, str):
        return value or '""'
    return repr(value)


def describe(cfg: Config, tag: str = "") -> str:
    """Each option's value (and the paper profile's, where a stated or open one differs), tag and help."""
    paper = load_profile("paper")
    lines = [f"profile {cfg.profile}; tags:", *(f"  {t}: {m}" for t, m in PAPER_TAGS.items()), ""]
    for opt in options():
        if tag and opt.tag != tag:
            continue
        where = f"{opt.tag}: docs/paper.md, {opt.cite}" if opt.cite else opt.tag
        ours, paper_value = show(get_value(cfg, opt.key)), show(get_value(paper, opt.key))
        differs = f" (paper profile: {paper_value})" if ours != paper_value and opt.tag in ("stated", "open") else ""
        lines.append(f"{opt.key} = {ours}{differs}  [{where}]")
        lines.extend(textwrap.wrap(opt.text, 112, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def open_choices_table() -> str:
    """The docs block: one row per ``open`` option, its paper-profile value (tiny's if different) and why."""
    paper, tiny = load_profile("paper"), load_profile("tiny")
    lines = [BEGIN, "| option | our default (paper profile; tiny where it differs) | why |", "|---|---|---|"]
    for opt in options():
        if opt.tag != "open":
            continue
        ours, small = show(get_value(paper, opt.key)), show(get_value(tiny, opt.key))
        default = f"`{_cell(ours)}`" + (f" (tiny `{_cell(small)}`)" if small != ours else "")
        lines.append(f"| `{opt.key}` | {default} | {_cell(opt.text)} |")
    return "\n".join([*lines, END])


def readme_block(text: str) -> str:
    """The generated block as it stands in ``text`` (markers included; '' when the markers are missing)."""
    start, end = text.find(BEGIN), text.find(END)
    return text[start:end + len(END)] if 0 <= start < end else ""


def update_readme(path: Path = PAGE) -> bool:
    """Rewrite the block in ``path`` (docs/configuration.md) from the config; True when it changed."""
    text = path.read_text()
    old = readme_block(text)
    if not old:
        raise ValueError(f"{path}: no {BEGIN!r} ... {END!r} block to update")
    new = open_choices_table()
    if new != old:
        path.write_text(text.replace(old, new))
    return new != old
