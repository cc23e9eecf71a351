"""The documents keep their promises: docs/configuration.md is the settings, docs/architecture.md
draws every module, the README stays a user's page that opens with the two commands, and no
relative link leads nowhere."""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.ops import settings_doc
from pipelines.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 300

DOCUMENTS = sorted(
    [
        README,
        ROOT / "CONTRIBUTING.md",
        ROOT / "CHANGELOG.md",
        ROOT / "benchmarks" / "README.md",
        *(ROOT / "docs").glob("*.md"),
    ]
)
"""Every Markdown page whose relative links are checked."""

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def relative_links(markdown: str) -> list[str]:
    """The targets of a page's relative links (no URL, no in-page anchor), anchors cut off.
    Links inside code blocks and code spans are text, not links."""
    text = _CODE.sub("", _FENCE.sub("", markdown))
    targets = (match.group(1) for match in _LINK.finditer(text))
    return [
        target.split("#", 1)[0]
        for target in targets
        if not _SCHEME.match(target) and not target.startswith("#")
    ]


def broken_links(page: Path) -> list[str]:
    return [t for t in relative_links(page.read_text()) if not (page.parent / t).exists()]


def test_configuration_md_is_generated_from_the_settings() -> None:
    """`make docs` writes it; a setting added, renamed or redescribed without it fails here."""
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == settings_doc.render(), "docs/configuration.md is stale: run `make docs`"


def test_configuration_md_has_one_row_per_setting() -> None:
    rows = [line for line in settings_doc.render().splitlines() if line.startswith("| `")]
    assert len(rows) == len(Settings.model_fields)


def test_readme_stays_a_users_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines: move detail to docs/"


def test_readme_opens_with_make_up_and_make_test() -> None:
    """The first code block, before any section, holds the two commands, in that order."""
    text = README.read_text()
    first_block = _FENCE.search(text)
    assert first_block is not None, "README.md has no code block"
    assert "\n## " not in text[: first_block.start()], "a section comes before the two commands"
    commands = [
        line.split("#", 1)[0].strip()
        for line in first_block.group(0).splitlines()[1:-1]
        if line.strip()
    ]
    assert commands[:2] == ["make up", "make test"], commands


def test_every_relative_link_points_to_a_file() -> None:
    broken = {
        str(page.relative_to(ROOT)): links for page in DOCUMENTS if (links := broken_links(page))
    }
    assert not broken, f"links to files that do not exist: {broken}"


def test_the_link_check_sees_links_and_only_links() -> None:
    page = """See [the guide](docs/guide.md#start), ![a figure](img/a.png) and
[a site](https://example.org), [here](#top), `[not](a-link.md)`.

```
[not a link either](code.md)
```
"""
    assert relative_links(page) == ["docs/guide.md", "img/a.png"]


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [gone](missing.md)")
    assert broken_links(page) == ["missing.md"]


def drawn_modules(markdown: str) -> set[str]:
    """The module paths a tree in a code block draws: `name.py` lines under `folder/` lines,
    nesting read from the indentation (two spaces a level)."""
    drawn: set[str] = set()
    for block in _FENCE.finditer(markdown):
        folders: list[tuple[int, str]] = []
        for line in block.group(0).splitlines():
            match = re.match(r"^( *)([\w.]+(?:/|\.py))(\s|$)", line)
            if not match:
                continue
            depth, name = len(match.group(1)), match.group(2)
            folders = [(d, f) for d, f in folders if d < depth]
            path = "".join(f for _, f in folders) + name
            if name.endswith("/"):
                folders.append((depth, name))
            else:
                drawn.add(path)
    return drawn


def test_the_architecture_tree_draws_every_module() -> None:
    skip = {"__init__.py", "__main__.py"}
    listed = {"routes", "pages"}  # one module per route or page, named in a line of the tree
    actual = {
        str(p.relative_to(ROOT))
        for package in ("pipelines", "api", "dashboard")
        for p in (ROOT / package).rglob("*.py")
        if p.name not in skip and p.parent.name not in listed
    }
    drawn = drawn_modules((ROOT / "docs" / "architecture.md").read_text())
    assert sorted(actual - drawn) == [], "modules docs/architecture.md does not draw"
    assert sorted(drawn - actual) == [], "modules docs/architecture.md draws that do not exist"


def test_the_tree_reader_follows_nesting() -> None:
    tree = "```\na/\n  b.py   text\n  c/\n    d.py\n  e.py\nf.py\n```\n"
    assert drawn_modules(tree) == {"a/b.py", "a/c/d.py", "a/e.py", "f.py"}
