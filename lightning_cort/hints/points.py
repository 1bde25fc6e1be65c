"""Hint points and hint insertion: the prompt hint at the start of the thinking, Hint-1 ("calculate") where a trace
starts a tedious manual calculation, Hint-2 ("trust") where it starts re-verifying an interpreter result.

Offsets are character offsets into the trace text (the assistant text after the generation prompt).

Whitespace rules of insertion, shared by :func:`apply_hints` and :func:`cut_at_hint`:
    * a space goes before a hint that would otherwise touch the preceding character (a hint placed mid-line);
    * Hint-1 is followed by a line break and the format's opening code delimiter (CoRT: ```` ```python\\n ````), so the
      text that follows is the body of the opened code block. The paper prints the fence right after the hint
      (``reasoning.```python``); the line break keeps the fence a valid markdown fence;
    * Hint-2 is followed by a space when the text after it starts with a non-blank character.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from lightning_cort.formats import resolve_format
from lightning_cort.formats.cort import CORT_HINT_CALCULATE, CORT_HINT_TRUST, CORT_PROMPT_HINT

if TYPE_CHECKING:
    from lightning_cort.formats.base import CodeFormat

__all__ = ["HintKind", "HintPoint", "apply_hints", "cut_at_hint", "insert_prompt_hint"]

#: ``calculate``: Hint-1 and an opened code block; ``trust``: Hint-2.
HintKind = Literal["calculate", "trust"]
HINT_KINDS: tuple[HintKind, ...] = ("calculate", "trust")
_THINK = "<think>"


@dataclass(frozen=True)
class HintPoint:
    """Where one hint goes in a trace.

    Attributes:
        kind: ``"calculate"`` (Hint-1, then a code block is opened) or ``"trust"`` (Hint-2).
        offset: Character offset in the trace; the hint is inserted before the character at this offset.
        reason: Why it goes there (what a detector or reviewer saw), for review and records.
        score: Confidence of the detector, in ``[0, 1]`` (1 for rule-based detections and reviewed points).
        text: The hint's text for this point, replacing the default hint of its kind (set in review).
    """

    kind: HintKind
    offset: int
    reason: str = ""
    score: float = 1.0
    text: str | None = None

    def __post_init__(self) -> None:
        errors = []
        if self.kind not in HINT_KINDS:
            errors.append(f"kind must be one of {HINT_KINDS}, got {self.kind!r}")
        if not isinstance(self.offset, int) or self.offset < 0:
            errors.append(f"offset must be an int >= 0, got {self.offset!r}")
        if errors:
            raise ValueError("invalid HintPoint: " + "; ".join(errors))

    def moved(self, offset: int) -> HintPoint:
        """The same point at another offset."""
        return replace(self, offset=offset)

    def hint(self, calculate_hint: str = CORT_HINT_CALCULATE, trust_hint: str = CORT_HINT_TRUST) -> str:
        """The hint text inserted at this point: :attr:`text` when set, else the default of its kind."""
        if self.text is not None:
            return self.text
        return calculate_hint if self.kind == "calculate" else trust_hint

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``text`` omitted when it is not set)."""
        out = asdict(self)
        if self.text is None:
            del out["text"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HintPoint:
        """The point written by :meth:`to_dict`; ``kind`` and ``offset`` are required.

        Raises:
            ValueError: A required key is missing or a value is invalid (the message says which).
        """
        missing = [k for k in ("kind", "offset") if k not in data]
        if missing:
            raise ValueError(f"a hint point needs {missing}; got keys {sorted(data)}")
        return cls(
            kind=data["kind"],
            offset=data["offset"],
            reason=str(data.get("reason", "")),
            score=float(data.get("score", 1.0)),
            text=data.get("text"),
        )


def thinking_start(completion: str) -> int:
    """Where the thinking begins: after a leading ``<think>`` and its line break, else at the very start."""
    if not completion.startswith(_THINK):
        return 0
    pos = len(_THINK)
    return pos + 1 if completion.startswith("\n", pos) else pos


def insert_prompt_hint(completion: str, hint: str = CORT_PROMPT_HINT, *, end: str = ".\n") -> str:
    """Put the prompt hint at the start of the thinking.

    The hint goes right after a leading ``<think>`` (and its line break) when the completion starts with one, else at
    the very start (a chat template whose generation prompt ends with ``<think>\\n`` leaves completions that start
    directly with the reasoning). It is followed by ``end`` (a full stop and a line break, as the paper's
    ``<think> Okay, ... calls.`` and the built-in task's traces have it); a hint that already ends with a full stop,
    ``!`` or ``?`` gets no second one.

    Args:
        completion: The assistant text.
        hint: The prompt hint (CoRT's by default).
        end: What follows the hint.

    Returns:
        The completion with the hint; unchanged when its thinking already starts with the hint (idempotent).
    """
    pos = thinking_start(completion)
    if completion[pos:].lstrip().startswith(hint.strip()):
        return completion
    tail = end.lstrip(".") if hint.rstrip()[-1:] in (".", "!", "?") else end
    return completion[:pos] + hint + tail + completion[pos:]


def insertion(
    before: str, rest: str, point: HintPoint, code_format: CodeFormat, calculate_hint: str, trust_hint: str
) -> tuple[str, int]:
    """The text inserted for ``point`` between ``before`` and ``rest``, and where the hint starts in it."""
    lead = " " if before and not before[-1].isspace() else ""
    hint = point.hint(calculate_hint, trust_hint)
    if point.kind == "trust":
        trail = " " if rest and not rest[0].isspace() else ""
        return lead + hint + trail, len(lead)
    if rest.lstrip().startswith(code_format.code_open):  # the trace already writes code here: only the hint
        return lead + hint + ("" if rest[:1].isspace() else "\n"), len(lead)
    return lead + hint + "\n" + code_format.code_open, len(lead)


def insert_hints(
    trace: str,
    points: Sequence[HintPoint],
    *,
    code_format: CodeFormat | str | None = None,
    calculate_hint: str = CORT_HINT_CALCULATE,
    trust_hint: str = CORT_HINT_TRUST,
) -> tuple[str, list[tuple[HintPoint, int]]]:
    """:func:`apply_hints`, also returning each point with the offset of its hint in the result (in offset order)."""
    fmt = resolve_format(code_format)
    bad = [p.offset for p in points if p.offset > len(trace)]
    if bad:
        raise ValueError(f"hint offsets {bad} are past the end of the trace ({len(trace)} characters)")
    out = ""
    where: list[tuple[HintPoint, int]] = []
    pos = 0
    for p in sorted(points, key=lambda q: q.offset):
        out += trace[pos : p.offset]
        text, at = insertion(out, trace[p.offset :], p, fmt, calculate_hint, trust_hint)
        where.append((p, len(out) + at))
        out += text
        pos = p.offset
    return out + trace[pos:], where


def apply_hints(
    trace: str,
    points: Sequence[HintPoint],
    *,
    code_format: CodeFormat | str | None = None,
    calculate_hint: str = CORT_HINT_CALCULATE,
    trust_hint: str = CORT_HINT_TRUST,
) -> str:
    """Insert the hints of ``points`` into ``trace``.

    At a ``calculate`` point Hint-1 is inserted and a code block is opened (``code_format.code_open``), unless the
    trace already opens one right there. The block is left open: the text that followed the point becomes its body.
    This is the annotated view (for review and hand annotation); to continue a trace from a point with a model, use
    :func:`cut_at_hint`. At a ``trust`` point Hint-2 is inserted. Points at the same offset keep their order.

    Args:
        trace: The assistant text.
        points: Where the hints go (any order); a point's :attr:`HintPoint.text` replaces the default hint.
        code_format: The code format (an instance or a name; CoRT's by default).
        calculate_hint: Hint-1.
        trust_hint: Hint-2.

    Returns:
        The trace with the hints.

    Raises:
        ValueError: A point lies past the end of the trace.
    """
    fmt = resolve_format(code_format)
    return insert_hints(trace, points, code_format=fmt, calculate_hint=calculate_hint, trust_hint=trust_hint)[0]


def cut_at_hint(
    trace: str,
    point: HintPoint,
    *,
    code_format: CodeFormat | str | None = None,
    calculate_hint: str = CORT_HINT_CALCULATE,
    trust_hint: str = CORT_HINT_TRUST,
) -> str:
    """The trace up to ``point`` with the point's hint appended: what a model continues from in synthesis.

    For a ``calculate`` point the result ends with the opened code block (CoRT: ```` ...reasoning.\\n```python\\n ````),
    ready for the model to write the code; for a ``trust`` point it ends with Hint-2.

    Args:
        trace: The assistant text.
        point: Where to cut.
        code_format: The code format (an instance or a name; CoRT's by default).
        calculate_hint: Hint-1.
        trust_hint: Hint-2.

    Raises:
        ValueError: The point lies past the end of the trace.
    """
    if point.offset > len(trace):
        raise ValueError(f"hint offset {point.offset} is past the end of the trace ({len(trace)} characters)")
    head = trace[: point.offset]
    fmt = resolve_format(code_format)
    return insert_hints(
        head, [point.moved(len(head))], code_format=fmt, calculate_hint=calculate_hint, trust_hint=trust_hint
    )[0]
