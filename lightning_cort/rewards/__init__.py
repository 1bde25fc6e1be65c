"""Rewards: answer extraction, math equivalence and the seed systems' reward functions."""

from lightning_cort.rewards.functions import (
    RewardFn,
    combine,
    correctness_reward,
    cort_reward,
    format_reward,
    is_correct,
    retool_reward,
    successful_code_output,
    tool_use_reward,
)
from lightning_cort.rewards.math import final_answer, is_equivalent, last_boxed

__all__ = [
    "RewardFn",
    "combine",
    "correctness_reward",
    "cort_reward",
    "final_answer",
    "format_reward",
    "is_correct",
    "is_equivalent",
    "last_boxed",
    "retool_reward",
    "successful_code_output",
    "tool_use_reward",
]
