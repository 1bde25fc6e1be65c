"""Token-efficiency metrics, one implementation shared by training callbacks, evaluation and recipe summaries."""

from __future__ import annotations

from collections.abc import Sequence

from lightning_cort.trajectory import Trajectory


def rollout_statistics(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Statistics that need no correctness: ``tokens_per_s`` (sampled tokens per second of generation),
    ``interpreter_time_share``, ``tool_calls_per_response``, ``truncation_rate`` (responses that hit a token limit),
    ``infrastructure_failure_rate`` (calls that failed in the sandbox)."""
    n = len(trajectories)
    if n == 0:
        return {}
    gen_s = sum(t.generation_s for t in trajectories)
    tool_s = sum(t.tool_s for t in trajectories)
    calls = [c for t in trajectories for c in t.tool_calls]
    return {
        "tokens_per_s": sum(t.num_model_tokens for t in trajectories) / gen_s if gen_s else 0.0,
        "interpreter_time_share": tool_s / (gen_s + tool_s) if gen_s + tool_s > 0 else 0.0,
        "tool_calls_per_response": len(calls) / n,
        "truncation_rate": sum(t.finish_reason in ("length", "budget") for t in trajectories) / n,
        "infrastructure_failure_rate": (
            sum(c.result.is_infrastructure_failure for c in calls) / len(calls) if calls else 0.0
        ),
    }


def token_efficiency(trajectories: Sequence[Trajectory], correct: Sequence[bool]) -> dict[str, float]:
    """Accuracy and token/tool usage of a set of trajectories.

    Args:
        trajectories: The responses.
        correct: Whether each response's answer was right.

    Returns:
        ``accuracy``; ``tokens_per_response`` (sampled + interpreter output), ``model_tokens_per_response``,
        ``tool_tokens_per_response``; ``tokens_per_correct`` (all tokens spent / correct answers; ``inf`` with none
        correct); ``tokens_correct`` / ``tokens_incorrect`` (mean tokens of correct / incorrect responses);
        ``tool_calls_per_response``; ``code_use_rate`` (share of responses with a call); ``code_success_rate``
        (share of calls that ran without error); ``interpreter_time_share``; ``truncation_rate`` (responses that hit
        a token limit); ``infrastructure_failure_rate`` (calls that failed in the sandbox).
    """
    n = len(trajectories)
    if n != len(correct):
        raise ValueError(f"{n} trajectories but {len(correct)} correctness flags")
    if n == 0:
        return {}
    totals = [t.completion_ids.numel() for t in trajectories]
    model = [t.num_model_tokens for t in trajectories]
    calls = [c for t in trajectories for c in t.tool_calls]
    right = [x for x, ok in zip(totals, correct) if ok]
    wrong = [x for x, ok in zip(totals, correct) if not ok]
    n_correct = sum(bool(c) for c in correct)
    stats = rollout_statistics(trajectories)
    return {
        "accuracy": n_correct / n,
        "tokens_per_response": sum(totals) / n,
        "model_tokens_per_response": sum(model) / n,
        "tool_tokens_per_response": (sum(totals) - sum(model)) / n,
        "tokens_per_correct": sum(totals) / n_correct if n_correct else float("inf"),
        "tokens_correct": sum(right) / len(right) if right else 0.0,
        "tokens_incorrect": sum(wrong) / len(wrong) if wrong else 0.0,
        "tool_calls_per_response": stats["tool_calls_per_response"],
        "code_use_rate": sum(bool(t.tool_calls) for t in trajectories) / n,
        "code_success_rate": sum(c.result.ok for c in calls) / len(calls) if calls else 0.0,
        "interpreter_time_share": stats["interpreter_time_share"],
        "truncation_rate": stats["truncation_rate"],
        "infrastructure_failure_rate": stats["infrastructure_failure_rate"],
    }
