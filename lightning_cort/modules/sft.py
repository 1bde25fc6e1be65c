"""Supervised fine-tuning on code-integrated traces, with interpreter output masked by provenance."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from typing_extensions import override

from lightning_cort.modules.base import PolicyModule
from lightning_cort.trajectory import TrajectoryBatch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class SFTModule(PolicyModule):
    """Next-token cross-entropy on the completion of each example.

    Batches are :class:`~lightning_cort.trajectory.TrajectoryBatch` (use
    :func:`~lightning_cort.data.trajectory_from_text` and :func:`~lightning_cort.trajectory.collate_trajectories`).

    Args:
        model: The causal LM.
        tokenizer: Its tokenizer.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        mask_tool_output: Exclude interpreter-output tokens from the loss (CoRT, ReTool); ``False`` trains on them
            too (R1-Code-Interpreter's ablation).
        warmup_steps: Linear warm-up steps of the learning rate.
        lr_schedule: ``constant`` after warm-up, or ``cosine`` decay to ``min_lr_ratio × lr`` at the last step.
        min_lr_ratio: Floor of the cosine schedule.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        mask_tool_output: bool = True,
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        min_lr_ratio: float = 0.05,
    ) -> None:
        super().__init__(model, tokenizer, lr=lr, weight_decay=weight_decay)
        self.mask_tool_output = mask_tool_output
        self.warmup_steps = warmup_steps
        self.lr_schedule = lr_schedule
        self.min_lr_ratio = min_lr_ratio

    @override
    def training_step(
        self, batch: TrajectoryBatch | tuple[TrajectoryBatch, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        """Token-mean cross-entropy over the trained tokens. A batch may come with per-example weights ``[B]``
        (``(batch, weights)``, as RFT's code-decision weighting gives): each example's tokens count ``weight``
        times, over the same token count."""
        data, weights = batch if isinstance(batch, tuple) else (batch, None)
        logp = self.completion_logprobs(data)  # [B, T]
        mask = (data.loss_mask if self.mask_tool_output else data.completion_mask).to(self.device, logp.dtype)
        denom = mask.sum().clamp(min=1.0)
        if weights is not None:
            mask = mask * weights.to(self.device, logp.dtype)[:, None]
        loss = -(logp * mask).sum() / denom
        self.log("train/sft_loss", loss, prog_bar=True, batch_size=len(data))
        return loss

    @override
    def configure_optimizers(self):  # type: ignore[override]
        opt = super().configure_optimizers()
        if not self.warmup_steps and self.lr_schedule == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self.lr_schedule == "cosine" else 0
        warm, floor = self.warmup_steps, self.min_lr_ratio

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if not total:
                return 1.0
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
