"""Shared by the benchmark scripts: write a script's section into docs/benchmarks.md, leaving the others alone."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(heading: str, section: str, path: Path = DOCS) -> None:
    """Replace the ``## <heading>`` section of ``path`` (up to the next ``## `` heading) with ``section``, or append it
    when there is none."""
    text = path.read_text()
    pattern = re.compile(rf"^## {re.escape(heading)}\b.*?(?=^## |\Z)", re.S | re.M)
    body = section.rstrip("\n") + "\n"
    if pattern.search(text):
        text = pattern.sub(lambda _: body + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)
