"""Result tables in Markdown pages, regenerated from the reports rather than typed by hand.

A block ``<!-- synthboost:table PATH -->`` … ``<!-- /synthboost:table -->`` is replaced by the file at PATH
(relative to the page's folder).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError

BLOCK = re.compile(r"(<!-- synthboost:table (?P<src>\S+) -->\n)(?P<body>.*?)(<!-- /synthboost:table -->)", re.S)


def embed_tables(markdown: Path) -> list[str]:
    """Refill every table block of ``markdown`` from its source file; returns the sources, in order.

    ``UserError`` (nothing written) when a source is missing or a block is left open."""
    if not markdown.is_file():
        raise UserError(f"{markdown}: no such file")
    text = markdown.read_text()
    if text.count("<!-- synthboost:table ") != text.count("<!-- /synthboost:table -->"):
        raise UserError(f"{markdown}: a `<!-- synthboost:table … -->` block has no `<!-- /synthboost:table -->` "
                        "end marker; add it")
    sources = [m["src"] for m in BLOCK.finditer(text)]
    missing = [s for s in sources if not (markdown.parent / s).is_file()]
    if missing:
        raise UserError(f"{markdown}: table source {missing[0]} does not exist; write it with `synthboost report "
                        f"--out {(markdown.parent / missing[0]).parent}` (see the command beside the block)")
    new = BLOCK.sub(lambda m: m[1] + (markdown.parent / m["src"]).read_text().rstrip("\n") + "\n" + m[4], text)
    if new != text:
        markdown.write_text(new)
    return sources
