"""Logs token-efficiency metrics of the training rollouts and of periodic validation rollouts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import lightning as L
from typing_extensions import override

from lightning_cort.metrics import token_efficiency
from lightning_cort.modules.base import RolloutModule
from lightning_cort.rollout.sampler import RolloutBatch

if TYPE_CHECKING:
    from lightning_cort.callbacks.sandbox import SandboxCallback
    from lightning_cort.formats.base import CodeFormat
    from lightning_cort.rollout.engine import RolloutConfig


class TokenEfficiencyCallback(L.Callback):
    """After each RL step, computes :func:`~lightning_cort.metrics.token_efficiency` on the trajectories of the step's
    :class:`~lightning_cort.rollout.sampler.RolloutBatch` and logs them as ``efficiency/<name>`` to every attached
    logger. Correctness is the module's :meth:`~lightning_cort.modules.base.RolloutModule.is_correct`.

    With ``val_rows`` it also rolls the policy out (greedy) on those rows every ``val_every_n_steps`` optimizer
    steps and at the end of training, in ``sandbox``, and logs the same metrics as ``val_efficiency/<name>`` (kept in
    ``val_history``). The metrics are those of evaluation reports (one implementation,
    :func:`~lightning_cort.metrics.usage_metrics`).

    Args:
        prog_bar: Show accuracy and tokens per response in the progress bar.
        val_rows: Rows with ``prompt`` and ``answer`` to validate on.
        val_every_n_steps: Validation period in optimizer steps.
        code_format: The policy's code format (needed with ``val_rows``).
        rollout_config: Rollout limits of validation (needed with ``val_rows``; sampled greedily).
        sandbox: The sandbox callback whose sandbox runs validation code (needed with ``val_rows``).
    """

    def __init__(
        self,
        prog_bar: bool = True,
        val_rows: Sequence[Mapping[str, Any]] | None = None,
        val_every_n_steps: int = 50,
        code_format: CodeFormat | None = None,
        rollout_config: RolloutConfig | None = None,
        sandbox: SandboxCallback | None = None,
    ) -> None:
        if val_rows and (code_format is None or rollout_config is None or sandbox is None):
            raise ValueError("validation rollouts need the policy's code_format, a rollout_config and the sandbox")
        if val_every_n_steps < 1:
            raise ValueError(f"val_every_n_steps must be >= 1, got {val_every_n_steps}")
        self.prog_bar = prog_bar
        self.val_rows = list(val_rows or [])
        self.val_every_n_steps = val_every_n_steps
        self.code_format = code_format
        self.rollout_config = rollout_config
        self.sandbox = sandbox
        self.history: list[dict[str, float]] = []
        self.val_history: list[dict[str, float]] = []
        self._last_val_step = -1

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if isinstance(batch, RolloutBatch) and batch.trajectories and isinstance(pl_module, RolloutModule):
            trajectories = batch.trajectories
            metrics = token_efficiency(trajectories, [pl_module.is_correct(t) for t in trajectories])
            self.history.append(metrics)
            for name, value in metrics.items():
                if math.isfinite(value):
                    shown = self.prog_bar and name in ("accuracy", "tokens_per_response")
                    pl_module.log(f"efficiency/{name}", value, prog_bar=shown, batch_size=len(trajectories))
        step = trainer.global_step
        if self.val_rows and step // self.val_every_n_steps > self._last_val_step // self.val_every_n_steps:
            self._validate(trainer, pl_module)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.val_rows and self._last_val_step != trainer.global_step:
            self._validate(trainer, pl_module, log=False)  # logging is closed at train end; kept in val_history

    def _validate(self, trainer: L.Trainer, pl_module: L.LightningModule, log: bool = True) -> None:
        from lightning_cort.evaluation import evaluate

        self._last_val_step = trainer.global_step
        assert self.code_format is not None and self.sandbox is not None
        metrics, _ = evaluate(
            pl_module.model,  # type: ignore[arg-type]
            pl_module.tokenizer,  # type: ignore[arg-type]
            self.val_rows,
            self.code_format,
            self.sandbox.sandbox,
            self.rollout_config,
        )
        metrics = {"step": float(trainer.global_step), **metrics}
        self.val_history.append(metrics)
        if log:
            for name, value in metrics.items():
                if name != "step" and math.isfinite(value):
                    pl_module.log(f"val_efficiency/{name}", value, batch_size=len(self.val_rows))
