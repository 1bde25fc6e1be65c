"""Rewards: answer extraction and the seed systems' reward functions (answers are judged by
:func:`lightning_cort.answers.check_answer`).

Names are loaded on first use, so ``lightning_cort.rewards.math`` (pure text, used by answer-checking worker
processes) can be imported without the torch-based trajectory types the reward functions need.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "RewardFn": "lightning_cort.rewards.functions",
    "combine": "lightning_cort.rewards.functions",
    "correctness_reward": "lightning_cort.rewards.functions",
    "cort_reward": "lightning_cort.rewards.functions",
    "format_reward": "lightning_cort.rewards.functions",
    "is_correct": "lightning_cort.rewards.functions",
    "retool_reward": "lightning_cort.rewards.functions",
    "successful_code_output": "lightning_cort.rewards.functions",
    "tool_use_reward": "lightning_cort.rewards.functions",
    "overlong_penalty": "lightning_cort.rewards.length",
    "truncated": "lightning_cort.rewards.length",
    "final_answer": "lightning_cort.rewards.math",
    "last_boxed": "lightning_cort.rewards.math",
    "opens_thinking": "lightning_cort.rewards.math",
    "response_text": "lightning_cort.rewards.math",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_cort.rewards' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
