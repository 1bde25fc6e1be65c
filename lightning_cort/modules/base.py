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
    """Base of :class:`SFTModule` and :class:`GRPOModule`: holds the policy and computes completion log-probs.

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
