"""Hint-Engineering (CoRT §2.2): hints inserted at the right places of reasoning traces, and synthesis from them.

* Hints: :func:`insert_prompt_hint` (the prompt hint at the start of the thinking), :class:`HintPoint`,
  :func:`apply_hints` and :func:`cut_at_hint` (Hint-1 with an opened code block, Hint-2).
* Where they go: :class:`HintDetector` detectors — :class:`HeuristicDetector` (rules) and :class:`LLMJudgeDetector`
  (any OpenAI-compatible chat endpoint) — and :func:`review_points` / :func:`review_file` to correct them by hand
  (``python -m lightning_cort.hints detect|review``).
* Synthesis: :func:`synthesize` continues traces cut at their hint points with a teacher model through the rollout
  engine and keeps the continuations that pass CoRT's filters; :func:`read_traces` / :func:`write_jsonl`.
* Formats: :func:`convert` between CoRT fences and ReTool tags; :func:`to_messages` / :func:`from_messages` for chat
  messages with a ``tool`` role.

Importing this package does not load torch.
"""

from lightning_cort.hints.convert import convert, from_messages, to_messages
from lightning_cort.hints.detectors import HeuristicDetector, HintDetector
from lightning_cort.hints.jsonl import read_jsonl, read_traces, write_jsonl
from lightning_cort.hints.judge import HintJudgeError, LLMJudgeDetector, locate_quote
from lightning_cort.hints.points import HintKind, HintPoint, apply_hints, cut_at_hint, insert_prompt_hint
from lightning_cort.hints.review import Ask, review_file, review_points
from lightning_cort.hints.synthesis import (
    SYNTH_FILTERS,
    SynthFilter,
    SynthResult,
    correct_answer,
    no_delayed_computation,
    no_result_distrust,
    no_sandbox_failure,
    synthesize,
)

__all__ = [
    "SYNTH_FILTERS",
    "Ask",
    "HeuristicDetector",
    "HintDetector",
    "HintJudgeError",
    "HintKind",
    "HintPoint",
    "LLMJudgeDetector",
    "SynthFilter",
    "SynthResult",
    "apply_hints",
    "convert",
    "correct_answer",
    "cut_at_hint",
    "from_messages",
    "insert_prompt_hint",
    "locate_quote",
    "no_delayed_computation",
    "no_result_distrust",
    "no_sandbox_failure",
    "read_jsonl",
    "read_traces",
    "review_file",
    "review_points",
    "synthesize",
    "to_messages",
    "write_jsonl",
]
