"""GRPO: one RL step, top to bottom.

:class:`~lightning_cort.callbacks.RolloutCallback` fills the step's
:class:`~lightning_cort.rollout.sampler.RolloutBatch` with ``group_size`` trajectories per prompt;
:meth:`GRPOModule.training_step` scores them (:meth:`GRPOModule.score`) and calls :func:`grpo_step`, a plain
function that computes group advantages and the old and reference log-probs, then :func:`grpo_update` runs
``ppo_epochs × minibatches`` optimizer steps of the clipped surrogate (:func:`~lightning_cort.losses.policy_loss`).
Everything the update needs is an argument of these functions, which a test can call without a Trainer.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

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
from lightning_cort.modules.base import RolloutModule
from lightning_cort.rewards.functions import RewardFn
from lightning_cort.rewards.length import overlong_penalty, truncated
from lightning_cort.rollout.sampler import RolloutBatch, sample_informative_groups
from lightning_cort.trajectory import Trajectory, TrajectoryBatch, collate_trajectories

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ImportanceSampling = Literal["none", "token", "sequence"]


@dataclass
class GRPOConfig:
    """GRPO settings: the ``grpo`` section of the RL recipe, and what :class:`GRPOModule` takes whole.

    Attributes:
        steps: RL steps (one rollout batch and its updates each).
        prompts_per_step: Prompts per step (per process under DDP/FSDP2); each gets ``group_size`` trajectories.
        group_size: Trajectories per prompt (``G``).
        reward: A built-in reward, ``correctness`` (1/0), ``cort`` (1/0 with −0.1 when no code output succeeded) or
            ``retool`` (±1), or the import path of a ``(trajectory, row) -> float`` function
            (``my_package.rewards:score``).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        loss_type: Loss aggregation: ``grpo``, ``dapo``, ``bnpo`` or ``dr_grpo``.
        clip_low: PPO ε below 1.
        clip_high: PPO ε above 1 (clip-higher when larger than ``clip_low``).
        dual_clip: Dual-clip constant ``c > 1`` capping the loss of negative-advantage tokens, or empty.
        max_completion_length: Dr. GRPO's constant denominator (empty: the rollout budget in the recipes, the
            batch's longest completion in the module).
        advantage_scale: Divide by the ``group`` std (GRPO), the ``batch`` std, or ``none`` (Dr. GRPO).
        kl_coef: β of the KL penalty against the initial policy (0: no reference). For a peft policy the reference
            is the policy with its adapters disabled (no copy); otherwise a frozen copy made at setup.
        kl_estimator: ``k1``, ``k2`` or ``k3``.
        entropy_coef: Entropy bonus weight (CoRT: 0.001); the entropy is computed only when this is not 0.
        importance_sampling: Correct for rollouts sampled by another engine (vLLM) than the trainer, with the weight
            ``exp(old_logprobs − sampling_logprobs)``: ``none``, per ``token`` or per ``sequence``. Needs the
            sampler's log-probs (``rollout.sampling.logprobs``).
        is_mode: ``truncate`` the weight at ``is_cap`` (TIS) or ``mask`` tokens / sequences above it (MIS).
        is_cap: Upper bound ``>= 1`` of the importance weight.
        ppo_epochs: Passes over each rollout batch.
        minibatches: Optimizer steps per pass.
        micro_batch_size: Trajectories per forward/backward pass (gradient accumulation with the same result; empty:
            a whole minibatch at once).
        max_grad_norm: Gradient clipping (0: off).
        exclude_infrastructure_failures: Leave trajectories whose executions failed in the sandbox out of the loss.
        dynamic_sampling: DAPO's dynamic sampling: drop groups whose rewards are all equal and sample groups for
            further prompts until ``prompts_per_step`` groups are kept (the recipe's loader hands each step
            ``prompts_per_step × (1 + dynamic_sampling_rounds)`` prompts, the rest in reserve).
        dynamic_sampling_rounds: Further sampling rounds per step at most.
        mask_truncated: Leave completions that did not end with end-of-sequence (cut by a token or round limit) out
            of the loss (TRL's ``mask_truncated_completions``); their rewards still count in the group advantages.
        overlong_buffer: DAPO's soft overlong punishment: the last ``overlong_buffer`` tokens before
            ``max_completion_length`` cost up to ``overlong_penalty_factor`` of reward, linearly (0: off; the
            recipes set ``max_completion_length`` to the rollout budget).
        overlong_penalty_factor: The penalty at ``max_completion_length``.
    """

    steps: int = 40
    prompts_per_step: int = 8
    group_size: int = 8
    reward: str = "cort"
    lr: float = 2e-5
    weight_decay: float = 0.0
    loss_type: LossType = "dapo"
    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float | None = None
    max_completion_length: int | None = None
    advantage_scale: AdvantageScale = "group"
    kl_coef: float = 0.0
    kl_estimator: KLEstimator = "k3"
    entropy_coef: float = 0.0
    importance_sampling: ImportanceSampling = "none"
    is_mode: ISMode = "truncate"
    is_cap: float = 2.0
    ppo_epochs: int = 1
    minibatches: int = 2
    micro_batch_size: int | None = None
    max_grad_norm: float = 1.0
    exclude_infrastructure_failures: bool = True
    dynamic_sampling: bool = False
    dynamic_sampling_rounds: int = 2
    mask_truncated: bool = False
    overlong_buffer: int = 0
    overlong_penalty_factor: float = 1.0

    def __post_init__(self) -> None:
        errors = []
        if self.steps < 1 or self.prompts_per_step < 1:
            errors.append(
                f"grpo.steps and grpo.prompts_per_step must be >= 1, got {self.steps} and {self.prompts_per_step}"
            )
        if self.group_size < 2:
            errors.append(f"grpo.group_size must be >= 2 for group advantages, got {self.group_size}")
        if self.ppo_epochs < 1 or self.minibatches < 1:
            errors.append(
                f"grpo.ppo_epochs and grpo.minibatches must be >= 1, got {self.ppo_epochs} and {self.minibatches}"
            )
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            errors.append(f"grpo.micro_batch_size must be >= 1 or empty, got {self.micro_batch_size}")
        for name, value, allowed in (
            ("loss_type", self.loss_type, get_args(LossType)),
            ("advantage_scale", self.advantage_scale, get_args(AdvantageScale)),
            ("kl_estimator", self.kl_estimator, get_args(KLEstimator)),
            ("importance_sampling", self.importance_sampling, get_args(ImportanceSampling)),
            ("is_mode", self.is_mode, get_args(ISMode)),
        ):
            if value not in allowed:
                errors.append(f"grpo.{name} must be one of {', '.join(allowed)}; got {value!r}")
        if not self.is_cap >= 1.0:
            errors.append(f"grpo.is_cap must be >= 1 (on-policy tokens have weight 1), got {self.is_cap}")
        if self.dual_clip is not None and not self.dual_clip > 1.0:
            errors.append(f"grpo.dual_clip must be > 1 or empty, got {self.dual_clip}")
        if self.dynamic_sampling_rounds < 1:
            errors.append(f"grpo.dynamic_sampling_rounds must be >= 1, got {self.dynamic_sampling_rounds}")
        if self.overlong_buffer < 0 or self.overlong_penalty_factor < 0:
            errors.append(
                "grpo.overlong_buffer and grpo.overlong_penalty_factor must be >= 0, got "
                f"{self.overlong_buffer} and {self.overlong_penalty_factor}"
            )
        budget = self.max_completion_length
        if self.overlong_buffer and budget is not None and self.overlong_buffer > budget:
            errors.append(
                f"grpo.overlong_buffer ({self.overlong_buffer}) must not exceed the completion budget ({budget} tokens)"
            )
        if self.lr < 0 or self.max_grad_norm < 0:
            errors.append(f"grpo.lr and grpo.max_grad_norm must be >= 0, got {self.lr} and {self.max_grad_norm}")
        if ":" not in self.reward and self.reward not in BUILTIN_REWARDS:
            errors.append(
                f"grpo.reward must be one of {', '.join(BUILTIN_REWARDS)} or an import path 'package.module:function', "
                f"got {self.reward!r}"
            )
        if errors:
            raise ValueError("; ".join(errors))


BUILTIN_REWARDS = ("cort", "correctness", "retool")


def resolve_reward(name: str) -> RewardFn:
    """A built-in reward by name, or a ``(trajectory, row) -> float`` function by import path (``pkg.mod:fn``).

    Raises:
        ValueError: The module or the function does not exist, or is not callable.
    """
    from lightning_cort.rewards import correctness_reward, cort_reward, retool_reward

    builtin = {"cort": cort_reward, "correctness": correctness_reward, "retool": retool_reward}
    if name in builtin:
        return builtin[name]
    module_name, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"grpo.reward {name!r} cannot be imported ({exc}); give 'package.module:function'") from exc
    if not callable(fn):
        raise ValueError(f"grpo.reward {name!r} is not a function")
    return fn  # type: ignore[no-any-return]


class CompletionScorer(Protocol):
    """What :func:`grpo_step` needs from the policy: completion log-probs, with the entropy, and under the
    reference (:class:`GRPOModule` is one)."""

    def completion_logprobs(self, batch: TrajectoryBatch, temperature: float = 1.0) -> Any: ...

    def completion_logprobs_and_entropy(
        self, batch: TrajectoryBatch, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def reference_logprobs(self, batch: TrajectoryBatch, temperature: float) -> torch.Tensor: ...


@dataclass
class StepResult:
    """What one :func:`grpo_step` did.

    Attributes:
        loss: Mean loss over its optimizer steps.
        metrics: Mean of each loss metric (``clip_fraction``, ``kl``, ``entropy``, ``is_weight``, ...).
        advantages: ``[B]`` advantages of the trajectories.
        kept: ``[B]`` whether each trajectory entered the loss.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    advantages: torch.Tensor
    kept: torch.Tensor


def grpo_step(
    policy: CompletionScorer,
    trajectories: Sequence[Trajectory],
    rewards: torch.Tensor,
    config: GRPOConfig,
    optimizer: torch.optim.Optimizer,
    *,
    temperature: float,
    pad_token_id: int,
    device: torch.device | str = "cpu",
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    clip_gradients: Callable[[float], None] | None = None,
) -> StepResult:
    """One GRPO step on one rollout batch: advantages, old and reference log-probs, then ``ppo_epochs ×
    minibatches`` optimizer steps of the clipped surrogate (with a single step, the old log-probs are the update's own,
    detached, instead of a separate forward pass). Interpreter-output tokens never enter the loss (their
    ``loss_mask`` is 0), nor (by default) trajectories hit by sandbox failures, nor truncated completions with
    ``config.mask_truncated``.

    Args:
        policy: Computes completion log-probs under the current policy and the reference.
        trajectories: ``group_size × prompts`` trajectories grouped by prompt.
        rewards: ``[B]`` their rewards.
        config: The GRPO settings.
        optimizer: Stepped ``ppo_epochs × minibatches`` times.
        temperature: The temperature the trajectories were sampled at (log-probs are computed at it).
        pad_token_id: For collating.
        device: Where the tensors go.
        backward: Back-propagates a loss (Lightning's ``manual_backward`` under a Trainer).
        clip_gradients: Clips the gradient norm to its argument (default: ``torch.nn.utils.clip_grad_norm_`` over the
            optimizer's parameters).
    """
    if len(trajectories) % config.group_size:
        raise ValueError(f"{len(trajectories)} trajectories is not a multiple of group_size={config.group_size}")
    if temperature <= 0:
        raise ValueError(f"GRPO trains on sampled rollouts: the sampling temperature must be > 0, got {temperature}")
    advantages = group_advantages(rewards, config.group_size, scale=config.advantage_scale).to(device)  # [B]
    data = collate_trajectories(list(trajectories), pad_token_id).to(device)
    kept = torch.tensor(
        [not (config.exclude_infrastructure_failures and t.has_infrastructure_failure) for t in trajectories],
        device=device,
    )
    if config.mask_truncated:
        kept &= ~truncated(trajectories).to(device)
    mask = data.loss_mask * kept[:, None]  # [B, T]
    micro = config.micro_batch_size
    with torch.no_grad():
        # With one optimizer step per batch the policy before the update is the one the update differentiates: its
        # log-probs are the first forward's, detached (grpo_update), and a separate forward would repeat them.
        old_logprobs = (
            None
            if config.ppo_epochs * config.minibatches == 1
            else in_micro_batches(data, micro, lambda mb: policy.completion_logprobs(mb, temperature))
        )
        ref_logprobs = (
            in_micro_batches(data, micro, lambda mb: policy.reference_logprobs(mb, temperature))
            if config.kl_coef
            else None
        )
    loss, metrics = grpo_update(
        policy,
        data,
        advantages,
        mask,
        old_logprobs,
        ref_logprobs,
        config,
        optimizer,
        temperature=temperature,
        backward=backward,
        clip_gradients=clip_gradients,
    )
    return StepResult(loss, metrics, advantages, kept)


def grpo_update(
    policy: CompletionScorer,
    data: TrajectoryBatch,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    old_logprobs: torch.Tensor | None,
    ref_logprobs: torch.Tensor | None,
    config: GRPOConfig,
    optimizer: torch.optim.Optimizer,
    *,
    temperature: float,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    clip_gradients: Callable[[float], None] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The optimizer steps of :func:`grpo_step` on collated rollouts: ``ppo_epochs`` passes of ``minibatches``
    steps, each accumulated over micro-batches of ``config.micro_batch_size``. Returns the mean loss and metrics.

    Args:
        policy: Computes completion log-probs under the current policy.
        data: The collated rollouts; their ``sampling_logprobs`` are used with ``config.importance_sampling``.
        advantages: ``[B]``.
        mask: ``[B, T]`` tokens trained on.
        old_logprobs: ``[B, T]`` log-probs before the update; ``None`` when there is one optimizer step
            (``ppo_epochs × minibatches == 1``): the update's own log-probs, detached.
        ref_logprobs: ``[B, T]`` reference log-probs, or ``None`` without KL.
        config: The GRPO settings.
        optimizer: The optimizer.
        temperature: The sampling temperature of the rollouts.
        backward: Back-propagates a loss.
        clip_gradients: Clips the gradient norm (default: ``clip_grad_norm_`` over the optimizer's parameters).

    Raises:
        ValueError: When importance sampling is enabled and a trajectory lacks the sampler's log-probs.
    """
    sampling_logprobs = _sampling_logprobs(data, config)  # [B, T] or None
    micro = config.micro_batch_size
    device = advantages.device
    if clip_gradients is None:
        params = [p for group in optimizer.param_groups for p in group["params"]]

        def clip_gradients(norm: float) -> None:
            torch.nn.utils.clip_grad_norm_(params, norm)

    b = len(data)
    if old_logprobs is None and config.ppo_epochs * config.minibatches != 1:
        raise ValueError("old_logprobs may be left out only with one optimizer step (ppo_epochs × minibatches == 1)")
    losses, all_metrics = [], []
    for _ in range(config.ppo_epochs):
        order = torch.randperm(b, device=device) if config.minibatches > 1 else torch.arange(b, device=device)
        for idx in order.chunk(config.minibatches):
            optimizer.zero_grad()
            step_loss = torch.zeros((), device=device)
            step_metrics: dict[str, torch.Tensor] = {}
            tokens = mask[idx].sum().float().clamp(min=1.0)  # the minibatch's trained tokens (dapo's normalizer)
            parts = idx.split(micro) if micro else (idx,)
            for part in parts:
                share = len(part) / len(idx)
                mb = data.select(part)
                entropy = None
                if config.entropy_coef:
                    logprobs, entropy = policy.completion_logprobs_and_entropy(mb, temperature)  # [b, T] each
                else:
                    logprobs = policy.completion_logprobs(mb, temperature)  # [b, T]
                loss, metrics = policy_loss(
                    logprobs,
                    logprobs.detach() if old_logprobs is None else old_logprobs[part],
                    advantages[part],
                    mask[part],
                    loss_type=config.loss_type,
                    clip_low=config.clip_low,
                    clip_high=config.clip_high,
                    dual_clip=config.dual_clip,
                    max_completion_length=config.max_completion_length,
                    normalizer=tokens if config.loss_type == "dapo" else None,
                    ref_logprobs=None if ref_logprobs is None else ref_logprobs[part],
                    kl_coef=config.kl_coef,
                    kl_estimator=config.kl_estimator,
                    entropy=entropy,
                    entropy_coef=config.entropy_coef,
                    sampling_logprobs=None if sampling_logprobs is None else sampling_logprobs[part],
                    is_level="sequence" if config.importance_sampling == "sequence" else "token",
                    is_mode=config.is_mode,
                    is_cap=config.is_cap,
                )
                # Every loss type is normalised over the whole minibatch, as if it were one batch (bnpo per
                # micro-batch, by definition); dapo already divides by the minibatch's tokens.
                if config.loss_type in ("grpo", "dr_grpo"):
                    loss = loss * share
                elif config.loss_type == "bnpo":
                    loss = loss / len(parts)
                backward(loss)
                step_loss += loss.detach()
                for k, v in metrics.items():
                    step_metrics[k] = step_metrics.get(k, 0.0) + v.detach() * share
            if config.max_grad_norm:
                clip_gradients(config.max_grad_norm)
            optimizer.step()
            losses.append(step_loss)
            all_metrics.append(step_metrics)
    mean = {k: torch.stack([m[k] for m in all_metrics]).mean() for k in all_metrics[0]}
    return torch.stack(losses).mean(), mean


def in_micro_batches(data: TrajectoryBatch, size: int | None, fn: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """``fn`` (``[b, T]`` log-probs of a batch) over ``data`` in micro-batches of ``size``, concatenated. ``[B, T]``"""
    if not size or len(data) <= size:
        return fn(data)
    rows = torch.arange(len(data), device=data.input_ids.device)
    return torch.cat([fn(data.select(part)) for part in rows.split(size)])


def _sampling_logprobs(data: TrajectoryBatch, config: GRPOConfig) -> torch.Tensor | None:
    """The sampler's log-probs ``[B, T]`` when importance sampling is enabled."""
    if config.importance_sampling == "none":
        return None
    if data.sampling_logprobs is None:
        raise ValueError(
            f"grpo.importance_sampling {config.importance_sampling!r} needs the sampler's log-probs, but at least one "
            "trajectory has none: sample with rollout.sampling.logprobs true, or set grpo.importance_sampling none"
        )
    return data.sampling_logprobs


class GRPOModule(RolloutModule):
    """Group Relative Policy Optimization over code-interleaved trajectories (manual optimization).

    One training step is one RL step on the :class:`~lightning_cort.rollout.sampler.RolloutBatch` that
    :class:`~lightning_cort.callbacks.RolloutCallback` filled: :meth:`score`, then :func:`grpo_step`. It returns
    ``{"loss", "rewards", "advantages"}`` (what ``on_train_batch_end`` callbacks receive as ``outputs``).

    For a new task, subclass and override :meth:`score` (or pass ``reward_fn``). Because optimization is manual,
    ``trainer.global_step`` counts optimizer steps: give the Trainer ``max_steps = steps × ppo_epochs ×
    minibatches`` (or bound the run by the dataloader's length).

    Args:
        model: The policy.
        tokenizer: Its tokenizer.
        config: The GRPO settings (validated when built).
        reward_fn: ``(trajectory, row) -> float``; default: ``config.reward``.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: GRPOConfig | None = None,
        reward_fn: RewardFn | None = None,
    ) -> None:
        config = config or GRPOConfig()
        super().__init__(model, tokenizer, lr=config.lr, weight_decay=config.weight_decay)
        self.automatic_optimization = False
        self.config = config
        self.reward_fn = reward_fn or resolve_reward(config.reward)
        if config.overlong_buffer and config.max_completion_length is None:
            raise ValueError(
                "grpo.overlong_buffer needs grpo.max_completion_length, the completion budget it ends at (the "
                "recipes set it to rollout.max_total_tokens)"
            )
        #: Frozen copy of the initial policy for the KL term; stays ``None`` for peft policies (adapters disabled).
        self.reference: PreTrainedModel | None = None

    @property
    @override
    def samples_per_prompt(self) -> int:
        return self.config.group_size

    @override
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.config.kl_coef and self.reference is None and not self._reference_is_base_model:
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)

    # -- the RL step -----------------------------------------------------------------------------------------------
    @override
    def training_step(self, batch: RolloutBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        if not isinstance(batch, RolloutBatch) or batch.trajectories is None:
            raise RuntimeError(
                "GRPOModule trains on RolloutBatch objects filled by RolloutCallback: build the dataloader with "
                "collate_fn=lightning_cort.rollout.sampler.collate_prompts and add RolloutCallback to the Trainer"
            )
        rewards = self.score(batch.trajectories)  # [B]
        if self.config.dynamic_sampling:  # more groups for the reserve prompts, until enough have a signal
            batch.trajectories, rewards, stats = sample_informative_groups(
                self.rollout_sampler,  # type: ignore[arg-type]
                self.model,
                batch,
                rewards,
                self.score,
                n=self.config.group_size,
                version=self.trainer.global_step,
                max_rounds=self.config.dynamic_sampling_rounds,
            )
            for k, v in stats.items():
                self.log(f"train/dynamic_{k}", v, batch_size=len(batch.trajectories))
        result = grpo_step(
            self,
            batch.trajectories,
            rewards,
            self.config,
            self.optimizers(),  # type: ignore[arg-type]
            temperature=batch.temperature,
            pad_token_id=self.tokenizer.pad_token_id,
            device=self.device,
            backward=self.manual_backward,
            clip_gradients=self._clip,
        )
        self._log_step(result, rewards)
        return {"loss": result.loss, "rewards": rewards, "advantages": result.advantages}

    def score(self, trajectories: Sequence[Trajectory]) -> torch.Tensor:
        """Rewards of the trajectories, with DAPO's soft overlong punishment when ``overlong_buffer`` is set. ``[B]``"""
        rewards = torch.tensor([float(self.reward_fn(t, t.row)) for t in trajectories], dtype=torch.float32)
        c = self.config
        if c.overlong_buffer:
            assert c.max_completion_length is not None
            lengths = torch.tensor([t.completion_ids.numel() for t in trajectories])
            rewards += overlong_penalty(lengths, c.max_completion_length, c.overlong_buffer, c.overlong_penalty_factor)
        return rewards

    def reference_logprobs(self, batch: TrajectoryBatch, temperature: float) -> torch.Tensor:
        """Log-probs of the completion tokens under the reference policy. ``[B, T]``"""
        if self.reference is None:
            if self._reference_is_base_model:
                with self.model.disable_adapter():
                    return self.completion_logprobs(batch, temperature)  # type: ignore[return-value]
            raise RuntimeError("kl_coef is set but there is no reference policy: call setup('fit') first")
        policy, self.model = self.model, self.reference
        try:
            return self.completion_logprobs(batch, temperature)  # type: ignore[return-value]
        finally:
            self.model = policy

    @property
    def _reference_is_base_model(self) -> bool:
        """Whether the reference is the policy with its (peft) adapters disabled, so no copy is needed."""
        from lightning_cort.models.policy import is_peft_model

        return is_peft_model(self.model)

    def _clip(self, norm: float) -> None:
        self.clip_gradients(self.optimizers(), gradient_clip_val=norm, gradient_clip_algorithm="norm")  # type: ignore[arg-type]

    def _log_step(self, result: StepResult, rewards: torch.Tensor) -> None:
        b = rewards.numel()
        grouped = rewards.view(-1, self.config.group_size)
        self.log("train/loss", result.loss, prog_bar=True, batch_size=b)
        self.log("train/reward", rewards.mean(), prog_bar=True, batch_size=b)
        self.log("train/reward_std", rewards.std() if b > 1 else torch.tensor(0.0), batch_size=b)
        self.log("train/zero_advantage_groups", (grouped.std(dim=1) == 0).float().mean(), batch_size=b)
        self.log("train/excluded", 1.0 - result.kept.float().mean(), batch_size=b)
        for k, v in result.metrics.items():
            self.log(f"train/{k}", v, batch_size=b)
