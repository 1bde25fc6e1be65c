"""Shared parts of the training modules: the policy, its tokenizer, and completion log-probabilities."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L
import torch

from lightning_cort.losses import entropy_from_logits, token_logprobs
from lightning_cort.trajectory import TrajectoryBatch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lightning_cort.rollout.sampler import RolloutSampler
    from lightning_cort.trajectory import Trajectory


class PolicyModule(L.LightningModule):
    """Base of the training modules: holds the policy, computes completion log-probs, and shards the policy with
    FSDP2 under ``ModelParallelStrategy`` (:meth:`configure_model`).

    Args:
        model: The causal LM to train.
        tokenizer: Its tokenizer.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    #: Completion positions whose logits are materialised at a time (``None``: all at once). Long completions times a
    #: large vocabulary make the logits the largest tensor of a step (16k positions × 152k × fp32 ≈ 10 GB); in chunks
    #: under activation checkpointing only one chunk's logits exist at a time. Used on one device and under DDP;
    #: FSDP2-sharded policies compute all positions at once.
    logprob_chunk_size: int | None = None
    #: Compute log-probs on the batch's sequences packed into rows without padding
    #: (:func:`~lightning_cort.packing.pack_batch`; the same values as the padded batch, less work when lengths vary).
    padding_free: bool = False

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, lr: float = 1e-5, weight_decay: float = 0.0
    ) -> None:
        from lightning_cort.models.policy import contiguous_head_inputs

        super().__init__()
        self.model = contiguous_head_inputs(model)
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
        if not return_logits and self.padding_free:
            return self._packed(batch, temperature, entropy=False)[0]
        if not return_logits and self._chunking(t):
            return self._chunked(batch, temperature, entropy=False)[0]
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

    def completion_logprobs_and_entropy(
        self, batch: TrajectoryBatch, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of the completion tokens and the entropy of ``softmax(logits / temperature)`` at each position.
        ``([B, T], [B, T])``"""
        batch = batch.to(self.device)
        if self.padding_free or self._chunking(batch.completion_ids.shape[1]):
            packed = self.padding_free
            logp, entropy = (self._packed if packed else self._chunked)(batch, temperature, entropy=True)
            assert entropy is not None
            return logp, entropy
        logp, logits = self.completion_logprobs(batch, temperature, return_logits=True)
        return logp, entropy_from_logits(logits / temperature)

    def _chunking(self, t: int) -> bool:
        chunk = self.logprob_chunk_size
        if not chunk or chunk >= t or getattr(self, "_fsdp2_sharded", False):
            return False
        return getattr(self.model.config, "final_logit_softcapping", None) is None  # the head is a plain projection

    def _chunked(
        self, batch: TrajectoryBatch, temperature: float, *, entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoder hidden states once, then the output head and log-softmax per chunk of positions (:meth:`_head`)."""
        from lightning_cort.models.policy import is_peft_model

        base = self.model.get_base_model() if is_peft_model(self.model) else self.model  # type: ignore[operator]
        t = batch.completion_ids.shape[1]
        hidden = base.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).last_hidden_state[:, -(t + 1) : -1]  # position P-1+k predicts completion token k; [B, T, H]
        size = self.logprob_chunk_size
        assert size is not None
        pieces = [(hidden[:, i : i + size], batch.completion_ids[:, i : i + size]) for i in range(0, t, size)]
        logps, ents = self._head(base, pieces, temperature, entropy)  # chunks of columns: views, no copy
        return torch.cat(logps, dim=1), (torch.cat(ents, dim=1) if entropy else None)

    def _packed(
        self, batch: TrajectoryBatch, temperature: float, *, entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs (and entropies) of the completion tokens with the sequences packed into rows without padding:
        the decoder once over the packed rows, then the output head on the positions that predict completion tokens
        only (:meth:`_head`), the values put back into the padded ``[B, T]`` layout."""
        from lightning_cort.models.policy import is_peft_model
        from lightning_cort.packing import pack_batch

        packed = pack_batch(batch, self.tokenizer.pad_token_id)
        base = self.model.get_base_model() if is_peft_model(self.model) else self.model  # type: ignore[operator]
        hidden = base.model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False)
        states = hidden.last_hidden_state.flatten(0, 1)[packed.predictors]  # [M, H]
        size = self.logprob_chunk_size or max(1, len(states))
        pieces = [(states[i : i + size], packed.targets[i : i + size]) for i in range(0, len(states), size)]
        logps, ents = self._head(base, pieces, temperature, entropy)
        if not logps:  # no completion tokens at all
            zeros = states.new_zeros(packed.shape)
            return zeros, (zeros if entropy else None)
        return packed.unpack(torch.cat(logps)), (packed.unpack(torch.cat(ents)) if entropy else None)

    @staticmethod
    def _head(
        base: Any, pieces: list[tuple[torch.Tensor, torch.Tensor]], temperature: float, entropy: bool
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The output head, log-softmax (and entropy) on each piece of hidden states ``[..., H]`` and the targets they
        predict ``[...]``, each under activation checkpointing so that only one piece's logits exist at once (they
        are recomputed in the backward pass). Returns the log-probs and entropies per piece (entropies of zeros
        without ``entropy``)."""
        from torch.utils.checkpoint import checkpoint

        head = base.get_output_embeddings()
        softcap = getattr(base.config, "final_logit_softcapping", None)

        def piece(h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = head(h)
            if softcap is not None:
                logits = torch.tanh(logits / softcap) * softcap
            logp = token_logprobs(logits, y, temperature)
            return logp, (entropy_from_logits(logits / temperature) if entropy else torch.zeros_like(logp))

        logps, ents = [], []
        for h, y in pieces:
            lp, ent = checkpoint(piece, h, y, use_reentrant=False) if torch.is_grad_enabled() else piece(h, y)
            logps.append(lp)
            ents.append(ent)
        return logps, ents


class RolloutModule(PolicyModule):
    """Base of the modules that learn from their own rollouts (:class:`~lightning_cort.modules.GRPOModule`,
    :class:`~lightning_cort.modules.RFTModule`): the protocol :class:`~lightning_cort.callbacks.RolloutCallback`
    serves.

    The callback connects a :class:`~lightning_cort.rollout.sampler.RolloutSampler` in its ``setup``
    (:meth:`connect_rollouts`) and fills every :class:`~lightning_cort.rollout.sampler.RolloutBatch` of the
    dataloader with :attr:`samples_per_prompt` trajectories per row before ``training_step`` receives it; a module
    that samples on its own schedule calls :attr:`rollout_sampler` itself. Correctness for the token-efficiency
    metrics is :meth:`is_correct` (override it with the reward for a task whose answers are not boxed).
    """

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, lr: float = 1e-5, weight_decay: float = 0.0
    ) -> None:
        super().__init__(model, tokenizer, lr=lr, weight_decay=weight_decay)
        #: Connected by the rollout callback at setup.
        self.rollout_sampler: RolloutSampler | None = None

    @property
    def samples_per_prompt(self) -> int:
        """Trajectories sampled per prompt row."""
        raise NotImplementedError

    def connect_rollouts(self, sampler: RolloutSampler) -> None:
        """Receive the sampler (called by the rollout callback in its ``setup``)."""
        self.rollout_sampler = sampler

    def is_correct(self, trajectory: Trajectory) -> bool:
        """Whether a trajectory's final answer is right (default: the toolkit's answer judge against
        ``row["answer"]``)."""
        from lightning_cort.rewards.functions import is_correct

        return is_correct(trajectory, trajectory.row)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the random streams rollouts draw from, so a resumed run samples what the uninterrupted one would."""
        import random

        import numpy as np

        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            # Plain values and tensors only: Lightning loads checkpoints with torch.load(weights_only=True).
            "numpy": [v.tolist() if isinstance(v, np.ndarray) else v for v in np.random.get_state()],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the random streams of :meth:`on_save_checkpoint` (Lightning saves from rank 0 only, so under DDP
        every rank continues rank 0's streams)."""
        import random

        import numpy as np

        states = checkpoint.get("rng_states")
        if not states:
            return
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
        random.setstate(states["python"])
        name, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.rollout_sampler is None:
            raise RuntimeError(
                f"{type(self).__name__} learns from rollouts: add lightning_cort.callbacks.RolloutCallback (and a "
                "SandboxCallback) to the Trainer's callbacks"
            )
