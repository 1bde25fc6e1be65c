"""Shared parts of the training modules: the policy, its tokenizer, and completion log-probabilities."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L
import torch

from lightning_cort.losses import token_logprobs
from lightning_cort.trajectory import TrajectoryBatch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class PolicyModule(L.LightningModule):
    """Base of the training modules: holds the policy, computes completion log-probs, and shards the policy with
    FSDP2 under ``ModelParallelStrategy`` (:meth:`configure_model`).

    Args:
        model: The causal LM to train.
        tokenizer: Its tokenizer.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, lr: float = 1e-5, weight_decay: float = 0.0
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.lr = lr
        self.weight_decay = weight_decay

    def configure_model(self) -> None:
        """Shard the policy (and a frozen reference copy, if the module keeps one) with FSDP2 when the Trainer runs
        ``ModelParallelStrategy``; a no-op on one device and under DDP, so the same module code serves all three."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        if self._trainer is None or not isinstance(self.trainer.strategy, ModelParallelStrategy):
            return
        if getattr(self, "_fsdp2_sharded", False):
            return
        from lightning_cort.models.policy import shard_fsdp2

        shard_fsdp2(self.model, self.device_mesh)
        reference = getattr(self, "reference", None)
        if isinstance(reference, torch.nn.Module):
            shard_fsdp2(reference, self.device_mesh)
        self._fsdp2_sharded = True

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def completion_logprobs(
        self, batch: TrajectoryBatch, temperature: float = 1.0, return_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of the completion tokens under the current policy. ``[B, T]``

        Only the logits of the completion positions are materialised (``logits_to_keep``).
        """
        batch = batch.to(self.device)
        t = batch.completion_ids.shape[1]
        out = self.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            logits_to_keep=t + 1,
            use_cache=False,
        )
        logits = out.logits[:, :-1]  # position P-1+k predicts completion token k; [B, T, V]
        logp = token_logprobs(logits, batch.completion_ids, temperature)
        return (logp, logits) if return_logits else logp
