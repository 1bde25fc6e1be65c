"""Hint detectors: where in a trace Hint-1 and Hint-2 should go.

A detector is any callable ``(problem, trace) -> list[HintPoint]`` (:class:`HintDetector`). Two are provided: the
rule-based :class:`HeuristicDetector` below and :class:`~lightning_cort.hints.LLMJudgeDetector`, which asks a model.
The paper placed its 30 hints by hand because automatic placement was "not precise enough"; both detectors propose
points that :func:`~lightning_cort.hints.review_points` lets a person correct.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from lightning_cort._heuristics import DISTRUST, find_manual_calculations, output_succeeded
from lightning_cort.formats import resolve_format
from lightning_cort.hints._text import Span, block_spans, normalize_space, sentence_start
from lightning_cort.hints.points import HINT_KINDS, HintKind, HintPoint

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lightning_cort.formats.base import CodeFormat

__all__ = ["HeuristicDetector", "HintDetector"]

# A calculation that states its result: "= 56088", "equals 12", "is 3,400".
_RESULT_AFTER = re.compile(r"\s*(?:=|≈|\\approx|equals|is|gives)\s*\$?\s*-?\d")


@runtime_checkable
class HintDetector(Protocol):
    """Finds hint points in a trace."""

    def __call__(self, problem: str, trace: str) -> list[HintPoint]:
        """The points where hints should go in ``trace`` (the assistant text for ``problem``), in offset order."""
        ...


class HeuristicDetector:
    """Rule-based hint placement, using the same text heuristics as the RFT filters.

    The trace is parsed with ``code_format`` into prose, code and output blocks. A *stretch* is the prose between two
    code blocks (or before the first, or after the last); only the thinking counts (prose after ``</think>`` is
    ignored).

    * ``calculate``: in the stretch before the first code block (the whole thinking when the trace has no code —
      where :func:`~lightning_cort.filters.shows_delayed_computation` looks), at the start of the sentence or line
      holding the first manual calculation: an arithmetic operation with an operand of at least ``min_digits``
      digits. An operation that only restates the problem (it appears in the problem and no result follows it, as in
      "we need 123 * 456 + 789") does not count. Needs ``min_calculations`` such operations in the stretch.
    * ``trust``: in each stretch right after an output block that shows a successful run (not empty, not an error
      report), at the start of the sentence where the trace begins re-verifying: a verification phrase ("let me
      verify", "double-check", "by hand", "but wait", ...) or multi-digit arithmetic redone in prose.

    Args:
        min_digits: Digits of the largest operand for an operation to count as a manual calculation.
        min_calculations: Manual calculations a stretch needs before it gets a ``calculate`` point.
        max_per_stretch: Most points of each kind per stretch (the first sentences that qualify).
        kinds: Which kinds of points to propose.
        code_format: The traces' code format (an instance or a name; CoRT's by default).
    """

    def __init__(
        self,
        min_digits: int = 3,
        *,
        min_calculations: int = 1,
        max_per_stretch: int = 1,
        kinds: Sequence[HintKind] = HINT_KINDS,
        code_format: CodeFormat | str | None = None,
    ) -> None:
        errors = []
        if min_digits < 1:
            errors.append(f"min_digits must be >= 1, got {min_digits}")
        if min_calculations < 1:
            errors.append(f"min_calculations must be >= 1, got {min_calculations}")
        if max_per_stretch < 1:
            errors.append(f"max_per_stretch must be >= 1, got {max_per_stretch}")
        unknown = [k for k in kinds if k not in HINT_KINDS]
        if unknown:
            errors.append(f"kinds must be among {HINT_KINDS}, got {unknown}")
        if errors:
            raise ValueError("invalid HeuristicDetector: " + "; ".join(errors))
        self.min_digits = min_digits
        self.min_calculations = min_calculations
        self.max_per_stretch = max_per_stretch
        self.kinds = tuple(kinds)
        self.code_format = resolve_format(code_format)

    def __call__(self, problem: str, trace: str) -> list[HintPoint]:
        """The ``calculate`` and ``trust`` points of ``trace``, in offset order."""
        spans = block_spans(trace, self.code_format)
        problem_text = normalize_space(problem)[0]
        points: list[HintPoint] = []
        seen_code = False
        previous: Span | None = None
        for span in spans:
            if span.kind != "text":
                seen_code = seen_code or span.kind == "code"
                previous = span
                continue
            close = trace.find("</think>", span.start, span.end)
            end = span.end if close < 0 else close
            if "calculate" in self.kinds and not seen_code:
                points += self._calculate(trace, span.start, end, problem_text)
            after_success = previous is not None and previous.kind == "output" and output_succeeded(previous.content)
            if "trust" in self.kinds and after_success:
                points += self._trust(trace, span.start, end)
            if close >= 0:
                break
            previous = span
        return sorted(points, key=lambda p: p.offset)

    def _calculate(self, trace: str, lo: int, hi: int, problem_text: str) -> list[HintPoint]:
        found = [
            m
            for m in find_manual_calculations(trace[lo:hi], self.min_digits)
            if not _restates(m, trace[lo:hi], problem_text)
        ]
        if len(found) < self.min_calculations:
            return []
        hits = [(lo + m.start(), f"manual calculation {m.group(0)!r}") for m in found]
        return self._at_sentences(trace, lo, hits, "calculate")

    def _trust(self, trace: str, lo: int, hi: int) -> list[HintPoint]:
        prose = trace[lo:hi]
        hits = [(lo + m.start(), f"re-verifies the output: {m.group(0)!r}") for m in DISTRUST.finditer(prose)]
        hits += [
            (lo + m.start(), f"redoes {m.group(0)!r} by hand") for m in find_manual_calculations(prose, self.min_digits)
        ]
        return self._at_sentences(trace, lo, sorted(hits), "trust")

    def _at_sentences(self, trace: str, lo: int, hits: list[tuple[int, str]], kind: HintKind) -> list[HintPoint]:
        """One point per sentence holding a hit (at the sentence start), the first ``max_per_stretch`` of them."""
        points: list[HintPoint] = []
        for pos, reason in hits:
            start = sentence_start(trace, pos, lo)
            if points and points[-1].offset == start:
                continue
            points.append(HintPoint(kind, start, reason))
            if len(points) == self.max_per_stretch:
                break
        return points


def _restates(match: re.Match[str], prose: str, problem_text: str) -> bool:
    """Whether a calculation only restates the problem: it appears there and no result follows it."""
    if _RESULT_AFTER.match(prose, match.end()):
        return False
    return normalize_space(match.group(0))[0] in problem_text
