"""Supervised fine-tuning on code-integrated traces, with interpreter output masked by provenance."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from typing_extensions import override

from lightning_cort.modules.base import PolicyModule
from lightning_cort.trajectory import TrajectoryBatch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class SFTSettings:
    """What :class:`SFTModule` trains with (the recipes' ``sft`` section adds the data and batch settings).

    Attributes:
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: Fraction of the optimizer steps with a linear learning-rate warm-up.
        lr_schedule: ``cosine`` decay to ``min_lr_ratio × lr`` at the last step after the warm-up, or ``constant``.
        min_lr_ratio: Floor of the cosine schedule.
        mask_tool_output: Keep interpreter output out of the loss (CoRT, ReTool); ``false`` trains on it too
            (R1-Code-Interpreter's ablation).
    """

    lr: float = 1.5e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.05
    mask_tool_output: bool = True

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


class SFTModule(PolicyModule):
    """Next-token cross-entropy on the completion of each example.

    Batches are :class:`~lightning_cort.trajectory.TrajectoryBatch` (use
    :func:`~lightning_cort.data.trajectory_from_text` and :func:`~lightning_cort.trajectory.collate_trajectories`).

    Args:
        model: The causal LM.
        tokenizer: Its tokenizer.
        config: Optimizer, schedule and masking (the recipes pass their ``sft`` section whole).
    """

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: SFTSettings | None = None
    ) -> None:
        config = config if config is not None else SFTSettings()
        super().__init__(model, tokenizer, lr=config.lr, weight_decay=config.weight_decay)
        self.config = config

    @override
    def training_step(
        self, batch: TrajectoryBatch | tuple[TrajectoryBatch, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        """Token-mean cross-entropy over the trained tokens. A batch may come with per-example weights ``[B]``
        (``(batch, weights)``, as RFT's code-decision weighting gives): each example's tokens count ``weight``
        times, over the same token count."""
        data, weights = batch if isinstance(batch, tuple) else (batch, None)
        logp = self.completion_logprobs(data)  # [B, T]
        mask = (data.loss_mask if self.config.mask_tool_output else data.completion_mask).to(self.device, logp.dtype)
        denom = mask.sum().clamp(min=1.0)
        if weights is not None:
            mask = mask * weights.to(self.device, logp.dtype)[:, None]
        loss = -(logp * mask).sum() / denom
        self.log("train/sft_loss", loss, prog_bar=True, batch_size=len(data))
        return loss

    @override
    def configure_optimizers(self):  # type: ignore[override]
        opt = super().configure_optimizers()
        c = self.config
        if not c.warmup_ratio and c.lr_schedule == "constant":
            return opt
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        total = steps if c.lr_schedule == "cosine" else 0
        warm, floor = (max(1, int(steps * c.warmup_ratio)) if c.warmup_ratio else 0), c.min_lr_ratio

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if not total:
                return 1.0
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
