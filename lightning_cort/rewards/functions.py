"""Reward functions: plain callables ``(trajectory, row) -> float``, composable with :func:`combine`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightning_cort.answers import check_answer
from lightning_cort.rewards.math import final_answer
from lightning_cort.trajectory import Trajectory

RewardFn = Callable[[Trajectory, Mapping[str, Any]], float]


def is_correct(trajectory: Trajectory, row: Mapping[str, Any]) -> bool:
    r"""Whether the trajectory's final answer equals ``row["answer"]``: the last ``\boxed{}`` of the response (after
    ``</think>`` when it thinks; see :mod:`lightning_cort.rewards.math`), judged by
    :func:`~lightning_cort.answers.check_answer` in ``strict`` mode."""
    return check_answer(trajectory.response_text, str(row["answer"]), mode="strict")


def correctness_reward(trajectory: Trajectory, row: Mapping[str, Any]) -> float:
    """1 for a correct final answer, else 0."""
    return float(is_correct(trajectory, row))


def successful_code_output(trajectory: Trajectory) -> bool:
    """Whether at least one execution succeeded with non-empty output (CoRT's test, on results not regexes)."""
    return any(c.result.ok and c.result.stdout.strip() not in ("", "[]", "Done") for c in trajectory.tool_calls)


def cort_reward(trajectory: Trajectory, row: Mapping[str, Any], code_penalty: float = -0.1) -> float:
    """CoRT's reward: 1/0 for the answer, plus ``code_penalty`` (−0.1) when no code output succeeded — which
    includes writing no code at all, as in CoRT's code."""
    penalty = 0.0 if successful_code_output(trajectory) else code_penalty
    return correctness_reward(trajectory, row) + penalty


def retool_reward(trajectory: Trajectory, row: Mapping[str, Any]) -> float:
    """ReTool's reward: +1 for a correct answer, −1 otherwise."""
    return 1.0 if is_correct(trajectory, row) else -1.0


def format_reward(trajectory: Trajectory, row: Mapping[str, Any]) -> float:
    r"""1 when the response has a final answer (a ``\boxed{}``, after ``</think>`` when it thinks) and generation ended
    on its own (not cut by a limit), else 0: a shaping term for ``combine``."""
    ok = trajectory.finish_reason == "eos" and final_answer(trajectory.response_text) is not None
    return 1.0 if ok else 0.0


def tool_use_reward(trajectory: Trajectory, row: Mapping[str, Any]) -> float:
    """1 when at least one execution succeeded with output, else 0 (CoRT's code penalty is ``-0.1 ×`` the
    complement): a shaping term for ``combine``."""
    return 1.0 if successful_code_output(trajectory) else 0.0


def combine(terms: Sequence[tuple[RewardFn, float]]) -> RewardFn:
    """A weighted sum of reward functions: ``combine([(cort_reward, 1.0), (my_format_reward, 0.2)])``."""

    def reward(trajectory: Trajectory, row: Mapping[str, Any]) -> float:
        return sum(w * fn(trajectory, row) for fn, w in terms)

    return reward
