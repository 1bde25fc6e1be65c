"""Trajectory filters and selections for rejection fine-tuning (RFT), and the detectors behind CoRT's filters.

A filter is a callable ``(trajectory, row) -> bool`` that keeps a trajectory when it returns ``True``. CoRT's RFT
keeps correct trajectories that show neither *delayed computation* (working a calculation out by hand in prose
when the interpreter could do it) nor *result distrust* (re-verifying a numerical result the interpreter already
returned). The detectors here are deliberately simple text heuristics with documented thresholds; pass your own
callables (an LLM judge, say) where they fall short.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lightning_cort._heuristics import ARITHMETIC as _ARITHMETIC  # noqa: F401  (its former home)
from lightning_cort._heuristics import DISTRUST as _DISTRUST  # noqa: F401
from lightning_cort._heuristics import delayed_computation, manual_calculations, result_distrust, split_prose
from lightning_cort.rewards.functions import is_correct
from lightning_cort.trajectory import Trajectory

if TYPE_CHECKING:
    from lightning_cort.formats.base import CodeFormat

__all__ = [
    "CORT_FILTERS",
    "TrajectoryFilter",
    "code_decision_weights",
    "correct",
    "manual_calculations",
    "model_prose",
    "no_delayed_computation",
    "no_infrastructure_failure",
    "no_result_distrust",
    "select_trajectories",
    "shows_delayed_computation",
    "shows_result_distrust",
    "text_shows_delayed_computation",
    "text_shows_result_distrust",
]

TrajectoryFilter = Callable[[Trajectory, Mapping[str, Any]], bool]


def model_prose(trajectory: Trajectory) -> list[tuple[int, str]]:
    """The text the model wrote outside code, per model segment: ``(segment index, prose)``.

    A model segment that ends by opening a code block (its next segment is an interpreter output) is cut where the
    code begins, so only the reasoning around code is returned.
    """
    code_before = {c.segment - 1: c.code for c in trajectory.tool_calls}
    out = []
    for i, seg in enumerate(trajectory.segments):
        if seg.kind != "model":
            continue
        text = seg.text
        code = code_before.get(i)
        if code and code.strip() and code.strip() in text:
            text = text[: text.rfind(code.strip())]
            text = re.sub(r"(```\w*|<code>)\s*$", "", text)
        out.append((i, text))
    return out


def shows_delayed_computation(trajectory: Trajectory, *, min_calculations: int = 2, min_digits: int = 3) -> bool:
    """Whether the model works out at least ``min_calculations`` multi-digit operations by hand in prose *before*
    its first code call (or anywhere, if it never calls code): the behaviour CoRT's Hint-1 targets."""
    first = min((c.segment for c in trajectory.tool_calls), default=len(trajectory.segments))
    prose = [text for i, text in model_prose(trajectory) if i < first]
    return delayed_computation(prose, min_calculations=min_calculations, min_digits=min_digits)


def shows_result_distrust(trajectory: Trajectory) -> bool:
    """Whether, after an execution that succeeded, the model re-verifies the result: a verification phrase
    ("let me verify", "double-check", "by hand", ...) or multi-digit arithmetic redone in prose. The behaviour
    CoRT's Hint-2 targets."""
    ok_segments = [c.segment for c in trajectory.tool_calls if c.result.ok and c.result.stdout.strip()]
    if not ok_segments:
        return False
    first_ok = min(ok_segments)
    return result_distrust(text for i, text in model_prose(trajectory) if i > first_ok)


def text_shows_delayed_computation(
    text: str, code_format: CodeFormat | str | None = None, *, min_calculations: int = 2, min_digits: int = 3
) -> bool:
    """:func:`shows_delayed_computation` on a text trace instead of a :class:`Trajectory` (for traces that were not
    sampled by the rollout engine, or that continue a forced prefix), parsed with ``code_format``: an instance, a
    name, or ``None`` for CoRT's."""
    before, _ = split_prose(text, code_format)
    return delayed_computation(before, min_calculations=min_calculations, min_digits=min_digits)


def text_shows_result_distrust(text: str, code_format: CodeFormat | str | None = None) -> bool:
    """:func:`shows_result_distrust` on a text trace. Without execution results, an output block counts as
    successful when it is not empty and does not read as an error report (a traceback, ``Timeout Error``, ...)."""
    _, after = split_prose(text, code_format)
    return result_distrust(after)


def correct(trajectory: Trajectory, row: Mapping[str, Any]) -> bool:
    """Keep trajectories whose final answer is correct."""
    return is_correct(trajectory, row)


def no_delayed_computation(trajectory: Trajectory, row: Mapping[str, Any]) -> bool:
    """Keep trajectories without delayed computation (see :func:`shows_delayed_computation`)."""
    return not shows_delayed_computation(trajectory)


def no_result_distrust(trajectory: Trajectory, row: Mapping[str, Any]) -> bool:
    """Keep trajectories without result distrust (see :func:`shows_result_distrust`)."""
    return not shows_result_distrust(trajectory)


def no_infrastructure_failure(trajectory: Trajectory, row: Mapping[str, Any]) -> bool:
    """Keep trajectories none of whose executions failed in the sandbox itself."""
    return not trajectory.has_infrastructure_failure


#: CoRT's RFT filter set.
CORT_FILTERS: tuple[TrajectoryFilter, ...] = (correct, no_delayed_computation, no_result_distrust)


def select_trajectories(
    groups: Sequence[Sequence[Trajectory]],
    filters: Sequence[TrajectoryFilter] = (correct,),
    *,
    per_prompt: int | None = None,
    shortest: bool = False,
) -> list[list[Trajectory]]:
    """Apply ``filters`` to each prompt's samples and keep up to ``per_prompt`` of the survivors.

    Args:
        groups: Samples per prompt (each trajectory's ``row`` is its prompt's dataset row).
        filters: All must pass.
        per_prompt: Most trajectories kept per prompt (``None``: all survivors).
        shortest: Keep the shortest survivors (fewest completion tokens) first, as shortest-correct selection.

    Returns:
        The kept trajectories, per prompt (possibly empty lists).
    """
    kept = []
    for group in groups:
        survivors = [t for t in group if all(f(t, t.row) for f in filters)]
        if shortest:
            survivors.sort(key=lambda t: int(t.completion_ids.numel()))
        kept.append(survivors[:per_prompt] if per_prompt is not None else survivors)
    return kept


def code_decision_weights(group: Sequence[Trajectory], successes: Sequence[bool]) -> list[float]:
    """AutoCode-style weights of one prompt's samples by the value of their decision to use code.

    With ``p_code`` and ``p_text`` the success rates of the samples that did and did not call the interpreter, a
    sample that used code gets weight ``1 + (p_code - p_text)`` and one that did not ``1 + (p_text - p_code)``
    (both in ``[0, 2]``): the decision that solves this prompt more often is imitated more. When only one decision
    was sampled there is nothing to compare and every weight is 1.
    """
    used = [bool(t.tool_calls) for t in group]
    code = [s for s, u in zip(successes, used) if u]
    text = [s for s, u in zip(successes, used) if not u]
    if not code or not text:
        return [1.0] * len(group)
    gap = sum(code) / len(code) - sum(text) / len(text)
    return [1.0 + gap if u else 1.0 - gap for u in used]
