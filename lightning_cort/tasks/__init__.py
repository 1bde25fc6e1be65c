"""Tasks: datasets and prompt building; the built-in synthetic "needs a calculator" task."""

from lightning_cort.tasks.calculator import (
    ALL_KINDS,
    CalculatorTask,
    Problem,
    ProblemKind,
    build_prompt,
    code_trace,
    hint_trace,
    reasoning_trace,
    reference_output,
    text_trace,
    trace_for,
)

__all__ = [
    "ALL_KINDS",
    "CalculatorTask",
    "Problem",
    "ProblemKind",
    "build_prompt",
    "code_trace",
    "hint_trace",
    "reasoning_trace",
    "reference_output",
    "text_trace",
    "trace_for",
]
