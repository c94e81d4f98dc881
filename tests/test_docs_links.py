"""Every relative link in README.md and docs/**/*.md leads somewhere: the file exists, and a `#anchor` into a
Markdown file names one of its headings (GitHub's slugs), so moving a section never leaves a dead link behind."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)\1", re.S)  # may wrap a line, never a paragraph
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def prose(text: str) -> str:
    """The text with fenced code blocks blanked (their lines kept empty, so line numbers hold)."""
    lines, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m[1][0] * 3
            line = ""
        elif fence is not None:
            fence = None if line.lstrip().startswith(fence) else fence
            line = ""
        lines.append(line)
    return "\n".join(lines)


def without_code_spans(text: str) -> str:
    return CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text, not its target
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (a repeated one gets -1, -2, …)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text()).splitlines() if path.is_file() else []:
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m[1])
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def broken_links(root: Path) -> list[str]:
    """`file:line: target (why)` for every relative link under ``root`` that leads nowhere."""
    files = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    broken = []
    for md in files:
        if not md.is_file():
            continue
        text = without_code_spans(prose(md.read_text()))
        for link in LINK.finditer(text):
            target, number = link[1], text.count("\n", 0, link.start()) + 1
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            path_part, _, anchor = unquote(target).partition("#")
            dest = (md.parent / path_part).resolve() if path_part else md
            where = f"{md.relative_to(root)}:{number}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} (no heading #{anchor} in {dest.relative_to(root)})")
    return broken


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = broken_links(ROOT)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_a_missing_file_or_heading_is_reported_and_code_is_not_read_as_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "grid.md").write_text("# The grid\n\n## With `mlflow run` — many machines\n\n"
                                               "## Stores\n\n## Stores\n")
    (tmp_path / "README.md").write_text(
        "# x\n\n[ok](docs/grid.md#with-mlflow-run--many-machines) [dup](docs/grid.md#stores-1) [folder](docs/)\n"
        "[gone](docs/studies.md) [bad anchor](docs/grid.md#the-grids) [self](#x) [web](https://example.org/a)\n"
        "`[in code](docs/nowhere.md)`\n\n```\n[in a fence](docs/nowhere.md)\n# not a heading\n```\n"
        "[fence heading](#not-a-heading) and a [link whose text\nwraps](docs/gone.md), `code that\nwraps [x](y.md)`\n")
    assert broken_links(tmp_path) == [
        "README.md:4: docs/studies.md (no such file)",
        "README.md:4: docs/grid.md#the-grids (no heading #the-grids in docs/grid.md)",
        "README.md:11: #not-a-heading (no heading #not-a-heading in README.md)",
        "README.md:11: docs/gone.md (no such file)",
    ]
