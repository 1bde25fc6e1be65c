"""Text heuristics shared by the RFT filters (:mod:`lightning_cort.filters`) and Hint-Engineering
(:mod:`lightning_cort.hints`): multi-digit arithmetic worked out in prose, phrases that re-verify a result, and
whether an interpreter output block shows a successful run.

Pure text, no torch: the hint tools import this without loading the training stack.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightning_cort.formats.base import CodeFormat

# "123 * 45", "1234 + 5678 = 6912", "17^3", "2**10": an arithmetic operation with at least one multi-digit operand.
ARITHMETIC = re.compile(
    r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)\s*(?:[*×x·/÷+\-^]|\*\*|\\times|\\cdot|\\div)\s*(\d[\d,]*(?:\.\d+)?)(?![\w.])"
)
DISTRUST = re.compile(
    r"\b(let me (?:double[- ]?check|verify|check|recompute|recalculate|confirm)|double[- ]check|"
    r"(?:verify|check|confirm) (?:this|that|it|the (?:result|output|calculation|answer)) (?:manually|by hand)|"
    r"(?:manually|by hand)\b|is (?:that|this|the (?:code|output|result)) (?:right|correct)\?|"
    r"the code (?:might|may|could) (?:be wrong|have an error|have a bug)|but wait)",
    re.IGNORECASE,
)
# The first line of what a failed execution shows (see lightning_cort.sandbox.base.result_text): a traceback, a syntax
# error's location, CoRT's timeout and infrastructure messages, or a bare "SystemExit: 3".
_FAILED_OUTPUT = re.compile(
    r"Traceback \(most recent call last\)|Timeout Error|Execution Error|MemoryError|  File \"|"
    r"[A-Z]\w*(?:Error|Exception|Exit|Interrupt)(?::|$)"
)


def find_manual_calculations(text: str, min_digits: int = 3) -> list[re.Match[str]]:
    """The arithmetic operations in ``text`` whose largest operand has at least ``min_digits`` digits, as matches
    (with their offsets)."""
    found = []
    for m in ARITHMETIC.finditer(text):
        a, b = (re.sub(r"\D", "", g.split(".")[0]) for g in m.groups())
        if max(len(a), len(b)) >= min_digits:
            found.append(m)
    return found


def manual_calculations(text: str, min_digits: int = 3) -> list[str]:
    """Arithmetic written out in prose whose largest operand has at least ``min_digits`` digits."""
    return [m.group(0) for m in find_manual_calculations(text, min_digits)]


def thinking_part(prose: str) -> str:
    """``prose`` up to the end of the thinking (``</think>``): the final answer does not count as re-verification."""
    return prose.split("</think>")[0]


def delayed_computation(prose: Iterable[str], *, min_calculations: int = 2, min_digits: int = 3) -> bool:
    """Whether the reasoning ``prose`` written before the first code call works out at least ``min_calculations``
    multi-digit operations by hand."""
    return sum(len(find_manual_calculations(p, min_digits)) for p in prose) >= min_calculations


def result_distrust(prose: Iterable[str]) -> bool:
    """Whether any of the reasoning ``prose`` written after a successful execution re-verifies it: a verification
    phrase or multi-digit arithmetic redone by hand (the final answer after ``</think>`` is ignored)."""
    for p in prose:
        thinking = thinking_part(p)
        if DISTRUST.search(thinking) or find_manual_calculations(thinking):
            return True
    return False


def output_succeeded(body: str) -> bool:
    """Whether an interpreter output block's ``body`` shows a run that succeeded with output: not empty and not an
    error report (the text-level counterpart of ``result.ok and result.stdout.strip()``). A budget notice appended
    to the body is ignored."""
    shown = body.split("\n\n[SYSTEM]")[0].strip()
    return bool(shown) and _FAILED_OUTPUT.match(shown) is None


def split_prose(text: str, code_format: CodeFormat | str | None = None) -> tuple[list[str], list[str]]:
    """The prose of a text trace (in ``code_format``: an instance, a name, or ``None`` for CoRT's) on both sides of
    its interpreter use.

    Returns:
        The text blocks before the first code block (all of them when there is no code), and the text blocks after
        the first output block that succeeded (see :func:`output_succeeded`).
    """
    before: list[str] = []
    after: list[str] = []
    seen_code = seen_success = False
    from lightning_cort.formats import resolve_format

    for block in resolve_format(code_format).parse(text):
        if block.kind == "code":
            seen_code = True
        elif block.kind == "output":
            seen_success = seen_success or output_succeeded(block.content)
        elif seen_success:
            after.append(block.content)
        elif not seen_code:
            before.append(block.content)
    return before, after
