"""GRPO: group-relative advantages and the clipped policy-gradient loss, trained on rollouts handed over by
:class:`~lightning_cort.callbacks.RolloutCallback`."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from typing_extensions import override

from lightning_cort.losses import (
    AdvantageScale,
    ISMode,
    KLEstimator,
    LossType,
    group_advantages,
    policy_loss,
)
from lightning_cort.modules.base import PolicyModule
from lightning_cort.rewards.functions import RewardFn, correctness_reward
from lightning_cort.trajectory import Trajectory, collate_trajectories

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ImportanceSampling = Literal["none", "token", "sequence"]


class GRPOModule(PolicyModule):
    """Group Relative Policy Optimization over code-interleaved trajectories.

    One training step is one RL step: the rollout callback samples ``group_size`` trajectories per prompt of the
    batch and hands them to :meth:`receive_rollouts`; :meth:`training_step` scores them, computes group advantages,
    and runs ``ppo_epochs × minibatches`` optimizer steps of the clipped surrogate (manual optimization).
    Interpreter-output tokens never enter the loss (their ``loss_mask`` is 0), and trajectories hit by sandbox
    failures are excluded by default.

    Subclass and override :meth:`score` for a new reward, or pass ``reward_fn``. Because optimization is manual,
    ``trainer.global_step`` counts optimizer steps: give the Trainer ``max_steps = rl_steps × ppo_epochs ×
    minibatches`` (or bound the run by the dataloader's length).

    Args:
        model: The policy.
        tokenizer: Its tokenizer.
        reward_fn: ``(trajectory, row) -> float``.
        group_size: Trajectories per prompt (``G``).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        loss_type: ``grpo``, ``dapo``, ``bnpo`` or ``dr_grpo`` aggregation.
        clip_low: PPO ε below 1.
        clip_high: PPO ε above 1 (clip-higher when larger than ``clip_low``).
        dual_clip: The constant ``c > 1`` of dual-clip PPO (caps the loss of negative-advantage tokens), or ``None``.
        max_completion_length: Dr. GRPO's constant denominator (the generation budget); default: the batch's longest
            completion.
        advantage_scale: ``group``, ``batch`` or ``none``.
        kl_coef: β of the KL penalty against the initial policy (0 disables it). For a peft model (one with
            ``disable_adapter``) the reference is the policy with its adapters disabled, so no copy is made;
            otherwise it is a frozen copy of the policy made at ``setup``.
        kl_estimator: ``k1``, ``k2`` or ``k3``.
        entropy_coef: Weight of the entropy bonus (``loss -= entropy_coef · entropy``; CoRT: 0.001). The entropy of
            ``softmax(logits / temperature)`` is computed only when this is not 0.
        importance_sampling: Correct for rollouts sampled by another engine (vLLM) than the trainer with the weight
            ``exp(old_logprobs - sampling_logprobs)``: ``none``, per ``token``, or per ``sequence`` (see
            :func:`~lightning_cort.losses.importance_weights`). Needs every trajectory's ``sampling_logprobs``
            (``SamplingConfig(logprobs=True)``).
        is_mode: ``truncate`` the weight at ``is_cap`` (TIS) or ``mask`` tokens / sequences above it (MIS).
        is_cap: Upper bound ``>= 1`` of the importance weight.
        ppo_epochs: Passes over each rollout batch.
        minibatches: Optimizer steps per pass.
        micro_batch_size: Trajectories per forward/backward pass (``None``: a whole minibatch at once). Smaller
            micro-batches accumulate gradients into the same optimizer step with the same result (every loss type
            is normalised over the whole minibatch, as if it were one batch; ``bnpo`` normalises per micro-batch by
            definition), trading time for activation memory; old and reference log-probs are computed in
            micro-batches too.
        temperature: Sampling temperature; log-probs are computed from ``logits / temperature`` to match.
        max_grad_norm: Gradient clipping (0 disables it).
        exclude_infrastructure_failures: Drop trajectories whose executions failed in the sandbox from the loss.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        reward_fn: RewardFn = correctness_reward,
        group_size: int = 8,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        loss_type: LossType = "dapo",
        clip_low: float = 0.2,
        clip_high: float = 0.2,
        dual_clip: float | None = None,
        max_completion_length: int | None = None,
        advantage_scale: AdvantageScale = "group",
        kl_coef: float = 0.0,
        kl_estimator: KLEstimator = "k3",
        entropy_coef: float = 0.0,
        importance_sampling: ImportanceSampling = "none",
        is_mode: ISMode = "truncate",
        is_cap: float = 2.0,
        ppo_epochs: int = 1,
        minibatches: int = 1,
        micro_batch_size: int | None = None,
        temperature: float = 1.0,
        max_grad_norm: float = 1.0,
        exclude_infrastructure_failures: bool = True,
    ) -> None:
        super().__init__(model, tokenizer, lr=lr, weight_decay=weight_decay)
        errors = []
        if group_size < 2:
            errors.append(f"group_size must be >= 2 for group advantages, got {group_size}")
        if ppo_epochs < 1 or minibatches < 1:
            errors.append(f"ppo_epochs and minibatches must be >= 1, got {ppo_epochs} and {minibatches}")
        if micro_batch_size is not None and micro_batch_size < 1:
            errors.append(f"micro_batch_size must be >= 1 or None, got {micro_batch_size}")
        if temperature <= 0:
            errors.append(f"temperature must be > 0 for training log-probs, got {temperature}")
        if importance_sampling not in get_args(ImportanceSampling):
            errors.append(f"importance_sampling must be 'none', 'token' or 'sequence', got {importance_sampling!r}")
        if is_mode not in get_args(ISMode):
            errors.append(f"is_mode must be 'truncate' or 'mask', got {is_mode!r}")
        if not is_cap >= 1.0:
            errors.append(f"is_cap must be >= 1 (on-policy tokens have weight 1), got {is_cap}")
        if dual_clip is not None and not dual_clip > 1.0:
            errors.append(f"dual_clip must be > 1 or None, got {dual_clip}")
        if errors:
            raise ValueError("invalid GRPOModule arguments: " + "; ".join(errors))
        self.automatic_optimization = False
        self.reward_fn = reward_fn
        self.group_size = group_size
        self.loss_type: LossType = loss_type
        self.clip_low = clip_low
        self.clip_high = clip_high
        self.dual_clip = dual_clip
        self.max_completion_length = max_completion_length
        self.advantage_scale: AdvantageScale = advantage_scale
        self.kl_coef = kl_coef
        self.kl_estimator: KLEstimator = kl_estimator
        self.entropy_coef = entropy_coef
        self.importance_sampling: ImportanceSampling = importance_sampling
        self.is_mode: ISMode = is_mode
        self.is_cap = is_cap
        self.ppo_epochs = ppo_epochs
        self.minibatches = minibatches
        self.micro_batch_size = micro_batch_size
        self.temperature = temperature
        self.max_grad_norm = max_grad_norm
        self.exclude_infrastructure_failures = exclude_infrastructure_failures
        #: Frozen copy of the initial policy for the KL term; stays ``None`` for peft policies (adapters disabled).
        self.reference: PreTrainedModel | None = None
        self._rollouts: list[Trajectory] | None = None
        #: The last scored rollouts, for callbacks (token efficiency, logging).
        self.last_rollouts: list[Trajectory] = []
        self.last_rewards: torch.Tensor = torch.zeros(0)

    # -- hooks -----------------------------------------------------------------------------------------------------
    @override
    def setup(self, stage: str) -> None:
        from lightning_cort.callbacks.rollout import RolloutCallback

        if stage == "fit" and not any(isinstance(cb, RolloutCallback) for cb in self.trainer.callbacks):
            raise RuntimeError(
                "GRPOModule needs rollouts: add lightning_cort.callbacks.RolloutCallback (and a SandboxCallback) "
                "to the Trainer's callbacks"
            )
        if self.kl_coef and self.reference is None and not self._reference_is_base_model:
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)

    def receive_rollouts(self, trajectories: Sequence[Trajectory]) -> None:
        """Hand the trajectories of the current step to the module (called by the rollout callback)."""
        if len(trajectories) % self.group_size:
            raise ValueError(f"{len(trajectories)} trajectories is not a multiple of group_size={self.group_size}")
        self._rollouts = list(trajectories)

    # -- the RL step -----------------------------------------------------------------------------------------------
    @override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self._rollouts is None:
            raise RuntimeError("no rollouts for this step: is RolloutCallback attached to the Trainer?")
        trajectories, self._rollouts = self._rollouts, None
        rewards = self.score(trajectories)  # [B]
        advantages = group_advantages(rewards, self.group_size, scale=self.advantage_scale)  # [B]
        data = collate_trajectories(trajectories, self.tokenizer.pad_token_id).to(self.device)
        keep = torch.tensor(
            [not (self.exclude_infrastructure_failures and t.has_infrastructure_failure) for t in trajectories],
            device=self.device,
        )
        mask = data.loss_mask * keep[:, None]  # [B, T]
        with torch.no_grad():
            old_logprobs = self._in_micro_batches(data, lambda mb: self.completion_logprobs(mb, self.temperature))
            ref_logprobs = self._in_micro_batches(data, self._reference_logprobs) if self.kl_coef else None
        loss, metrics = self.update(data, advantages.to(self.device), mask, old_logprobs, ref_logprobs)
        self.last_rollouts, self.last_rewards = trajectories, rewards
        self._log_step(loss, metrics, rewards, advantages, keep)
        return loss

    def score(self, trajectories: Sequence[Trajectory]) -> torch.Tensor:
        """Rewards of the trajectories. ``[B]``"""
        return torch.tensor([float(self.reward_fn(t, t.row)) for t in trajectories], dtype=torch.float32)

    def update(
        self,
        data: Any,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        old_logprobs: torch.Tensor,
        ref_logprobs: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``ppo_epochs × minibatches`` optimizer steps on one rollout batch; returns the mean loss and metrics.

        Args:
            data: The collated rollouts (a :class:`~lightning_cort.trajectory.TrajectoryBatch`); its
                ``sampling_logprobs`` ``[B, T]`` are used when ``importance_sampling`` is enabled.
            advantages: ``[B]``.
            mask: ``[B, T]`` tokens trained on.
            old_logprobs: ``[B, T]`` log-probs of the policy before the update.
            ref_logprobs: ``[B, T]`` reference log-probs, or ``None`` without KL.

        Raises:
            ValueError: When importance sampling is enabled and a trajectory lacks ``sampling_logprobs``.
        """
        sampling_logprobs = self._sampling_logprobs(data)  # [B, T] or None
        opt = self.optimizers()
        b = len(data)
        losses, all_metrics = [], []
        for _ in range(self.ppo_epochs):
            order = (
                torch.randperm(b, device=self.device) if self.minibatches > 1 else torch.arange(b, device=self.device)
            )
            for idx in order.chunk(self.minibatches):
                opt.zero_grad()
                step_loss = torch.zeros((), device=self.device)
                step_metrics: dict[str, torch.Tensor] = {}
                tokens = mask[idx].sum().float().clamp(min=1.0)  # the minibatch's trained tokens (dapo's normalizer)
                micro = idx.split(self.micro_batch_size) if self.micro_batch_size else (idx,)
                for part in micro:
                    share = len(part) / len(idx)
                    loss, metrics = self._micro_loss(
                        data, part, advantages, mask, old_logprobs, ref_logprobs, sampling_logprobs, tokens
                    )
                    if self.loss_type in ("grpo", "bnpo", "dr_grpo"):
                        loss = loss * (share if self.loss_type != "bnpo" else 1.0 / len(micro))
                    self.manual_backward(loss)
                    step_loss += loss.detach()
                    for k, v in metrics.items():
                        step_metrics[k] = step_metrics.get(k, 0.0) + v.detach() * share
                if self.max_grad_norm:
                    self.clip_gradients(opt, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
                opt.step()
                losses.append(step_loss)
                all_metrics.append(step_metrics)
        mean = {k: torch.stack([m[k] for m in all_metrics]).mean() for k in all_metrics[0]}
        return torch.stack(losses).mean(), mean

    def _micro_loss(
        self,
        data: Any,
        idx: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        old_logprobs: torch.Tensor,
        ref_logprobs: torch.Tensor | None,
        sampling_logprobs: torch.Tensor | None,
        tokens: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of rows ``idx`` (a micro-batch); ``dapo`` divides by the minibatch's ``tokens``."""
        mb = data.select(idx)
        entropy = None
        if self.entropy_coef:
            logprobs, entropy = self.completion_logprobs_and_entropy(mb, self.temperature)  # [b, T] each
        else:
            logprobs = self.completion_logprobs(mb, self.temperature)  # [b, T]
        return policy_loss(
            logprobs,
            old_logprobs[idx],
            advantages[idx],
            mask[idx],
            loss_type=self.loss_type,
            clip_low=self.clip_low,
            clip_high=self.clip_high,
            dual_clip=self.dual_clip,
            max_completion_length=self.max_completion_length,
            normalizer=tokens if self.loss_type == "dapo" else None,
            ref_logprobs=None if ref_logprobs is None else ref_logprobs[idx],
            kl_coef=self.kl_coef,
            kl_estimator=self.kl_estimator,
            entropy=entropy,
            entropy_coef=self.entropy_coef,
            sampling_logprobs=None if sampling_logprobs is None else sampling_logprobs[idx],
            is_level="sequence" if self.importance_sampling == "sequence" else "token",
            is_mode=self.is_mode,
            is_cap=self.is_cap,
        )

    def _in_micro_batches(self, data: Any, fn: Any) -> torch.Tensor:
        """``fn`` (``[b, T]`` log-probs of a batch) over ``data`` in micro-batches, concatenated. ``[B, T]``"""
        if not self.micro_batch_size or len(data) <= self.micro_batch_size:
            return fn(data)
        rows = torch.arange(len(data), device=self.device)
        return torch.cat([fn(data.select(part)) for part in rows.split(self.micro_batch_size)])

    @property
    def _reference_is_base_model(self) -> bool:
        """Whether the reference is the policy with its (peft) adapters disabled, so no copy is needed."""
        return hasattr(self.model, "disable_adapter")

    def _reference_logprobs(self, data: Any) -> torch.Tensor | None:
        """Log-probs of the completion tokens under the reference policy. ``[B, T]``, or ``None`` without KL."""
        if not self.kl_coef:
            return None
        if self.reference is None:
            if self._reference_is_base_model:
                with self.model.disable_adapter():
                    return self.completion_logprobs(data, self.temperature)  # type: ignore[return-value]
            raise RuntimeError("kl_coef is set but there is no reference policy: call setup('fit') first")
        policy, self.model = self.model, self.reference
        try:
            return self.completion_logprobs(data, self.temperature)
        finally:
            self.model = policy

    def _sampling_logprobs(self, data: Any) -> torch.Tensor | None:
        """The sampler's log-probs ``[B, T]`` when importance sampling is enabled."""
        if self.importance_sampling == "none":
            return None
        if data.sampling_logprobs is None:
            raise ValueError(
                f"importance_sampling={self.importance_sampling!r} needs the sampler's log-probs, but at least one "
                "trajectory has sampling_logprobs=None: sample with SamplingConfig(logprobs=True), or set "
                "importance_sampling='none'"
            )
        return data.sampling_logprobs.to(self.device)

    def _log_step(
        self,
        loss: torch.Tensor,
        metrics: dict[str, torch.Tensor],
        rewards: torch.Tensor,
        advantages: torch.Tensor,
        keep: torch.Tensor,
    ) -> None:
        b = rewards.numel()
        grouped = rewards.view(-1, self.group_size)
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log("train/reward", rewards.mean(), prog_bar=True, batch_size=b)
        self.log("train/reward_std", rewards.std() if b > 1 else torch.tensor(0.0), batch_size=b)
        self.log("train/zero_advantage_groups", (grouped.std(dim=1) == 0).float().mean(), batch_size=b)
        self.log("train/excluded", 1.0 - keep.float().mean(), batch_size=b)
        for k, v in metrics.items():
            self.log(f"train/{k}", v, batch_size=b)
