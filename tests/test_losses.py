from __future__ import annotations

import torch

from lightning_cort.losses import group_advantages, kl_penalty, policy_loss


def test_equal_rewards_give_zero_advantage():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.5])
    adv = group_advantages(rewards, 4)
    assert torch.all(adv[:1] != 0)
    adv2 = group_advantages(torch.tensor([0.3] * 4 + [0.0, 0.0, 1.0, 1.0]), 4)
    assert torch.equal(adv2[:4], torch.zeros(4))
    for scale in ("group", "batch", "none"):
        assert torch.equal(group_advantages(torch.ones(8), 4, scale=scale), torch.zeros(8))


def test_group_advantages_match_formula():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    adv = group_advantages(rewards, 4)
    g = rewards.view(2, 4)
    ref = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).view(-1)
    torch.testing.assert_close(adv, ref)
    torch.testing.assert_close(group_advantages(rewards, 4, scale="none"), (g - g.mean(1, keepdim=True)).view(-1))


def test_masked_tokens_get_zero_gradient():
    torch.manual_seed(0)
    logp = torch.randn(3, 5, requires_grad=True)
    old = logp.detach() + 0.1 * torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 0, 0, 1], [1, 0, 1, 1, 0], [0, 1, 1, 1, 1]])
    for loss_type in ("grpo", "dapo", "bnpo", "dr_grpo"):
        loss, _ = policy_loss(logp, old, torch.tensor([1.0, -0.5, 2.0]), mask, loss_type=loss_type)
        (grad,) = torch.autograd.grad(loss, logp)
        assert torch.all(grad[mask == 0] == 0), loss_type


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


def test_kl_estimators():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    d = ref - logp
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), -d)
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), 0.5 * d**2)
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), torch.exp(d) - d - 1)
    assert torch.all(kl_penalty(logp, logp, "k3") == 0)
