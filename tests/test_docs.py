"""The paper facts and stack pitfalls the code cites live in docs/, and every citation names a real section."""
import re

from chexreason_utils.paths import REPO_ROOT

CITING = [*REPO_ROOT.glob("chexreason_utils/**/*.py"), *REPO_ROOT.glob("chexreason_utils/profiles/*.yaml"),
          *REPO_ROOT.glob("notebooks/*.ipynb"), REPO_ROOT / "README.md"]


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
