"""Hint-Engineering synthesis: cut reasoning traces at their hint points and let a teacher model continue them with a
code interpreter, then keep the continuations that pass CoRT's filters.

For each item (a problem, its gold answer and a reasoning trace) and each chosen ``calculate`` point, the trace is cut
at the point with Hint-1 and an opened code block appended (:func:`~lightning_cort.hints.cut_at_hint`), the prompt
hint is put at its start, and the rollout engine continues that prefix: the model completes the code block, the code
runs in the sandbox, and the model goes on from the real output. The synthesized completion is the prefix followed by
the continuation. It is kept when every filter passes: by default a correct final answer, no delayed computation and
no result distrust (the text-level detectors of :mod:`lightning_cort.filters`, applied to the whole completion, prefix
included) and no sandbox failure.

Hint-2 is not applied to kept completions: a continuation that re-verifies its results is filtered out, as in the
paper's RFT, rather than repaired (a repair would need a second continuation from the ``trust`` point, because the
text after the hint still distrusts the result). Reviewed ``trust`` points that lie before the cut are inserted into
the prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lightning_cort.answers import check_answer
from lightning_cort.formats.cort import CORT_HINT_CALCULATE, CORT_HINT_TRUST, CORT_PROMPT_HINT, CORT_SUFFIX
from lightning_cort.hints.convert import to_messages
from lightning_cort.hints.jsonl import TRACE_COLUMNS
from lightning_cort.hints.points import HintPoint, insert_hints, insert_prompt_hint, thinking_start

if TYPE_CHECKING:
    from lightning_cort.formats.base import CodeFormat
    from lightning_cort.hints.detectors import HintDetector
    from lightning_cort.rollout import RolloutEngine, SamplingConfig
    from lightning_cort.trajectory import Trajectory

__all__ = [
    "SYNTH_FILTERS",
    "SynthFilter",
    "SynthResult",
    "correct_answer",
    "no_delayed_computation",
    "no_result_distrust",
    "no_sandbox_failure",
    "synthesize",
]

logger = logging.getLogger(__name__)
_THINK = "<think>"


@dataclass
class SynthResult:
    """One synthesized completion (or an item that had nothing to synthesize from).

    Attributes:
        index: Position of the item in the input.
        source_id: The item's ``source_id`` or ``id`` (else its index, as a string).
        prompt: The user message the teacher saw.
        point: The ``calculate`` point the trace was cut at (``None``: the item had none).
        prefix: The forced text the teacher continued from (the cut trace with its hints).
        completion: ``prefix`` + the teacher's continuation (without the EOS token): the SFT target.
        hints: Every hint in ``completion``: ``{"kind": "prompt" | "calculate" | "trust", "offset", "text"}``.
        row: The item.
        trajectory: The continuation as sampled (``None`` when nothing was sampled).
        sample: Which of the ``n`` samples of this prefix.
        kept: Whether every filter passed.
        rejected_by: Names of the filters that failed (or why nothing was sampled).
        code_format: The format of ``completion``.
    """

    index: int
    source_id: str
    prompt: str
    point: HintPoint | None
    prefix: str
    completion: str
    hints: list[dict[str, Any]]
    row: Mapping[str, Any]
    trajectory: Trajectory | None = None
    sample: int = 0
    kept: bool = False
    rejected_by: tuple[str, ...] = ()
    code_format: CodeFormat | None = field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        """The SFT-ready record: ``prompt``, ``completion``, ``answer``, ``problem``, ``source_id``, ``hints``,
        ``messages`` (:func:`~lightning_cort.hints.to_messages`), ``sample`` and ``finish_reason``."""
        return {
            "prompt": self.prompt,
            "completion": self.completion,
            "answer": str(self.row["answer"]),
            "problem": str(self.row["problem"]),
            "source_id": self.source_id,
            "hints": self.hints,
            "messages": to_messages(self.prompt, self.completion, self.code_format),
            "sample": self.sample,
            "finish_reason": self.trajectory.finish_reason if self.trajectory is not None else None,
        }


#: A synthesis filter: keeps a result when it returns ``True`` (``row`` is the item).
SynthFilter = Callable[[SynthResult, Mapping[str, Any]], bool]


def correct_answer(result: SynthResult, row: Mapping[str, Any]) -> bool:
    r"""The completion's final answer equals ``row["answer"]`` (:func:`lightning_cort.answers.check_answer` in
    ``strict`` mode: the last ``\boxed{}`` after ``</think>`` when the teacher's prompt opened its thinking; golds
    normalised, math-verify beyond plain numbers)."""
    from lightning_cort.rewards.math import response_text

    prompt = result.trajectory.prompt_text if result.trajectory is not None else ""
    return check_answer(response_text(prompt, result.completion), str(row["answer"]), mode="strict")


def no_delayed_computation(result: SynthResult, row: Mapping[str, Any]) -> bool:
    """No delayed computation in the whole completion
    (:func:`~lightning_cort.filters.text_shows_delayed_computation`)."""
    from lightning_cort.filters import text_shows_delayed_computation

    return not text_shows_delayed_computation(result.completion, result.code_format)


def no_result_distrust(result: SynthResult, row: Mapping[str, Any]) -> bool:
    """No result distrust in the whole completion (:func:`~lightning_cort.filters.text_shows_result_distrust`)."""
    from lightning_cort.filters import text_shows_result_distrust

    return not text_shows_result_distrust(result.completion, result.code_format)


def no_sandbox_failure(result: SynthResult, row: Mapping[str, Any]) -> bool:
    """No execution of the continuation failed in the sandbox itself (as opposed to in the code)."""
    return result.trajectory is None or not result.trajectory.has_infrastructure_failure


#: The default filters: CoRT's RFT filters on the whole completion, and no sandbox failure.
SYNTH_FILTERS: tuple[SynthFilter, ...] = (
    correct_answer,
    no_delayed_computation,
    no_result_distrust,
    no_sandbox_failure,
)


@dataclass
class _Job:
    index: int
    row: Mapping[str, Any]
    prompt: str
    point: HintPoint
    prefix: str
    hints: list[dict[str, Any]]


def _points(row: Mapping[str, Any], trace: str, detector: HintDetector) -> list[HintPoint]:
    """The row's reviewed ``points`` when it has them, else the detector's."""
    if "points" not in row:
        return detector(str(row["problem"]), trace)
    return [p if isinstance(p, HintPoint) else HintPoint.from_dict(p) for p in row["points"] or []]


def _strip_think(trace: str, points: list[HintPoint]) -> tuple[str, list[HintPoint]]:
    """Drop a leading ``<think>`` (and its line break): the generation prompt already opens the thinking."""
    if not trace.startswith(_THINK):
        return trace, points
    cut = thinking_start(trace)
    return trace[cut:], [p.moved(max(p.offset - cut, 0)) for p in points]


def _prefix(
    trace: str,
    point: HintPoint,
    points: Sequence[HintPoint],
    fmt: CodeFormat,
    prompt_hint: str | None,
    hints: tuple[str, str],
) -> tuple[str, list[dict[str, Any]]]:
    """The trace cut at ``point`` with its hint, the ``trust`` hints before it and the prompt hint; and where each
    hint is in it."""
    head = trace[: point.offset]
    trusts = [q for q in points if q.kind == "trust" and q.offset <= point.offset]
    text, where = insert_hints(
        head, [*trusts, point.moved(len(head))], code_format=fmt, calculate_hint=hints[0], trust_hint=hints[1]
    )
    found = [{"kind": p.kind, "offset": at, "text": p.hint(*hints)} for p, at in where]
    if prompt_hint:
        hinted = insert_prompt_hint(text, prompt_hint)
        shift = len(hinted) - len(text)
        for h in found:
            h["offset"] += shift
        found.insert(0, {"kind": "prompt", "offset": thinking_start(hinted), "text": prompt_hint})
        text = hinted
    return text, found


def synthesize(
    items: Iterable[Mapping[str, Any]],
    engine: RolloutEngine,
    *,
    detector: HintDetector | None = None,
    filters: Sequence[SynthFilter] = SYNTH_FILTERS,
    n: int = 1,
    sampling: SamplingConfig | None = None,
    max_points: int | None = None,
    batch_size: int = 32,
    prompt_hint: str | None = CORT_PROMPT_HINT,
    calculate_hint: str = CORT_HINT_CALCULATE,
    trust_hint: str = CORT_HINT_TRUST,
    suffix: str | None = CORT_SUFFIX,
) -> list[SynthResult]:
    """Continue traces from their ``calculate`` hint points with a teacher model and filter the results.

    Args:
        items: Rows with ``problem``, ``answer`` and ``trace`` (the assistant text after the generation prompt; a
            leading ``<think>`` is dropped), optionally ``points`` (reviewed points, as ``HintPoint`` or their dicts;
            they replace the detector's) and ``source_id`` or ``id``.
        engine: The rollout engine of the teacher (its format, sandbox and limits are used; prefixes are continued
            with ``engine.generate(..., prefixes=...)``).
        detector: Finds the points of rows without ``points`` (default: a
            :class:`~lightning_cort.hints.HeuristicDetector` for the engine's format).
        filters: All must pass for a result to be kept; each gets the result and its item. All are evaluated, so
            ``rejected_by`` lists every failure.
        n: Continuations sampled per prefix.
        sampling: Overrides the engine's sampling.
        max_points: Most ``calculate`` points used per item (the first ones; ``None``: all). Each gives its own
            prefix; ``trust`` points before a cut are inserted too.
        batch_size: Prefixes per ``engine.generate`` call (each is sampled ``n`` times).
        prompt_hint: Put at the start of every prefix (``None``: no prompt hint).
        calculate_hint: Hint-1.
        trust_hint: Hint-2.
        suffix: The instruction appended to the problem on its own line to make the user message (CoRT's by
            default, as :func:`lightning_cort.tasks.build_prompt` does; ``None``: the problem alone).

    Returns:
        One result per continuation, in item order, then point order, then sample order; an item without a
        ``calculate`` point gives one result with ``point=None`` and ``rejected_by=("no calculate point",)``.
        ``[r.record() for r in results if r.kept]`` is the SFT data (see :func:`~lightning_cort.hints.write_jsonl`).

    Raises:
        ValueError: Items lack ``problem``, ``answer`` or ``trace`` (all listed), or ``n``/``batch_size`` < 1.
    """
    from lightning_cort.hints.detectors import HeuristicDetector
    from lightning_cort.tasks.calculator import build_prompt

    rows = list(items)
    _check(rows, n, batch_size)
    fmt = engine.format
    detector = detector or HeuristicDetector(code_format=fmt)
    hints = (calculate_hint, trust_hint)
    results: list[SynthResult] = []
    jobs: list[_Job] = []
    for index, row in enumerate(rows):
        trace, points = _strip_think(str(row["trace"]), _points(row, str(row["trace"]), detector))
        prompt = build_prompt(str(row["problem"]), suffix)
        cuts = [p for p in sorted(points, key=lambda p: p.offset) if p.kind == "calculate"][:max_points]
        if not cuts:
            skipped = SynthResult(index, _source_id(row, index), prompt, None, "", "", [], row, code_format=fmt)
            skipped.rejected_by = ("no calculate point",)
            results.append(skipped)
        for point in cuts:
            prefix, where = _prefix(trace, point, points, fmt, prompt_hint, hints)
            jobs.append(_Job(index, row, prompt, point, prefix, where))
    eos = getattr(engine.tokenizer, "eos_token", None) or ""
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        trajectories = engine.generate(
            engine.encode_prompts([j.prompt for j in batch]),
            rows=[j.row for j in batch],
            n=n,
            sampling=sampling,
            prefixes=[j.prefix for j in batch],
        )
        for k, trajectory in enumerate(trajectories):
            job = batch[k // n]
            text = trajectory.completion_text
            text = text[: -len(eos)] if eos and text.endswith(eos) else text
            result = SynthResult(
                job.index,
                _source_id(job.row, job.index),
                job.prompt,
                job.point,
                job.prefix,
                job.prefix + text,
                job.hints,
                job.row,
                trajectory,
                sample=k % n,
                code_format=fmt,
            )
            result.rejected_by = tuple(getattr(f, "__name__", repr(f)) for f in filters if not f(result, job.row))
            result.kept = not result.rejected_by
            results.append(result)
        logger.info("synthesis: %d of %d prefixes continued", min(start + batch_size, len(jobs)), len(jobs))
    results.sort(key=lambda r: (r.index, r.point.offset if r.point else -1, r.sample))
    logger.info("synthesis: %d of %d continuations kept", sum(r.kept for r in results), len(jobs) * n)
    return results


def _source_id(row: Mapping[str, Any], index: int) -> str:
    return str(row.get("source_id", row.get("id", index)))


def _check(rows: list[Mapping[str, Any]], n: int, batch_size: int) -> None:
    errors = [
        f"item {i} lacks {[c for c in TRACE_COLUMNS if c not in row]}"
        for i, row in enumerate(rows)
        if any(c not in row for c in TRACE_COLUMNS)
    ]
    if n < 1:
        errors.append(f"n must be >= 1, got {n}")
    if batch_size < 1:
        errors.append(f"batch_size must be >= 1, got {batch_size}")
    if errors:
        raise ValueError("cannot synthesize: " + "; ".join(errors))
