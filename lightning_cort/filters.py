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
from typing import Any

from lightning_cort.rewards.functions import is_correct
from lightning_cort.trajectory import Trajectory

TrajectoryFilter = Callable[[Trajectory, Mapping[str, Any]], bool]

# "123 * 45", "1234 + 5678 = 6912", "17^3", "2**10": an arithmetic operation with at least one multi-digit operand.
_ARITHMETIC = re.compile(
    r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)\s*(?:[*×x·/÷+\-^]|\*\*|\\times|\\cdot|\\div)\s*(\d[\d,]*(?:\.\d+)?)(?![\w.])"
)
_DISTRUST = re.compile(
    r"\b(let me (?:double[- ]?check|verify|check|recompute|recalculate|confirm)|double[- ]check|"
    r"(?:verify|check|confirm) (?:this|that|it|the (?:result|output|calculation|answer)) (?:manually|by hand)|"
    r"(?:manually|by hand)\b|is (?:that|this|the (?:code|output|result)) (?:right|correct)\?|"
    r"the code (?:might|may|could) (?:be wrong|have an error|have a bug)|but wait)",
    re.IGNORECASE,
)


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


def manual_calculations(text: str, min_digits: int = 3) -> list[str]:
    """Arithmetic written out in prose whose largest operand has at least ``min_digits`` digits."""
    found = []
    for m in _ARITHMETIC.finditer(text):
        a, b = (re.sub(r"\D", "", g.split(".")[0]) for g in m.groups())
        if max(len(a), len(b)) >= min_digits:
            found.append(m.group(0))
    return found


def shows_delayed_computation(trajectory: Trajectory, *, min_calculations: int = 2, min_digits: int = 3) -> bool:
    """Whether the model works out at least ``min_calculations`` multi-digit operations by hand in prose *before*
    its first code call (or anywhere, if it never calls code): the behaviour CoRT's Hint-1 targets."""
    first = min((c.segment for c in trajectory.tool_calls), default=len(trajectory.segments))
    prose = [text for i, text in model_prose(trajectory) if i < first]
    return sum(len(manual_calculations(p, min_digits)) for p in prose) >= min_calculations


def shows_result_distrust(trajectory: Trajectory) -> bool:
    """Whether, after an execution that succeeded, the model re-verifies the result: a verification phrase
    ("let me verify", "double-check", "by hand", ...) or multi-digit arithmetic redone in prose. The behaviour
    CoRT's Hint-2 targets."""
    ok_segments = [c.segment for c in trajectory.tool_calls if c.result.ok and c.result.stdout.strip()]
    if not ok_segments:
        return False
    first_ok = min(ok_segments)
    for i, text in model_prose(trajectory):
        prose = text.split("</think>")[0]
        if i > first_ok and (_DISTRUST.search(prose) or manual_calculations(prose)):
            return True
    return False


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
