"""Pure loss functions for policy-gradient training: group advantages, the clipped surrogate with the peers'
aggregation modes, KL estimators, the entropy bonus, importance weights for rollouts sampled by another engine, and
the token log-probabilities they consume.

Shapes: ``B`` trajectories, ``T`` completion tokens. ``mask`` selects the tokens that are trained on (sampled tokens;
interpreter output is 0).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch

LossType = Literal["grpo", "dapo", "bnpo", "dr_grpo"]
AdvantageScale = Literal["group", "batch", "none"]
KLEstimator = Literal["k1", "k2", "k3"]
ISLevel = Literal["token", "sequence"]
ISMode = Literal["truncate", "mask"]


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
    grouped = rewards.view(-1, group_size).float()  # [num_groups, G]
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    # The float mean of equal values can be off by an ulp, which a tiny std would blow up: zero such groups exactly.
    centered = centered.masked_fill((grouped == grouped[:, :1]).all(dim=1, keepdim=True), 0.0)
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


def importance_weights(
    old_logprobs: torch.Tensor,
    sampling_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    level: ISLevel = "token",
    mode: ISMode = "truncate",
    cap: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance weights correcting for tokens sampled by another engine (vLLM) than the trainer.

    The sampler's log-probs differ from the trainer's even for identical weights (kernels, precision), so the
    rollouts are slightly off-policy. The weight ``w = π_train(y) / π_sampler(y)`` is:

    * ``level="token"``: ``w_t = exp(old_t - sampling_t)`` per token.
    * ``level="sequence"``: ``w = exp(Σ_t m_t · (old_t - sampling_t))``, the likelihood ratio of the whole sequence
      (the masked *sum*, i.e. the product of the token ratios over trained tokens; interpreter output is not
      sampled and does not count), broadcast to every token of the sequence.

    and then, with ``mode="truncate"``, ``min(w, cap)`` (truncated IS, TIS); with ``mode="mask"``, ``w`` where
    ``w <= cap`` and 0 where it exceeds the cap (masked IS, MIS: the token, or the whole sequence, is dropped).
    Computed in log space, so extreme sequence ratios neither overflow nor produce NaN. The result is detached.

    Args:
        old_logprobs: ``[B, T]`` trainer log-probs of the sampled tokens before the update.
        sampling_logprobs: ``[B, T]`` the sampler's log-probs of the same tokens (any value at untrained tokens).
        mask: ``[B, T]`` 1 at tokens trained on.
        level: ``"token"`` or ``"sequence"``.
        mode: ``"truncate"`` or ``"mask"``.
        cap: The upper bound ``C >= 1`` of the weight.

    Returns:
        ``(weights, exceeded)``: ``[B, T]`` weights (1 at untrained tokens), and ``[B, T]`` bool, True where the raw
        weight is above ``cap`` (at sequence level, every token of such a sequence).
    """
    errors = _importance_errors(level, mode, cap)
    if errors:
        raise ValueError("invalid importance-sampling arguments: " + "; ".join(errors))
    with torch.no_grad():
        m = mask.bool()
        dtype = torch.promote_types(old_logprobs.dtype, torch.float32)  # at least float32 for bf16 log-probs
        log_w = (old_logprobs.to(dtype) - sampling_logprobs.to(dtype)).masked_fill(~m, 0.0)  # [B, T]
        if level == "sequence":
            log_w = log_w.sum(-1, keepdim=True).expand_as(log_w)  # [B, T]
        log_cap = math.log(cap)
        exceeded = (log_w > log_cap) & m  # [B, T]
        weights = torch.exp(log_w.clamp(max=log_cap))  # truncated: min(w, cap)
        if mode == "mask":
            weights = weights.masked_fill(exceeded, 0.0)
        weights = weights.masked_fill(~m, 1.0)
    return weights.to(old_logprobs.dtype), exceeded


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
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    sampling_logprobs: torch.Tensor | None = None,
    is_level: ISLevel = "token",
    is_mode: ISMode = "truncate",
    is_cap: float = 2.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO clipped surrogate, optionally with dual clip, importance-sampling correction, a KL term and an entropy
    bonus, aggregated by ``loss_type``.

    Per token, with ``ρ = exp(logprobs - old_logprobs)`` and the trajectory's advantage ``A``::

        l = w · (-min(ρ·A, clip(ρ, 1-clip_low, 1+clip_high)·A))   # surrogate; dual clip caps it at -c·A when A < 0
            + kl_coef · KL(logprobs, ref_logprobs)                 # when kl_coef != 0
            - entropy_coef · entropy                               # when entropy_coef != 0

    where ``w`` is the detached importance weight of :func:`importance_weights` (1 without ``sampling_logprobs``).
    ``w`` multiplies the surrogate only, as in TRL: a token dropped by ``is_mode="mask"`` still counts in the
    aggregation's denominator and still carries its KL and entropy terms. The loss is ``aggregate(l, mask)``, so
    the entropy bonus is aggregated the same way as the surrogate (``loss -= entropy_coef · aggregate(entropy)``).

    Args:
        logprobs: ``[B, T]`` current policy log-probs of the completion tokens (with grad).
        old_logprobs: ``[B, T]`` log-probs of the policy that sampled them (the trainer's, before the update).
        advantages: ``[B]`` one advantage per trajectory.
        mask: ``[B, T]`` 1 at tokens to train on.
        loss_type: Aggregation (see :func:`aggregate`).
        clip_low: ε below 1 (PPO: 0.2), in ``[0, 1)``.
        clip_high: ε above 1 (DAPO's clip-higher: 0.28), ``>= 0``.
        dual_clip: The constant ``c > 1`` of dual-clip PPO, or ``None``.
        ref_logprobs: ``[B, T]`` reference log-probs for the KL term; required when ``kl_coef != 0``.
        kl_coef: β.
        kl_estimator: ``k1``, ``k2`` or ``k3``.
        max_completion_length: For ``dr_grpo``.
        normalizer: For ``dapo`` over micro-batches: the token count of the full batch.
        entropy: ``[B, T]`` per-token entropy of the current policy (with grad); required when
            ``entropy_coef != 0``. Given with ``entropy_coef == 0`` it is only logged.
        entropy_coef: Weight of the entropy bonus (CoRT/verl: 0.001).
        sampling_logprobs: ``[B, T]`` log-probs returned by the sampling engine; enables the importance-sampling
            correction.
        is_level: ``"token"`` or ``"sequence"`` (see :func:`importance_weights`).
        is_mode: ``"truncate"`` (TIS) or ``"mask"`` (MIS).
        is_cap: Upper bound ``>= 1`` of the importance weight.

    Returns:
        ``(loss, metrics)``. Metrics (detached scalars): ``clip_fraction``, ``ratio_mean``, ``kl`` (token mean over
        ``mask``); ``entropy`` (token mean) when ``entropy`` is given; ``is_weight_mean`` (mean applied weight over
        trained tokens, or over sequences at sequence level) and ``is_masked_fraction`` (fraction of trained tokens,
        or sequences, whose weight exceeded ``is_cap``: dropped with ``mask``, truncated with ``truncate``) when
        ``sampling_logprobs`` is given.

    Raises:
        ValueError: On an unknown option, an out-of-range constant, mismatched shapes, or a coefficient without its
            tensor; all problems are reported together.
    """
    _check_policy_loss_args(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        loss_type=loss_type,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        ref_logprobs=ref_logprobs,
        kl_coef=kl_coef,
        kl_estimator=kl_estimator,
        entropy=entropy,
        entropy_coef=entropy_coef,
        sampling_logprobs=sampling_logprobs,
        is_level=is_level,
        is_mode=is_mode,
        is_cap=is_cap,
    )
    adv = advantages.unsqueeze(-1).to(logprobs.dtype)  # [B, 1]
    ratio = torch.exp(logprobs - old_logprobs)  # [B, T]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.min(unclipped, clipped)  # [B, T]
    if dual_clip is not None:
        capped = torch.min(per_token, -dual_clip * adv)
        per_token = torch.where(adv < 0, capped, per_token)
    m = mask.to(logprobs.dtype)  # [B, T]
    n = m.sum().clamp(min=1.0)
    is_metrics: dict[str, torch.Tensor] = {}
    if sampling_logprobs is not None:
        weights, exceeded = importance_weights(
            old_logprobs, sampling_logprobs, mask, level=is_level, mode=is_mode, cap=is_cap
        )  # [B, T], [B, T]
        per_token = per_token * weights
        with torch.no_grad():
            if is_level == "token":
                is_metrics["is_weight_mean"] = (weights * m).sum() / n
                is_metrics["is_masked_fraction"] = (exceeded.to(m.dtype) * m).sum() / n
            else:
                has_tokens = m.sum(-1) > 0  # [B]
                seqs = has_tokens.sum().clamp(min=1).to(m.dtype)
                seq_weights = (weights * m).sum(-1) / m.sum(-1).clamp(min=1.0)  # [B]: constant over a sequence
                is_metrics["is_weight_mean"] = (seq_weights * has_tokens).sum() / seqs
                is_metrics["is_masked_fraction"] = (exceeded.any(-1) & has_tokens).sum().to(m.dtype) / seqs
    kl = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    if kl_coef != 0.0:
        kl_tok = kl_penalty(logprobs, ref_logprobs, kl_estimator)  # type: ignore[arg-type]  # checked above
        per_token = per_token + kl_coef * kl_tok
        kl = (kl_tok * m).sum() / n
    if entropy is not None and entropy_coef != 0.0:
        per_token = per_token - entropy_coef * entropy.to(per_token.dtype)
    loss = aggregate(per_token, mask, loss_type, max_completion_length=max_completion_length, normalizer=normalizer)
    with torch.no_grad():
        is_clipped = ((ratio < 1.0 - clip_low) & (adv < 0)) | ((ratio > 1.0 + clip_high) & (adv > 0))
        metrics = {
            "clip_fraction": (is_clipped.to(m.dtype) * m).sum() / n,
            "ratio_mean": (ratio * m).sum() / n,
            "kl": kl.detach(),
        }
        if entropy is not None:
            metrics["entropy"] = (entropy.detach().to(m.dtype) * m).sum() / n
        metrics.update(is_metrics)
    return loss, metrics


def _check_policy_loss_args(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
    ref_logprobs: torch.Tensor | None,
    kl_coef: float,
    kl_estimator: str,
    entropy: torch.Tensor | None,
    entropy_coef: float,
    sampling_logprobs: torch.Tensor | None,
    is_level: str,
    is_mode: str,
    is_cap: float,
) -> None:
    """Raise one ``ValueError`` listing every invalid argument of :func:`policy_loss`."""
    errors = []
    if loss_type not in get_args(LossType):
        errors.append(f"unknown loss_type {loss_type!r}; choose 'grpo', 'dapo', 'bnpo' or 'dr_grpo'")
    if kl_estimator not in get_args(KLEstimator):
        errors.append(f"unknown KL estimator {kl_estimator!r}; choose 'k1', 'k2' or 'k3'")
    if not 0.0 <= clip_low < 1.0:
        errors.append(f"clip_low must be in [0, 1), got {clip_low}")
    if not clip_high >= 0.0:
        errors.append(f"clip_high must be >= 0, got {clip_high}")
    if dual_clip is not None and not dual_clip > 1.0:
        errors.append(f"dual_clip must be > 1, got {dual_clip}")
    errors += _importance_errors(is_level, is_mode, is_cap)
    if kl_coef != 0.0 and ref_logprobs is None:
        errors.append(f"kl_coef={kl_coef} needs ref_logprobs")
    if entropy_coef != 0.0 and entropy is None:
        errors.append(f"entropy_coef={entropy_coef} needs the per-token entropy")
    if logprobs.dim() != 2:
        errors.append(f"logprobs must be [B, T], got shape {tuple(logprobs.shape)}")
    shape = tuple(logprobs.shape)
    named = {
        "old_logprobs": old_logprobs,
        "mask": mask,
        "ref_logprobs": ref_logprobs,
        "entropy": entropy,
        "sampling_logprobs": sampling_logprobs,
    }
    for name, tensor in named.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            errors.append(f"{name} must have the shape of logprobs {shape}, got {tuple(tensor.shape)}")
    if tuple(advantages.shape) != shape[:1]:
        errors.append(f"advantages must be [B] = {shape[:1]}, got {tuple(advantages.shape)}")
    if errors:
        raise ValueError("invalid policy_loss arguments: " + "; ".join(errors))


def _importance_errors(level: str, mode: str, cap: float) -> list[str]:
    errors = []
    if level not in get_args(ISLevel):
        errors.append(f"is_level must be 'token' or 'sequence', got {level!r}")
    if mode not in get_args(ISMode):
        errors.append(f"is_mode must be 'truncate' or 'mask', got {mode!r}")
    if not cap >= 1.0:  # also rejects NaN
        errors.append(f"is_cap must be >= 1 (on-policy tokens have weight 1), got {cap}")
    return errors


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
