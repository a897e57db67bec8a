"""The README and docs/: short, every relative link resolves (anchors too), no sentence that needs
the project's history, each page says what it is for, and the README's test command is the one CI runs."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HISTORY = re.compile(r"issue #|(^|[\s(])#\d+\b|previous version|previous recipe|the redesign|this version|"
                     r"as reported in|before the (redesign|gpu work)", re.IGNORECASE)


def anchors(page: Path) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def links(page: Path) -> list:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def test_the_readme_is_short_and_links_every_docs_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert DOCS, "docs/ has no pages"
    for page in DOCS:
        assert f"(docs/{page.name})" in text, f"README does not link docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page):
    for target in links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: {target} points to nothing"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.name}: no heading for #{anchor} in {resolved.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_sentence_needs_the_projects_history(page):
    text = " ".join(page.read_text().split())  # a phrase may be broken over two lines
    found = HISTORY.search(text)
    assert not found, f"{page.name}: ...{text[max(0, found.start() - 60):found.end() + 60]}..."


@pytest.mark.parametrize("page", DOCS, ids=lambda page: page.name)
def test_each_docs_page_starts_with_what_it_is_for(page):
    lines = [line for line in page.read_text().splitlines() if line.strip()]
    assert lines[0].startswith("# ") and lines[1].startswith("What this page is for:")


def test_the_readme_gives_the_command_ci_runs():
    """.ci/run ends with the README's test command: install, the linter, the quick tests, then the slow ones."""
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```bash\n{command}\n```" in README.read_text()
    assert command.split(" && ") == ["python -m pip install -r requirements-test.txt", "python -m ruff check",
                                     'python -m pytest -q -m "not slow"', "python -m pytest -q -m slow"]
