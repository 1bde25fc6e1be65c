"""Greedy (or sampled) evaluation of a policy on dataset rows with the rollout engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from lightning_cort.metrics import token_efficiency
from lightning_cort.rewards.functions import is_correct
from lightning_cort.rollout.backends.base import SamplingConfig
from lightning_cort.rollout.backends.hf import HFBackend
from lightning_cort.rollout.engine import RolloutConfig, RolloutEngine
from lightning_cort.trajectory import Trajectory

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lightning_cort.formats.base import CodeFormat
    from lightning_cort.sandbox.base import Sandbox


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    code_format: CodeFormat,
    sandbox: Sandbox,
    config: RolloutConfig | None = None,
    *,
    n: int = 1,
    sampling: SamplingConfig | None = None,
    batch_size: int = 64,
) -> tuple[dict[str, float], list[Trajectory]]:
    """Roll out every row (``prompt`` field) and score it against its ``answer``.

    Args:
        model: The policy (put in eval mode for the duration).
        tokenizer: Its tokenizer.
        rows: Rows with ``prompt`` and ``answer``.
        code_format: The policy's code format.
        sandbox: Executes the code.
        config: Rollout limits.
        n: Samples per row.
        sampling: Defaults to greedy decoding.
        batch_size: Rows per generation batch.

    Returns:
        ``(metrics, trajectories)`` with :func:`~lightning_cort.metrics.token_efficiency` metrics.
    """
    config = config or RolloutConfig()
    sampling = sampling or SamplingConfig(temperature=0.0)
    engine = RolloutEngine(HFBackend(model, tokenizer), tokenizer, code_format, sandbox, config)
    was_training = model.training
    model.eval()
    trajectories: list[Trajectory] = []
    try:
        with torch.no_grad():
            for i in range(0, len(rows), batch_size):
                chunk = rows[i : i + batch_size]
                prompts = engine.encode_prompts([r["prompt"] for r in chunk])
                trajectories.extend(engine.generate(prompts, chunk, n=n, sampling=sampling))
    finally:
        model.train(was_training)
    correct = [is_correct(t, t.row) for t in trajectories]
    return token_efficiency(trajectories, correct), trajectories
