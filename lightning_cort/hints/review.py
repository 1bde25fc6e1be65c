"""Reviewing proposed hint points by hand, in the terminal (``rich``).

For each point the trace around it is shown with the hint as it would be inserted, and one command decides it:

=================  =====================================================================================
``a`` (or Enter)   accept
``r``              reject
``m SPEC``         move: ``+N`` / ``-N`` characters, ``/text`` to the next occurrence of ``text`` (white space
                   ignored; the first one when none follows), ``<`` / ``>`` to the previous / next sentence
                   start, or an absolute offset. ``m`` alone asks for the spec.
``e TEXT``         use ``TEXT`` as this point's hint (``e`` alone asks for it; an empty answer keeps it)
``k``              switch the kind (calculate ↔ trust)
``n K SPEC``       add a point of kind ``K`` (``c`` or ``t``) at ``SPEC`` (as for ``m``, from this point); it is
                   reviewed next. Parts left out are asked for.
``q``              quit: keep this point and all the ones not reviewed yet as they are
=================  =====================================================================================

A point can only be moved to prose: not inside a code or output block.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_cort.formats import resolve_format
from lightning_cort.formats.cort import CORT_HINT_CALCULATE, CORT_HINT_TRUST
from lightning_cort.hints._text import block_spans, in_prose, sentence_starts
from lightning_cort.hints.jsonl import report_malformed, scan_jsonl, write_jsonl
from lightning_cort.hints.judge import locate_quote
from lightning_cort.hints.points import HintPoint, insertion

if TYPE_CHECKING:
    from rich.console import Console

    from lightning_cort.formats.base import CodeFormat
    from lightning_cort.hints.detectors import HintDetector

__all__ = ["Ask", "review_file", "review_points"]

#: Reads one answer for a prompt (rich's ``Prompt.ask`` by default; tests pass scripted answers).
Ask = Callable[[str], str]

_COMMANDS = "[a]ccept  [r]eject  [m]ove  [e]dit  [k]ind  [n]ew  [q]uit"
_HELP = (
    "a: accept | r: reject | m +N, m -N, m /text, m <, m >, m OFFSET: move | e TEXT: edit the hint | "
    "k: switch kind | n c|t SPEC: add a point | q: quit keeping the rest"
)
_DEFAULT_HINTS = (CORT_HINT_CALCULATE, CORT_HINT_TRUST)
_KINDS = {"c": "calculate", "calculate": "calculate", "t": "trust", "trust": "trust"}


class _Session:
    """The review of one trace: a queue of points, the current one shown until a command decides it."""

    def __init__(
        self,
        trace: str,
        points: Sequence[HintPoint],
        console: Console,
        ask: Ask,
        code_format: CodeFormat,
        context: int,
        hints: tuple[str, str],
    ) -> None:
        self.trace, self.console, self.ask = trace, console, ask
        self.fmt, self.context, self.hints = code_format, context, hints
        self.spans = block_spans(trace, code_format)
        self.queue = sorted(points, key=lambda p: p.offset)
        self.kept: list[HintPoint] = []

    def run(self) -> tuple[list[HintPoint], bool]:
        """Review every point; returns the kept points (offset order) and whether the reviewer quit."""
        i = 0
        while i < len(self.queue):
            self.show(i)
            command, _, arg = self.ask(_COMMANDS).strip().partition(" ")
            command, arg = command.lower(), arg.strip()
            point = self.queue[i]
            if command in ("", "a"):
                self.kept.append(point)
                i += 1
            elif command == "r":
                i += 1
            elif command == "q":
                self.kept.extend(self.queue[i:])
                return sorted(self.kept, key=lambda p: p.offset), True
            elif command == "m":
                moved = self.move(point, arg or self.ask("move to (+N, -N, /text, <, >, or an offset)"))
                self.queue[i] = moved or point
            elif command == "e":
                text = arg or self.ask("hint text (empty keeps the current one)").strip()
                self.queue[i] = replace(point, text=text) if text else point
            elif command == "k":
                self.queue[i] = replace(point, kind="trust" if point.kind == "calculate" else "calculate")
            elif command == "n":
                added = self.new_point(point, arg)
                if added is not None:
                    self.queue.insert(i + 1, added)
            else:
                self.console.print(_HELP, markup=False)
        return sorted(self.kept, key=lambda p: p.offset), False

    def show(self, i: int) -> None:
        """The trace around point ``i`` with its hint marked where it would be inserted."""
        from rich.text import Text

        point = self.queue[i]
        before = self.trace[max(0, point.offset - self.context) : point.offset]
        after = self.trace[point.offset : point.offset + self.context]
        inserted, _ = insertion(before, after, point, self.fmt, *self.hints)
        header = f"point {i + 1}/{len(self.queue)}: {point.kind} at offset {point.offset}"
        self.console.rule(Text(header + (f" ({point.reason})" if point.reason else "")))
        view = Text("…" if point.offset > self.context else "", style="dim")
        view.append(before, style="dim")
        view.append(inserted, style="bold black on yellow")
        view.append(after)
        view.append("…" if point.offset + self.context < len(self.trace) else "", style="dim")
        self.console.print(view)

    def move(self, point: HintPoint, spec: str) -> HintPoint | None:
        """``point`` moved as ``spec`` says, or ``None`` (with a message) when the spec is not understood, finds
        nothing, or leads into a code or output block."""
        target = self.resolve(point.offset, spec.strip())
        if target is None:
            self.console.print(f"cannot move by {spec!r}: {_HELP}", markup=False)
            return None
        if not in_prose(self.spans, target):
            self.console.print(f"offset {target} is inside a code or output block; not moved", markup=False)
            return None
        return point.moved(target)

    def resolve(self, offset: int, spec: str) -> int | None:
        """The offset a move spec points to (clamped to the trace), or ``None`` when it is not understood."""
        if spec.startswith("/") and len(spec) > 1:
            return locate_quote(self.trace, spec[1:], self.spans, after=offset + 1)
        if spec in ("<", ">"):
            starts = [s for s in sentence_starts(self.trace) if in_prose(self.spans, s)]
            earlier, later = [s for s in starts if s < offset], [s for s in starts if s > offset]
            if spec == "<":
                return earlier[-1] if earlier else None
            return later[0] if later else None
        if re.fullmatch(r"[+-]\d+", spec):
            return min(max(offset + int(spec), 0), len(self.trace))
        if spec.isdigit():
            return min(int(spec), len(self.trace))
        return None

    def new_point(self, current: HintPoint, arg: str) -> HintPoint | None:
        """A point added with ``n K SPEC`` (asking for what is left out), placed relative to ``current``."""
        kind_arg, _, spec = arg.partition(" ")
        kind = _KINDS.get((kind_arg or self.ask("kind of the new point (c/t)")).strip().lower())
        if kind is None:
            self.console.print("the kind is c (calculate) or t (trust); no point added", markup=False)
            return None
        spec = spec.strip() or self.ask("where (+N, -N, /text, <, >, or an offset)")
        return self.move(HintPoint(kind, current.offset, "added in review"), spec)  # type: ignore[arg-type]


def _default_ask(console: Console) -> Ask:
    from rich.prompt import Prompt
    from rich.text import Text

    # Text, not a markup string: "[a]ccept" must show its brackets. Enter accepts.
    return lambda prompt: Prompt.ask(Text(prompt), console=console, default="a", show_default=False)


def review_points(
    trace: str,
    points: Sequence[HintPoint],
    *,
    console: Console | None = None,
    ask: Ask | None = None,
    code_format: CodeFormat | str | None = None,
    context: int = 300,
    calculate_hint: str = CORT_HINT_CALCULATE,
    trust_hint: str = CORT_HINT_TRUST,
) -> list[HintPoint]:
    """Let a person accept, reject, move or edit each proposed point, and add points (commands in the module doc).

    Args:
        trace: The trace the points belong to.
        points: The proposals (any order); they are reviewed in offset order.
        console: Where to show the trace (a new ``rich`` console on the terminal by default).
        ask: Reads one answer for a prompt (rich's ``Prompt.ask`` by default, where Enter accepts).
        code_format: The trace's code format (an instance or a name; CoRT's by default).
        context: Characters of the trace shown on each side of a point.
        calculate_hint: Hint-1, as shown for calculate points without their own text.
        trust_hint: Hint-2, likewise.

    Returns:
        The kept points, in offset order (after ``q``, the current and unreviewed points as they were).
    """
    return _review(trace, points, console, ask, code_format, context, (calculate_hint, trust_hint))[0]


def _review(
    trace: str,
    points: Sequence[HintPoint],
    console: Console | None,
    ask: Ask | None,
    code_format: CodeFormat | str | None,
    context: int,
    hints: tuple[str, str],
) -> tuple[list[HintPoint], bool]:
    if console is None:
        from rich.console import Console

        console = Console()
    session = _Session(
        trace, points, console, ask or _default_ask(console), resolve_format(code_format), context, hints
    )
    return session.run()


def review_file(
    src: str | Path,
    dst: str | Path,
    *,
    detector: HintDetector | None = None,
    console: Console | None = None,
    ask: Ask | None = None,
    code_format: CodeFormat | str | None = None,
    context: int = 300,
) -> int:
    """Review the proposals of a ``.jsonl`` file and write the reviewed rows.

    Each row needs a ``trace`` and its proposals under ``points`` (``HintPoint.to_dict`` form); a row without
    ``points`` gets the ``detector``'s proposals (``problem`` is passed to it), or none. Reviewed rows are written with
    their kept points and ``"reviewed": true``. Rows already marked reviewed are copied unchanged, so a review
    stopped with ``q`` resumes where it stopped when run again on its own output (``dst`` may equal ``src``). After
    ``q`` the trace being reviewed keeps its remaining points and counts as reviewed; the rows after it are copied
    unreviewed.

    Args:
        src: The proposals.
        dst: Where the reviewed rows go (written whole at the end, replacing the file).
        detector: Proposes points for rows without ``points``.
        console: Where to show the traces.
        ask: Reads the answers (see :func:`review_points`).
        code_format: The traces' code format.
        context: Characters shown on each side of a point.

    Returns:
        The number of rows reviewed in this call.

    Raises:
        ValueError: Malformed rows (no ``trace``, invalid points), named by line number.
    """
    found, errors = scan_jsonl(src)
    rows = []
    for number, row in found:
        if not isinstance(row.get("trace"), str):
            errors.append((number, f"no 'trace' text (has {sorted(row)})"))
            continue
        try:
            row["points"] = [HintPoint.from_dict(p) for p in row["points"] or []] if "points" in row else None
        except (ValueError, TypeError, AttributeError) as e:
            errors.append((number, f"invalid points: {e}"))
        rows.append(row)
    report_malformed(src, errors)
    out: list[dict[str, Any]] = []
    reviewed, quit_ = 0, False
    for row in rows:
        if quit_ or row.get("reviewed"):
            out.append(_serialisable(row))
            continue
        points = row["points"]
        if points is None:
            points = detector(str(row.get("problem", "")), row["trace"]) if detector is not None else []
        if console is not None and row.get("problem"):
            console.print(f"problem: {str(row['problem'])[:200]}", markup=False)
        kept, quit_ = _review(row["trace"], points, console, ask, code_format, context, _DEFAULT_HINTS)
        out.append({**_serialisable(row), "points": [p.to_dict() for p in kept], "reviewed": True})
        reviewed += 1
    write_jsonl(out, dst)
    return reviewed


def _serialisable(row: dict[str, Any]) -> dict[str, Any]:
    points = row.get("points")
    out = {k: v for k, v in row.items() if k != "points"}
    if points is not None:
        out["points"] = [p.to_dict() for p in points]
    return out
