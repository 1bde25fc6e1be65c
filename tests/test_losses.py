"""The policy-gradient losses against deliberately naive references written from the published formulas.

The references loop over every trajectory ``b`` and token ``t`` with scalar tensor arithmetic, so they share no
vectorised code (and no bugs of broadcasting or masking) with :mod:`lightning_cort.losses`, while staying
differentiable: values *and* gradients are compared.
"""

from __future__ import annotations

import math

import pytest
import torch

from lightning_cort.losses import group_advantages, importance_weights, kl_penalty, policy_loss

LOSS_TYPES = ("grpo", "dapo", "bnpo", "dr_grpo")
KL_ESTIMATORS = ("k1", "k2", "k3")
CLIP_LOW, CLIP_HIGH = 0.2, 0.28


# -- naive references ------------------------------------------------------------------------------------------------
def ref_kl(logp: torch.Tensor, ref: torch.Tensor, estimator: str) -> torch.Tensor:
    """Schulman's estimators of KL(π || π_ref) from a sample of π, with ``r = π_ref(y) / π(y)``."""
    log_r = ref - logp
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return log_r**2 / 2
    r = torch.exp(log_r)
    return (r - 1) - log_r


def ref_is_weight(old, samp, mask, b: int, t: int, level: str, mode: str, cap: float) -> float:
    """π_train / π_sampler of token ``t`` (or of the whole sequence ``b``), truncated at or masked above ``cap``."""
    if level == "token":
        w = math.exp(float(old[b, t]) - float(samp[b, t]))
    else:
        s = 0.0
        for u in range(old.shape[1]):
            if mask[b, u]:
                s += float(old[b, u]) - float(samp[b, u])
        w = math.exp(s)
    if w > cap:
        return cap if mode == "truncate" else 0.0
    return w


def ref_policy_loss(
    logp,
    old,
    adv,
    mask,
    *,
    loss_type,
    clip_low=CLIP_LOW,
    clip_high=CLIP_HIGH,
    dual_clip=None,
    ref=None,
    kl_coef=0.0,
    kl_estimator="k3",
    max_completion_length=None,
    entropy=None,
    entropy_coef=0.0,
    samp=None,
    is_level="token",
    is_mode="truncate",
    is_cap=2.0,
):
    n_b, n_t = logp.shape
    per_token = [[None] * n_t for _ in range(n_b)]
    for b in range(n_b):
        a = float(adv[b])
        for t in range(n_t):
            ratio = torch.exp(logp[b, t] - old[b, t])
            surrogate = torch.min(ratio * a, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * a)
            loss = -surrogate
            if dual_clip is not None and a < 0:
                loss = torch.min(loss, torch.tensor(-dual_clip * a, dtype=loss.dtype))
            if samp is not None:
                loss = loss * ref_is_weight(old, samp, mask, b, t, is_level, is_mode, is_cap)
            if kl_coef:
                loss = loss + kl_coef * ref_kl(logp[b, t], ref[b, t], kl_estimator)
            if entropy_coef:
                loss = loss - entropy_coef * entropy[b, t]
            per_token[b][t] = loss
    return ref_aggregate(per_token, mask, loss_type, max_completion_length)


def ref_aggregate(per_token, mask, loss_type, max_completion_length=None):
    """``per_token``: a ``B × T`` nested list of scalar tensors."""
    n_b, n_t = len(per_token), len(per_token[0])
    zero = torch.zeros((), dtype=torch.float64)
    if loss_type == "grpo":  # mean over sequences of each sequence's token mean
        total = zero
        for b in range(n_b):
            seq, count = zero, 0
            for t in range(n_t):
                if mask[b, t]:
                    seq, count = seq + per_token[b][t], count + 1
            total = total + seq / max(count, 1)
        return total / n_b
    total, count = zero, 0
    for b in range(n_b):
        for t in range(n_t):
            if mask[b, t]:
                total, count = total + per_token[b][t], count + 1
    if loss_type in ("dapo", "bnpo"):  # token-level sum / number of tokens
        return total / max(count, 1)
    if loss_type == "dr_grpo":  # sum / (B · L_max)
        return total / (n_b * (max_completion_length or n_t))
    raise AssertionError(loss_type)


# -- inputs ----------------------------------------------------------------------------------------------------------
def random_inputs(seed: int, b: int = 5, t: int = 7):
    """float64 inputs with ratios on both sides of the clip range, both advantage signs, and a random mask that
    leaves at least one token per row."""
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(b, t, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)
    ref = logp.detach() + 0.5 * torch.randn(b, t, generator=g, dtype=torch.float64)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    mask = (torch.rand(b, t, generator=g) < 0.7).long()
    mask[torch.arange(b), torch.randint(0, t, (b,), generator=g)] = 1
    return logp, old, ref, adv, mask


def assert_matches(ours: torch.Tensor, reference: torch.Tensor, wrt: torch.Tensor) -> None:
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    (g_ours,) = torch.autograd.grad(ours, wrt, retain_graph=True)
    (g_ref,) = torch.autograd.grad(reference, wrt, retain_graph=True)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)
    assert g_ours.abs().sum() > 0


# -- the loss against the references ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kl_estimator", KL_ESTIMATORS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_policy_loss_matches_reference(loss_type, kl_estimator):
    for seed in range(3):
        logp, old, ref, adv, mask = random_inputs(seed)
        kw = {"loss_type": loss_type, "kl_coef": 0.1, "kl_estimator": kl_estimator}
        if loss_type == "dr_grpo":
            kw["max_completion_length"] = 10
        ours, metrics = policy_loss(
            logp, old, adv, mask, clip_low=CLIP_LOW, clip_high=CLIP_HIGH, ref_logprobs=ref, **kw
        )
        assert_matches(ours, ref_policy_loss(logp, old, adv, mask, ref=ref, **kw), logp)
        # The logged KL is the token mean of the estimator over trained tokens.
        kl_tokens = [float(ref_kl(logp[b, t], ref[b, t], kl_estimator)) for b, t in mask.nonzero().tolist()]
        assert metrics["kl"].item() == pytest.approx(sum(kl_tokens) / len(kl_tokens), rel=1e-9)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_surrogate_without_kl_matches_reference(loss_type):
    for seed in range(3):
        logp, old, _, adv, mask = random_inputs(10 + seed)
        ours, metrics = policy_loss(logp, old, adv, mask, loss_type=loss_type, clip_low=CLIP_LOW, clip_high=CLIP_HIGH)
        assert_matches(ours, ref_policy_loss(logp, old, adv, mask, loss_type=loss_type), logp)
        assert metrics["kl"] == 0
        # The inputs really exercise clipping on both sides.
        ratio = torch.exp(logp - old).detach()
        assert ((ratio < 1 - CLIP_LOW) & (mask == 1)).any() and ((ratio > 1 + CLIP_HIGH) & (mask == 1)).any()


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_dual_clip_matches_reference(loss_type):
    for seed in range(3):
        logp, old, _, adv, mask = random_inputs(20 + seed)
        adv[0] = -2.0  # negative advantages whose loss the dual clip caps
        old[0] = logp[0].detach() - 1.5  # ratio e^1.5 > c = 3 on row 0
        kw = {"loss_type": loss_type, "dual_clip": 3.0}
        ours, _ = policy_loss(logp, old, adv, mask, clip_low=CLIP_LOW, clip_high=CLIP_HIGH, **kw)
        assert_matches(ours, ref_policy_loss(logp, old, adv, mask, **kw), logp)
        # Dual clip changes the loss (it caps row 0), and its capped tokens get no gradient.
        plain, _ = policy_loss(logp, old, adv, mask, loss_type=loss_type, clip_low=CLIP_LOW, clip_high=CLIP_HIGH)
        assert not torch.isclose(ours, plain)
        (grad,) = torch.autograd.grad(ours, logp)
        assert torch.all(grad[0] == 0)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_entropy_bonus_matches_reference(loss_type):
    for seed in range(3):
        logp, old, ref, adv, mask = random_inputs(30 + seed)
        g = torch.Generator().manual_seed(seed)
        entropy = torch.rand(logp.shape, generator=g, dtype=torch.float64).mul(2).requires_grad_(True)
        kw = {"loss_type": loss_type, "entropy_coef": 0.01, "kl_coef": 0.05}
        ours, metrics = policy_loss(
            logp, old, adv, mask, clip_low=CLIP_LOW, clip_high=CLIP_HIGH, ref_logprobs=ref, entropy=entropy, **kw
        )
        reference = ref_policy_loss(logp, old, adv, mask, ref=ref, entropy=entropy, **kw)
        assert_matches(ours, reference, logp)
        assert_matches(ours, reference, entropy)
        # loss -= coef · (entropy aggregated like the surrogate).
        without, _ = policy_loss(
            logp,
            old,
            adv,
            mask,
            loss_type=loss_type,
            clip_low=CLIP_LOW,
            clip_high=CLIP_HIGH,
            ref_logprobs=ref,
            kl_coef=0.05,
        )
        cells = [[entropy[b, t] for t in range(entropy.shape[1])] for b in range(entropy.shape[0])]
        torch.testing.assert_close(ours, without - 0.01 * ref_aggregate(cells, mask, loss_type))
        tokens = [float(entropy[b, t]) for b, t in mask.nonzero().tolist()]
        assert metrics["entropy"].item() == pytest.approx(sum(tokens) / len(tokens), rel=1e-9)


def test_entropy_without_coefficient_is_only_logged():
    logp, old, _, adv, mask = random_inputs(40)
    entropy = torch.rand(logp.shape, dtype=torch.float64, requires_grad=True)
    with_entropy, metrics = policy_loss(logp, old, adv, mask, entropy=entropy)
    plain, plain_metrics = policy_loss(logp, old, adv, mask)
    assert torch.equal(with_entropy, plain)
    assert "entropy" in metrics and "entropy" not in plain_metrics


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("is_mode", ["truncate", "mask"])
@pytest.mark.parametrize("is_level", ["token", "sequence"])
def test_importance_sampling_matches_reference(is_level, is_mode, loss_type):
    cap = 1.5
    for seed in range(3):
        logp, old, ref, adv, mask = random_inputs(50 + seed, b=6)
        g = torch.Generator().manual_seed(seed)
        scale = 0.5 if is_level == "token" else 0.25
        samp = old - scale * torch.randn(old.shape, generator=g, dtype=torch.float64)
        samp[0] = old[0] - 0.5  # row 0 above the cap, row 1 below it, per token and per sequence
        samp[1] = old[1] + 0.1
        samp[mask == 0] = 1e4  # whatever the sampler reports at forced tokens must not matter
        kw = {"loss_type": loss_type, "is_level": is_level, "is_mode": is_mode, "is_cap": cap, "kl_coef": 0.05}
        ours, metrics = policy_loss(
            logp, old, adv, mask, clip_low=CLIP_LOW, clip_high=CLIP_HIGH, ref_logprobs=ref, sampling_logprobs=samp, **kw
        )
        assert_matches(ours, ref_policy_loss(logp, old, adv, mask, ref=ref, samp=samp, **kw), logp)
        # Metrics: the applied weight's mean and the share above the cap, per token or per sequence.
        if is_level == "token":
            units = mask.nonzero().tolist()
            raw = [math.exp(float(old[b, t] - samp[b, t])) for b, t in units]
        else:
            units = [(b, int(mask[b].nonzero()[0])) for b in range(mask.shape[0])]
            raw = [
                math.exp(sum(float(old[b, t] - samp[b, t]) for t in mask[b].nonzero().flatten().tolist()))
                for b in range(mask.shape[0])
            ]
        applied = [ref_is_weight(old, samp, mask, b, t, is_level, is_mode, cap) for b, t in units]
        above = [w > cap for w in raw]
        assert any(above) and not all(above), "the inputs must put some weights on each side of the cap"
        assert metrics["is_weight_mean"].item() == pytest.approx(sum(applied) / len(applied), rel=1e-9)
        assert metrics["is_masked_fraction"].item() == pytest.approx(sum(above) / len(above), rel=1e-9)


@pytest.mark.parametrize("is_level", ["token", "sequence"])
def test_importance_sampling_is_identity_on_policy(is_level):
    logp, old, _, adv, mask = random_inputs(60)
    for is_mode in ("truncate", "mask"):
        weights, exceeded = importance_weights(old, old.clone(), mask, level=is_level, mode=is_mode, cap=1.0)
        assert torch.equal(weights, torch.ones_like(weights)) and not exceeded.any()
        corrected, metrics = policy_loss(logp, old, adv, mask, sampling_logprobs=old.clone(), is_level=is_level)
        plain, _ = policy_loss(logp, old, adv, mask)
        assert torch.equal(corrected, plain)
        assert metrics["is_weight_mean"] == 1 and metrics["is_masked_fraction"] == 0


def test_importance_weights_are_detached_and_finite_for_extreme_sequences():
    old = torch.zeros(2, 3, requires_grad=True)
    samp = torch.tensor([[-400.0, -400.0, 0.0], [400.0, 400.0, 0.0]])  # sequence ratios e^800 and e^-800
    mask = torch.ones(2, 3)
    for mode, top in (("truncate", 2.0), ("mask", 0.0)):
        weights, exceeded = importance_weights(old, samp, mask, level="sequence", mode=mode, cap=2.0)
        assert not weights.requires_grad
        assert torch.equal(weights[0], torch.full((3,), top)) and torch.equal(weights[1], torch.zeros(3))
        assert exceeded[0].all() and not exceeded[1].any()


def test_dapo_normalizer_splits_a_batch_into_micro_batches():
    logp, old, ref, adv, mask = random_inputs(70, b=6)
    full, _ = policy_loss(logp, old, adv, mask, loss_type="dapo", ref_logprobs=ref, kl_coef=0.1)
    kw = {"loss_type": "dapo", "kl_coef": 0.1, "normalizer": float(mask.sum())}
    parts = [
        policy_loss(logp[i], old[i], adv[i], mask[i], ref_logprobs=ref[i], **kw)[0] for i in (slice(0, 2), slice(2, 6))
    ]
    assert_matches(full, parts[0] + parts[1], logp)


def test_masked_tokens_get_zero_gradient():
    for seed in range(3):
        logp, old, ref, adv, mask = random_inputs(80 + seed)
        entropy = torch.rand(logp.shape, dtype=torch.float64, requires_grad=True)
        samp = old.clone()
        samp[mask == 0] = -1e4  # huge token ratios at forced tokens
        for loss_type in LOSS_TYPES:
            for kl_estimator in KL_ESTIMATORS:
                for is_level in ("token", "sequence"):
                    loss, _ = policy_loss(
                        logp,
                        old,
                        adv,
                        mask,
                        loss_type=loss_type,
                        dual_clip=3.0,
                        ref_logprobs=ref,
                        kl_coef=0.1,
                        kl_estimator=kl_estimator,
                        entropy=entropy,
                        entropy_coef=0.01,
                        sampling_logprobs=samp,
                        is_level=is_level,
                        is_mode="mask",
                    )
                    g_logp, g_entropy = torch.autograd.grad(loss, (logp, entropy))
                    assert torch.isfinite(loss)
                    assert torch.all(g_logp[mask == 0] == 0) and torch.all(g_entropy[mask == 0] == 0)
                    assert torch.all(g_logp[mask == 1] != 0)


def test_policy_gradient_sign():
    """Positive advantage raises the log-prob of sampled tokens; negative lowers it (one SGD step on logits)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7, requires_grad=True)
    tokens = torch.randint(0, 7, (2, 4))
    mask = torch.ones(2, 4)

    def logp_of(lg):
        return lg.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)

    before = logp_of(logits).detach()
    loss, _ = policy_loss(logp_of(logits), before, torch.tensor([1.0, -1.0]), mask)
    loss.backward()
    with torch.no_grad():
        after = logp_of(logits - 0.5 * logits.grad)
    assert torch.all(after[0] > before[0])
    assert torch.all(after[1] < before[1])


def test_clipping_stops_gradient_outside_the_trust_region():
    old = torch.zeros(1, 2)
    logp = torch.tensor([[0.5, -0.5]], requires_grad=True)  # ratios e^0.5 > 1.2 and e^-0.5 < 0.8
    loss, metrics = policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), clip_low=0.2, clip_high=0.2)
    (grad,) = torch.autograd.grad(loss, logp)
    assert grad[0, 0] == 0  # positive advantage, ratio above 1+eps: clipped
    assert grad[0, 1] != 0  # ratio below 1-eps with positive advantage: not clipped
    assert metrics["clip_fraction"] == 0.5


@pytest.mark.parametrize("estimator", KL_ESTIMATORS)
def test_kl_estimators_match_reference(estimator):
    logp, _, ref, _, _ = random_inputs(90)
    ours = kl_penalty(logp, ref, estimator)
    reference = torch.stack(
        [
            torch.stack([ref_kl(logp[b, t], ref[b, t], estimator) for t in range(logp.shape[1])])
            for b in range(logp.shape[0])
        ]
    )
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    assert torch.all(kl_penalty(logp, logp, estimator) == 0)
    if estimator != "k1":  # k2 and k3 are non-negative per sample
        assert torch.all(ours >= 0)


# -- advantages ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_equal_rewards_give_exactly_zero_advantage(scale):
    g = torch.Generator().manual_seed(0)
    for group_size in (2, 4, 8):
        groups = []
        for i in range(6):
            if i % 2:
                groups.append(torch.full((group_size,), float(torch.rand(1, generator=g)) * 3 - 1))
            else:
                groups.append(torch.rand(group_size, generator=g))
        adv = group_advantages(torch.cat(groups), group_size, scale=scale).view(6, group_size)
        assert torch.equal(adv[1::2], torch.zeros(3, group_size))
        assert torch.all(adv[0::2].abs().sum(-1) > 0)
        assert torch.equal(
            group_advantages(torch.full((2 * group_size,), 0.7), group_size, scale=scale), torch.zeros(2 * group_size)
        )


def test_group_advantages_match_formula():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, -0.1, 0.9, 0.9, -0.1])
    for scale in ("group", "batch", "none"):
        adv = group_advantages(rewards, 4, scale=scale)
        for i in range(len(rewards)):
            group = rewards[i // 4 * 4 : i // 4 * 4 + 4].tolist()
            mean = sum(group) / 4
            if scale == "group":  # unbiased (n - 1) std of the group
                std = math.sqrt(sum((r - mean) ** 2 for r in group) / 3)
            elif scale == "batch":
                all_mean = sum(rewards.tolist()) / len(rewards)
                std = math.sqrt(sum((r - all_mean) ** 2 for r in rewards.tolist()) / (len(rewards) - 1))
            else:
                std = None
            expected = (rewards[i].item() - mean) / (std + 1e-4) if std is not None else rewards[i].item() - mean
            assert adv[i].item() == pytest.approx(expected, rel=1e-5, abs=1e-6), (scale, i)


# -- argument errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_type": "ppo"}, "unknown loss_type 'ppo'"),
        ({"kl_estimator": "k4", "kl_coef": 0.1, "ref": True}, "unknown KL estimator 'k4'"),
        ({"clip_low": 1.0}, r"clip_low must be in \[0, 1\)"),
        ({"clip_high": -0.1}, "clip_high must be >= 0"),
        ({"dual_clip": 1.0}, "dual_clip must be > 1"),
        ({"kl_coef": 0.1}, "kl_coef=0.1 needs ref_logprobs"),
        ({"entropy_coef": 0.01}, "entropy_coef=0.01 needs the per-token entropy"),
        ({"is_level": "batch"}, "is_level must be 'token' or 'sequence'"),
        ({"is_mode": "clip"}, "is_mode must be 'truncate' or 'mask'"),
        ({"is_cap": 0.5}, "is_cap must be >= 1"),
        ({"is_cap": float("nan")}, "is_cap must be >= 1"),
        ({"bad_shape": "sampling_logprobs"}, r"sampling_logprobs must have the shape of logprobs \(5, 7\)"),
        ({"bad_shape": "entropy"}, r"entropy must have the shape of logprobs"),
        ({"bad_shape": "advantages"}, r"advantages must be \[B\]"),
    ],
)
def test_invalid_arguments_are_clear_errors(kwargs, message):
    logp, old, ref, adv, mask = random_inputs(100)
    kwargs = dict(kwargs)
    if kwargs.pop("ref", False):
        kwargs["ref_logprobs"] = ref
    bad = kwargs.pop("bad_shape", None)
    if bad == "advantages":
        adv = adv[:3]
    elif bad is not None:
        kwargs[bad] = torch.zeros(5, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        policy_loss(logp, old, adv, mask, **kwargs)


def test_all_invalid_arguments_are_reported_together():
    logp, old, _, adv, mask = random_inputs(101)
    with pytest.raises(ValueError, match="invalid policy_loss arguments") as info:
        policy_loss(logp, old, adv, mask, loss_type="x", is_mode="y", is_cap=0.0, entropy_coef=1.0)
    for part in ("loss_type", "is_mode", "is_cap", "entropy_coef"):
        assert part in str(info.value)
    with pytest.raises(ValueError, match="is_level"):
        importance_weights(old, old, mask, level="batch")  # type: ignore[arg-type]
