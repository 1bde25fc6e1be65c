"""Generates rollouts when the module needs them and hands them over."""

from __future__ import annotations

from typing import Any

import lightning as L
from typing_extensions import override

from lightning_cort.callbacks.sandbox import SandboxCallback
from lightning_cort.formats.base import CodeFormat
from lightning_cort.metrics import rollout_statistics
from lightning_cort.rollout.backends.hf import HFBackend
from lightning_cort.rollout.engine import RolloutConfig, RolloutEngine
from lightning_cort.trajectory import Trajectory


class RolloutCallback(L.Callback):
    """At the start of every training step, samples ``group_size`` trajectories per prompt row of the batch with the
    current policy and calls ``pl_module.receive_rollouts(trajectories)`` (RL). A module with a ``rollout_engine``
    attribute instead of ``receive_rollouts`` (RFT) gets the engine and samples once per round itself.

    The batch is a list of rows with a ``prompt`` (the user message). The sandbox comes from the Trainer's
    :class:`SandboxCallback`; generation uses the module's live weights (HF backend), so no weight sync is needed.

    Logs ``rollout/tokens_per_s``, ``rollout/interpreter_time_share``, ``rollout/calls_per_trajectory``,
    ``rollout/truncation_rate`` and ``rollout/infrastructure_failure_rate``.

    Args:
        code_format: The code format of the policy.
        config: Rollout limits and sampling.
        group_size: Trajectories per prompt (defaults to the module's ``group_size``).
    """

    def __init__(
        self, code_format: CodeFormat, config: RolloutConfig | None = None, group_size: int | None = None
    ) -> None:
        self.code_format = code_format
        self.config = config or RolloutConfig()
        self.group_size = group_size
        self.engine: RolloutEngine | None = None

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sandbox_cb = next((cb for cb in trainer.callbacks if isinstance(cb, SandboxCallback)), None)
        if sandbox_cb is None:
            raise RuntimeError("RolloutCallback needs a SandboxCallback in the Trainer's callbacks")
        model, tokenizer = pl_module.model, pl_module.tokenizer  # type: ignore[attr-defined]
        self.engine = RolloutEngine(
            HFBackend(model, tokenizer), tokenizer, self.code_format, sandbox_cb.sandbox, self.config
        )
        if hasattr(pl_module, "rollout_engine"):  # modules that sample per round (RFT) drive the engine themselves
            pl_module.rollout_engine = self.engine

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        assert self.engine is not None
        if not hasattr(pl_module, "receive_rollouts"):
            return  # e.g. RFTModule: it samples once per round, when its dataloader is built
        rows = list(batch)
        missing = [i for i, r in enumerate(rows) if "prompt" not in r]
        if missing:
            raise ValueError(f"rows {missing} of the batch have no 'prompt' field (the user message)")
        group = self.group_size or int(getattr(pl_module, "group_size", 1))
        self.engine.policy_version = trainer.global_step  # the weights of the current optimizer step sample
        was_training = pl_module.training
        pl_module.eval()
        try:
            trajectories = self.engine.generate(self.engine.encode_prompts([r["prompt"] for r in rows]), rows, n=group)
        finally:
            pl_module.train(was_training)
        self._log(pl_module, trajectories)
        pl_module.receive_rollouts(trajectories)  # type: ignore[attr-defined]

    def _log(self, pl_module: L.LightningModule, trajectories: list[Trajectory]) -> None:
        stats = rollout_statistics(trajectories)
        names = {"tool_calls_per_response": "calls_per_trajectory"}
        for key, value in stats.items():
            pl_module.log(f"rollout/{names.get(key, key)}", value, batch_size=len(trajectories))
