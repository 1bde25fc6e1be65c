"""Where things are in a trace: the character spans of its text, code and output blocks, and sentence starts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightning_cort.formats.base import BlockKind, CodeFormat


@dataclass(frozen=True)
class Span:
    """One parsed block of a trace and where it is: ``trace[start:end]`` is the block as written (delimiters
    included); ``content`` is the text between its delimiters."""

    kind: BlockKind
    start: int
    end: int
    content: str


def block_spans(trace: str, code_format: CodeFormat) -> list[Span]:
    """The blocks of ``trace`` with their offsets (``join(parse(trace)) == trace``, so the rendered lengths add up)."""
    spans = []
    pos = 0
    for block in code_format.parse(trace):
        end = pos + len(code_format.join([block]))
        spans.append(Span(block.kind, pos, end, block.content))
        pos = end
    return spans


def in_prose(spans: list[Span], offset: int) -> bool:
    """Whether a hint may go at ``offset``: in a text block, or on the boundary of a code or output block (before
    it opens or after it closes), never inside one."""
    return not any(s.kind != "text" and s.start < offset < s.end for s in spans)


# Math whose line breaks and full stops do not end a sentence: $$..$$, \[..\], \(..\), $..$.
_MATH = re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)|(?<!\\)\$(?:[^$\\\n]|\\.)+\$", re.DOTALL)
# What may end a sentence: a line break, or . ! ? (with closing quotes or brackets) followed by white space.
_END = re.compile(r"\n|[.!?][\"')\]]*[ \t]")
_DISPLAY_OPEN = re.compile(r"[ \t]*(?:\\\[|\$\$)")  # a line break before display math does not end the sentence
_NOT_AN_END = re.compile(r"(?:^|\n)[ \t]*(?:\d{1,3}|[a-z])\.$|\b(?:e\.g|i\.e|etc|vs|cf|approx)\.$", re.IGNORECASE)


def sentence_starts(text: str, lo: int = 0, hi: int | None = None) -> list[int]:
    """Offsets in ``text[lo:hi]`` where a sentence (or line) begins, at its first non-blank character.

    ``lo`` itself counts as a start (the beginning of a stretch of prose). Line breaks and full stops inside math
    (``$..$``, ``\\[..\\]``, ...), a line break before display math, list numbers (``2.``) and common abbreviations
    (``e.g.``) do not end a sentence.
    """
    hi = len(text) if hi is None else hi
    math = [(m.start(), m.end()) for m in _MATH.finditer(text, lo)]  # to the end: math may close after ``hi``
    candidates = [lo]
    for m in _END.finditer(text, lo, hi):
        if any(a < m.start() < b for a, b in math) or (m.group() == "\n" and _DISPLAY_OPEN.match(text, m.end())):
            continue
        if m.group() != "\n" and _NOT_AN_END.search(text, max(lo, m.start() - 12), m.start() + 1):
            continue
        candidates.append(m.end())
    starts = []
    for c in candidates:
        while c < hi and text[c].isspace():
            c += 1
        if c < hi and (not starts or starts[-1] != c):
            starts.append(c)
    return starts


def sentence_start(text: str, pos: int, lo: int = 0) -> int:
    """The start of the sentence containing ``pos``, not before ``lo``."""
    before = [s for s in sentence_starts(text, lo, pos + 1) if s <= pos]
    return before[-1] if before else lo


def normalize_space(text: str) -> tuple[str, list[int]]:
    """``text`` with each run of white space collapsed to one space, and for every character of the result the
    offset of the character it came from in ``text``."""
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        if ch.isspace():
            if out and out[-1] == " ":
                continue
            ch = " "
        out.append(ch)
        where.append(i)
    return "".join(out), where
