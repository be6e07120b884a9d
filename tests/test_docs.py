"""The README and the pages under docs/ hold together: every relative link reaches a file (and a heading, for
``#anchor``), every command they show exists, the README stays a two-minute read, and the paper facts the code
cites name real sections of docs/paper.md."""
import argparse
import re
from pathlib import Path

import pytest

from chexreason_utils import __main__ as cli
from chexreason_utils.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
PAGES = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 12 * 1024
CITING = [*REPO_ROOT.glob("chexreason_utils/**/*.py"), *REPO_ROOT.glob("chexreason_utils/profiles/*.yaml"),
          *REPO_ROOT.glob("notebooks/*.ipynb"), *PAGES]

FENCE = re.compile(r"^```.*?^```", flags=re.M | re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


# --- helpers: what a Markdown page links to and shows as code ---------------------------------------------------

def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (not '-' or '_'), spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page, with GitHub's -1, -2 … for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for match in re.finditer(r"^#{1,6} (.+?)#*$", FENCE.sub("", page.read_text()), flags=re.M):
        slug = github_slug(match.group(1))
        n = seen.get(slug, 0)
        out.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return out


def relative_links(text: str) -> list[str]:
    """The targets of the page's Markdown links that point inside the repository (code blocks and spans left out)."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    return [t for t in LINK.findall(prose) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page.read_text()):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {file.relative_to(REPO_ROOT) if file.is_relative_to(REPO_ROOT) else file})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    return broken


def code_shown(text: str) -> str:
    """The fenced blocks and inline code spans of a page, one after another."""
    return "\n".join([m.group(0) for m in FENCE.finditer(text)] + INLINE_CODE.findall(FENCE.sub("", text)))


def commands_shown(text: str) -> tuple[set[str], set[str]]:
    """The ``chexreason <sub-command>`` / ``-m chexreason_utils <sub-command>`` and ``make <target>`` words in code."""
    code = code_shown(text)
    subs = set(re.findall(r"(?:\bchexreason|-m chexreason_utils) +([a-z][\w-]*)", code))
    targets = set(re.findall(r"(?<![\w/-])make +([a-z][\w.-]*)", code))
    return subs, targets


def sub_commands() -> set[str]:
    action = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+)\s*:(?!=)", (REPO_ROOT / "Makefile").read_text(), flags=re.M))


# --- the README and docs pages ------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_relative_link_reaches_a_file_and_heading(page):
    assert not broken_links(page), f"{page.relative_to(REPO_ROOT)}: broken links {broken_links(page)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_command_shown_exists(page):
    subs, targets = commands_shown(page.read_text())
    assert not subs - sub_commands(), f"{page.name} shows sub-commands chexreason lacks: {sorted(subs - sub_commands())}"
    assert not targets - make_targets(), f"{page.name} shows make targets the Makefile lacks: {sorted(targets - make_targets())}"


def test_the_readme_is_short_and_links_every_docs_page():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size:,} bytes, over {README_MAX_BYTES:,}: move a topic to docs/"
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README.read_text())}
    assert not set(PAGES[1:]) - linked, f"docs pages the README does not link: {sorted(p.name for p in set(PAGES[1:]) - linked)}"
    head = README.read_text()[:2500]
    assert all(f"make {t}" in head for t in ("figures", "test", "experiments"))


def test_the_checks_catch_a_broken_link_an_unknown_command_and_a_missing_heading(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Top\n\n## A `coded` heading, with punctuation!\n\n[ok](#a-coded-heading-with-punctuation) "
                    "[top](#top) [gone](missing.md) [no heading](#nowhere) [web](https://example.org/x.md)\n\n"
                    "```bash\nchexreason run --profile tiny\nchexreason frobnicate\nmake figures\nmake nothing-here\n```\n"
                    "and inline `python -m chexreason_utils sft`, `.venv/bin/chexreason plan`\n")
    assert [b.split(" ")[0] for b in broken_links(page)] == ["missing.md", "#nowhere"]
    subs, targets = commands_shown(page.read_text())
    assert subs - sub_commands() == {"frobnicate"} and {"run", "sft", "plan"} <= subs
    assert targets - make_targets() == {"nothing-here"} and "figures" in targets


# --- the paper facts the code cites ------------------------------------------------------------------------------

def _sections(doc: str) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^## (.+)$", (REPO_ROOT / "docs" / doc).read_text(), flags=re.M)}


def test_no_citation_points_outside_the_repository():
    for path in CITING:
        text = path.read_text()
        assert "PAPER.md" not in text and "ENGINEERING_NOTES" not in text, path.name


def test_every_cited_section_of_the_paper_doc_exists():
    sections = _sections("paper.md")
    cited = set()
    for path in CITING:
        for match in re.finditer(r"docs/paper\.md\)?,? \*?\"?([A-Z][\w :]+?)[\"*)]", path.read_text()):
            cited.add(match.group(1).strip())
    assert cited and cited <= sections, cited - sections
    assert {"Data", "Rewards", "Hyperparameters: SFT", "Hyperparameters: GRPO"} <= cited
