"""Logs token-efficiency metrics of the training rollouts."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from typing_extensions import override

from lightning_cort.metrics import token_efficiency
from lightning_cort.rewards.functions import is_correct


class TokenEfficiencyCallback(L.Callback):
    """After each training step, computes :func:`~lightning_cort.metrics.token_efficiency` on the step's rollouts
    (``pl_module.last_rollouts``) and logs them as ``efficiency/<name>`` to every attached logger.

    Correctness is the module's ``is_correct(trajectory, row)`` when it has one, else the boxed-answer check.

    Args:
        prog_bar: Show accuracy and tokens per response in the progress bar.
    """

    def __init__(self, prog_bar: bool = True) -> None:
        self.prog_bar = prog_bar
        self.history: list[dict[str, float]] = []

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        trajectories = getattr(pl_module, "last_rollouts", None)
        if not trajectories:
            return
        check = getattr(pl_module, "is_correct", is_correct)
        metrics = token_efficiency(trajectories, [check(t, t.row) for t in trajectories])
        self.history.append(metrics)
        for name, value in metrics.items():
            if math.isfinite(value):
                shown = self.prog_bar and name in ("accuracy", "tokens_per_response")
                pl_module.log(f"efficiency/{name}", value, prog_bar=shown, batch_size=len(trajectories))
