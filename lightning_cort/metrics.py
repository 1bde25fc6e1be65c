"""Token-efficiency metrics, one implementation shared by training callbacks, evaluation and recipe summaries."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightning_cort.rewards.math import THINK_CLOSE, final_answer
from lightning_cort.trajectory import Trajectory


def rollout_statistics(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Statistics that need no correctness: ``tokens_per_s`` (sampled tokens per second of generation),
    ``interpreter_time_share``, ``tool_calls_per_response``, ``truncation_rate`` (responses that hit a token limit),
    ``answer_rate`` (responses with a final answer to judge: a ``\\boxed{}``, after ``</think>`` when thinking),
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
        "answer_rate": sum(final_answer(t.response_text) is not None for t in trajectories) / n,
        "infrastructure_failure_rate": (
            sum(c.result.is_infrastructure_failure for c in calls) / len(calls) if calls else 0.0
        ),
    }


def no_answer_diagnosis(responses: Sequence[tuple[str, str]]) -> str | None:
    """Why every reward and accuracy is 0 when none of the responses has a final answer to judge (``None`` when at
    least one has): how many never closed their thinking, hit the token limit, or wrote no ``\\boxed{}``.

    Args:
        responses: ``(response_text, finish_reason)`` per response (:attr:`Trajectory.response_text`).
    """
    if not responses or any(final_answer(text) is not None for text, _ in responses):
        return None
    open_thinking = sum(text.startswith("<think>") and THINK_CLOSE not in text for text, _ in responses)
    truncated = sum(finish in ("length", "budget") for _, finish in responses)
    no_box = sum("\\boxed{" not in text for text, _ in responses)
    reasons = [
        f"{open_thinking} never closed their thinking (no </think>)" if open_thinking else "",
        f"{truncated} hit the token limit (raise the token budget)" if truncated else "",
        f"{no_box} wrote no \\boxed{{}} (does the prompt ask for one?)" if no_box else "",
    ]
    return (
        f"none of {len(responses)} responses has a final answer to judge (a \\boxed{{}}, after </think> when the "
        f"model thinks): {'; '.join(r for r in reasons if r)}. Every reward and accuracy is 0."
    )


def trajectory_usage(trajectory: Trajectory) -> dict[str, Any]:
    """The per-response quantities the usage metrics need (also the fields of an eval ``generations.jsonl`` record)."""
    return {
        "model_tokens": trajectory.num_model_tokens,
        "tool_tokens": trajectory.num_tool_tokens,
        "calls": len(trajectory.tool_calls),
        "calls_ok": sum(c.result.ok for c in trajectory.tool_calls),
        "finish_reason": trajectory.finish_reason,
        "generation_s": trajectory.generation_s,
        "tool_s": trajectory.tool_s,
    }


def usage_metrics(records: Sequence[Mapping[str, Any]], correct: Sequence[bool]) -> dict[str, float]:
    """Accuracy and token/tool usage of responses, from :func:`trajectory_usage` records: the one implementation
    behind training logs (:func:`token_efficiency`) and evaluation reports.

    Returns:
        ``accuracy``; ``tokens_per_response`` (sampled + interpreter output), ``model_tokens_per_response``,
        ``tool_tokens_per_response``; ``tokens_per_correct`` (all tokens spent / correct answers; ``inf`` with none
        correct); ``tokens_correct`` / ``tokens_incorrect`` and ``model_tokens_correct`` / ``model_tokens_incorrect``
        (means over correct / incorrect responses); ``accuracy_per_1k_tokens``; ``tool_calls_per_response``;
        ``code_use_rate`` (share of responses with a call); ``code_success_rate`` (share of calls that ran without
        error); ``interpreter_time_share``; ``truncation_rate`` (responses that hit a token limit).
    """
    n = len(records)
    if n != len(correct):
        raise ValueError(f"{n} responses but {len(correct)} correctness flags")
    if n == 0:
        return {}

    def mean(xs: Sequence[float]) -> float:
        return sum(xs) / len(xs) if xs else 0.0

    total = [r["model_tokens"] + r["tool_tokens"] for r in records]
    model = [r["model_tokens"] for r in records]
    ok = [i for i, c in enumerate(correct) if c]
    bad = [i for i, c in enumerate(correct) if not c]
    calls = sum(r["calls"] for r in records)
    gen_s, tool_s = sum(r["generation_s"] for r in records), sum(r["tool_s"] for r in records)
    accuracy = len(ok) / n
    return {
        "accuracy": accuracy,
        "tokens_per_response": mean(total),
        "model_tokens_per_response": mean(model),
        "tool_tokens_per_response": mean(total) - mean(model),
        "tokens_per_correct": sum(total) / len(ok) if ok else float("inf"),
        "tokens_correct": mean([total[i] for i in ok]),
        "tokens_incorrect": mean([total[i] for i in bad]),
        "model_tokens_correct": mean([model[i] for i in ok]),
        "model_tokens_incorrect": mean([model[i] for i in bad]),
        "accuracy_per_1k_tokens": accuracy_per_kilotoken(accuracy, mean(total)),
        "tool_calls_per_response": calls / n,
        "code_use_rate": mean([float(r["calls"] > 0) for r in records]),
        "code_success_rate": sum(r["calls_ok"] for r in records) / calls if calls else 0.0,
        "interpreter_time_share": tool_s / (gen_s + tool_s) if gen_s + tool_s > 0 else 0.0,
        "truncation_rate": mean([float(r["finish_reason"] in ("length", "budget")) for r in records]),
    }


def token_efficiency(trajectories: Sequence[Trajectory], correct: Sequence[bool]) -> dict[str, float]:
    """:func:`usage_metrics` of trajectories, plus ``infrastructure_failure_rate`` (calls that failed in the sandbox).

    Args:
        trajectories: The responses.
        correct: Whether each response's answer was right.
    """
    if len(trajectories) != len(correct):
        raise ValueError(f"{len(trajectories)} trajectories but {len(correct)} correctness flags")
    if not trajectories:
        return {}
    out = usage_metrics([trajectory_usage(t) for t in trajectories], correct)
    out["infrastructure_failure_rate"] = rollout_statistics(trajectories)["infrastructure_failure_rate"]
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: the probability that at least one of ``k`` samples drawn without replacement from ``n``
    samples, ``c`` of them correct, is correct: ``1 - C(n-c, k) / C(n, k)`` (computed as a stable product)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def sample_metrics(
    correct: Sequence[Sequence[bool]],
    answers: Sequence[Sequence[str | None]] | None = None,
    ks: Sequence[int] = (1,),
) -> dict[str, float]:
    """Accuracy over several samples per problem.

    Args:
        correct: Per problem, whether each of its ``n`` samples is correct.
        answers: Per problem, each sample's extracted answer (normalised text; ``None`` when absent), for maj@n.
        ks: The ``k`` of pass@k to report (those above a problem's sample count are skipped).

    Returns:
        ``avg@n`` (mean correctness over all samples, CoRT's avg@16 / avg@4), ``pass@k`` for each ``k``, and with
        ``answers`` ``maj@n`` (the most frequent answer — ties broken by first occurrence — is correct).
    """
    if not correct:
        return {}
    n = min(len(c) for c in correct)
    if n == 0:
        raise ValueError("every problem needs at least one sample")
    out = {f"avg@{n}": sum(sum(c) / len(c) for c in correct) / len(correct)}
    for k in ks:
        if k <= n:
            out[f"pass@{k}"] = sum(pass_at_k(len(c), sum(c), k) for c in correct) / len(correct)
    if answers is not None:
        if len(answers) != len(correct):
            raise ValueError(f"{len(correct)} problems but answers for {len(answers)}")
        wins = 0
        for flags, ans in zip(correct, answers):
            votes: dict[str, int] = {}
            for a in ans:
                if a is not None:
                    votes[a] = votes.get(a, 0) + 1
            if votes:
                best = max(votes, key=lambda a: (votes[a], -ans.index(a)))
                wins += bool(flags[ans.index(best)])
        out[f"maj@{n}"] = wins / len(correct)
    return out


def accuracy_per_kilotoken(accuracy: float, tokens_per_response: float) -> float:
    """Accuracy per 1,000 tokens spent per response (higher is more token-efficient)."""
    return accuracy / (tokens_per_response / 1000.0) if tokens_per_response > 0 else 0.0


def budget_accuracy(
    lengths: Sequence[int],
    correct: Sequence[bool],
    budgets: Sequence[int],
    rescore: Callable[[int, int], bool] | None = None,
) -> dict[int, float]:
    """Accuracy when every response is cut at a token budget and scored again.

    A response that fits the budget keeps its score. A longer one is cut to ``budget`` tokens and rescored with
    ``rescore(index, budget)`` (e.g. decode the first ``budget`` completion tokens and check the answer in them);
    without ``rescore`` it counts as wrong (its answer, at the end, is cut off).

    Args:
        lengths: Tokens of each response (sampled + interpreter output).
        correct: Whether each full response is correct.
        budgets: Token budgets.
        rescore: ``(response index, budget) -> correct`` for responses longer than the budget.

    Returns:
        ``{budget: accuracy}``.
    """
    if len(lengths) != len(correct):
        raise ValueError(f"{len(lengths)} lengths but {len(correct)} correctness flags")
    n = len(lengths)
    out = {}
    for b in budgets:
        hits = 0
        for i, (length, ok) in enumerate(zip(lengths, correct)):
            if length <= b:
                hits += bool(ok)
            elif rescore is not None:
                hits += bool(rescore(i, b))
        out[b] = hits / n if n else 0.0
    return out
