"""Pure loss functions for policy-gradient training: group advantages, the clipped surrogate with the peers'
aggregation modes, KL estimators and the token log-probabilities they consume.

Shapes: ``B`` trajectories, ``T`` completion tokens. ``mask`` selects the tokens that are trained on (sampled tokens;
interpreter output is 0).
"""

from __future__ import annotations

from typing import Literal

import torch

LossType = Literal["grpo", "dapo", "bnpo", "dr_grpo"]
AdvantageScale = Literal["group", "batch", "none"]
KLEstimator = Literal["k1", "k2", "k3"]


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: AdvantageScale = "group", eps: float = 1e-4
) -> torch.Tensor:
    """GRPO advantages: reward minus its group's mean, divided by a standard deviation.

    Args:
        rewards: ``[B]`` with ``B = num_groups * group_size``, grouped contiguously (``[g0 × G, g1 × G, ...]``).
        group_size: ``G``.
        scale: ``"group"`` (unbiased std of the group, as TRL and CoRT), ``"batch"`` (std over the whole batch), or
            ``"none"`` (Dr. GRPO: no scaling).
        eps: Added to the std.

    Returns:
        ``[B]`` advantages; a group whose rewards are all equal gets exactly zero.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, got {rewards.shape}")
    grouped = rewards.view(-1, group_size).float()
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.ones_like(grouped[:, :1])
        adv = centered / (std + eps)
    elif scale == "batch":
        std = rewards.float().std() if rewards.numel() > 1 else torch.tensor(1.0)
        adv = centered / (std + eps)
    elif scale == "none":
        adv = centered
    else:
        raise ValueError(f"unknown advantage scale {scale!r}; choose 'group', 'batch' or 'none'")
    return torch.nan_to_num(adv.view(-1), nan=0.0)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy. ``[B, T] -> [B, T]``

    ``k1 = logp - ref``, ``k2 = (logp - ref)^2 / 2``, ``k3 = exp(ref - logp) - (ref - logp) - 1`` (Schulman's
    low-variance estimator, used by CoRT and TRL).
    """
    diff = ref_logprobs - logprobs
    if estimator == "k1":
        return -diff
    if estimator == "k2":
        return 0.5 * diff.square()
    if estimator == "k3":
        return torch.exp(diff) - diff - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}; choose 'k1', 'k2' or 'k3'")


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: LossType,
    *,
    max_completion_length: int | None = None,
    normalizer: float | None = None,
) -> torch.Tensor:
    """Reduce per-token losses ``[B, T]`` to a scalar the way each method does.

    * ``grpo``: mean over sequences of each sequence's token mean.
    * ``dapo``: sum over all tokens / number of tokens (``normalizer`` when the batch is split into micro-batches:
      the token count of the whole batch).
    * ``bnpo``: sum / number of tokens of this (micro-)batch.
    * ``dr_grpo``: sum / (``B`` × ``max_completion_length``).
    """
    mask = mask.to(per_token.dtype)
    total = (per_token * mask).sum()
    if loss_type == "grpo":
        per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_seq.mean()
    if loss_type == "dapo":
        denom = normalizer if normalizer is not None else mask.sum().clamp(min=1.0)
        return total / denom
    if loss_type == "bnpo":
        return total / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        length = max_completion_length or per_token.shape[1]
        return total / (per_token.shape[0] * length)
    raise ValueError(f"unknown loss_type {loss_type!r}; choose 'grpo', 'dapo', 'bnpo' or 'dr_grpo'")


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: LossType = "dapo",
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: KLEstimator = "k3",
    max_completion_length: int | None = None,
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO clipped surrogate, optionally with dual clip and a KL term, aggregated by ``loss_type``.

    Per token: ``-min(ρ·A, clip(ρ, 1-clip_low, 1+clip_high)·A)`` with ``ρ = exp(logprobs - old_logprobs)``; with
    ``dual_clip = c`` the loss of negative-advantage tokens is capped at ``-c·A``; plus ``kl_coef · KL`` when a
    reference is given.

    Args:
        logprobs: ``[B, T]`` current policy log-probs of the completion tokens (with grad).
        old_logprobs: ``[B, T]`` log-probs of the policy that sampled them.
        advantages: ``[B]`` one advantage per trajectory.
        mask: ``[B, T]`` 1 at tokens to train on.
        loss_type: Aggregation (see :func:`aggregate`).
        clip_low: ε below 1 (PPO: 0.2).
        clip_high: ε above 1 (DAPO's clip-higher: 0.28).
        dual_clip: The constant ``c > 1`` of dual-clip PPO, or ``None``.
        ref_logprobs: ``[B, T]`` reference log-probs for the KL term.
        kl_coef: β.
        kl_estimator: ``k1``, ``k2`` or ``k3``.
        max_completion_length: For ``dr_grpo``.
        normalizer: For ``dapo`` over micro-batches: the token count of the full batch.

    Returns:
        ``(loss, metrics)`` with metrics ``clip_fraction``, ``ratio_mean``, ``kl`` (detached scalars).
    """
    adv = advantages.unsqueeze(-1).to(logprobs.dtype)  # [B, 1]
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.min(unclipped, clipped)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        capped = torch.min(per_token, -dual_clip * adv)
        per_token = torch.where(adv < 0, capped, per_token)
    m = mask.to(logprobs.dtype)
    kl = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    if ref_logprobs is not None and kl_coef != 0.0:
        kl_tok = kl_penalty(logprobs, ref_logprobs, kl_estimator)
        per_token = per_token + kl_coef * kl_tok
        kl = (kl_tok * m).sum() / m.sum().clamp(min=1.0)
    loss = aggregate(per_token, mask, loss_type, max_completion_length=max_completion_length, normalizer=normalizer)
    with torch.no_grad():
        n = m.sum().clamp(min=1.0)
        is_clipped = ((ratio < 1.0 - clip_low) & (adv < 0)) | ((ratio > 1.0 + clip_high) & (adv > 0))
        metrics = {
            "clip_fraction": (is_clipped.to(m.dtype) * m).sum() / n,
            "ratio_mean": (ratio * m).sum() / n,
            "kl": kl.detach(),
        }
    return loss, metrics


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each target under ``logits / temperature``. ``[B, T, V], [B, T] -> [B, T]``"""
    if temperature != 1.0 and temperature > 0:
        logits = logits / temperature
    logits = logits.float()
    return torch.gather(logits.log_softmax(-1), -1, targets.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-token entropy of the distribution. ``[B, T, V] -> [B, T]``"""
    logp = logits.float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)
