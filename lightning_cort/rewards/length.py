"""Length terms of the RL reward: DAPO's soft overlong punishment, and which completions count as truncated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lightning_cort.trajectory import Trajectory


def overlong_penalty(lengths: torch.Tensor, max_length: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al., 2025, Eq. 13), scaled by ``factor`` as verl's
    ``overlong_penalty_factor``: 0 up to ``max_length - buffer`` tokens, then falling linearly to ``-factor`` at
    ``max_length``, and ``-factor`` beyond it. It is added to the task reward.

    Args:
        lengths: ``[B]`` completion lengths in tokens.
        max_length: ``L_max``, the completion budget.
        buffer: ``L_cache``, the length of the punishment interval before it (``0 < buffer <= max_length``).
        factor: The penalty at ``max_length``.

    Returns:
        ``[B]`` penalties, ``<= 0``.
    """
    if not 0 < buffer <= max_length:
        raise ValueError(f"the overlong buffer must be in (0, max_length={max_length}], got {buffer}")
    exceed = lengths.float() - (max_length - buffer)  # [B]
    return -factor * (exceed / buffer).clamp(min=0.0, max=1.0)


def truncated(trajectories: Sequence[Trajectory]) -> torch.Tensor:
    """``[B]`` whether each completion was cut off instead of ending with end-of-sequence (TRL's definition for
    ``mask_truncated_completions``: the token budget, the per-round limit or the round limit ended it)."""
    return torch.tensor([t.finish_reason != "eos" for t in trajectories], dtype=torch.bool)
