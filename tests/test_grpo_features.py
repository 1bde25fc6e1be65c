"""GRPOModule's entropy bonus, importance-sampling correction and adapter-disabled reference, on a tiny random policy
and hand-built trajectories (one ``grpo_update`` call each, no Trainer)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from lightning_cort.data import trajectory_from_text
from lightning_cort.formats import CoRTFormat
from lightning_cort.losses import aggregate, entropy_from_logits
from lightning_cort.models.tiny import tiny_qwen2
from lightning_cort.modules import GRPOModule
from lightning_cort.modules.grpo import GRPOConfig, grpo_update, in_micro_batches
from lightning_cort.trajectory import Trajectory, collate_trajectories

ADVANTAGES = torch.tensor([1.0, -1.0])


@pytest.fixture()
def trajectories(tokenizer) -> list[Trajectory]:
    """Two completions of one prompt, one with an interpreter-output block (not trained on)."""
    fmt = CoRTFormat()
    prompt = "What is 2 * 3?"
    with_code = "```python\nprint(2 * 3)\n```\n```output\n6\n```\n</think>\n\n\\boxed{6}"
    return [
        trajectory_from_text(tokenizer, prompt, with_code, fmt, row={"answer": "6"}),
        trajectory_from_text(tokenizer, prompt, "</think>\n\n\\boxed{5}", fmt, row={"answer": "6"}),
    ]


def make_module(model, tokenizer, **config) -> GRPOModule:
    """A module (for its log-probs) with groups of 2, no clipping, one minibatch and ``config``'s settings."""
    config = {"group_size": 2, "max_grad_norm": 0.0, "minibatches": 1, **config}
    return GRPOModule(model, tokenizer, GRPOConfig(**config))


def update(module: GRPOModule, data, advantages, old, ref, lr: float = 0.0, temperature: float = 1.0):
    """One ``grpo_update`` with plain SGD, outside any Trainer (``lr=0`` keeps the weights and the grads)."""
    opt = torch.optim.SGD([p for p in module.model.parameters() if p.requires_grad], lr=lr)
    return grpo_update(module, data, advantages, data.loss_mask, old, ref, module.config, opt, temperature=temperature)


def grads(module: GRPOModule) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.model.parameters() if p.grad is not None]


def test_entropy_bonus_changes_the_gradient_by_the_entropy_gradient(tokenizer, trajectories):
    coef, temperature = 0.5, 0.7
    data = collate_trajectories(trajectories, tokenizer.pad_token_id)
    results = {}
    for entropy_coef in (0.0, coef):
        module = make_module(tiny_qwen2(tokenizer).eval(), tokenizer, entropy_coef=entropy_coef)
        with torch.no_grad():
            old = module.completion_logprobs(data, temperature)
        _, metrics = update(module, data, ADVANTAGES, old, None, temperature=temperature)
        results[entropy_coef] = (grads(module), metrics)
    (g0, m0), (g1, m1) = results[0.0], results[coef]
    assert "entropy" not in m0 and m1["entropy"] > 0  # only computed when enabled
    assert any(not torch.allclose(a, b) for a, b in zip(g0, g1))
    # The difference is exactly the gradient of -coef · (entropy of softmax(logits / T), aggregated like the loss).
    module = make_module(tiny_qwen2(tokenizer).eval(), tokenizer)
    _, logits = module.completion_logprobs(data, temperature, return_logits=True)
    bonus = aggregate(entropy_from_logits(logits / temperature), data.loss_mask, "dapo")
    (-coef * bonus).backward()
    for a, b, e in zip(g0, g1, grads(module)):
        torch.testing.assert_close(b - a, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("is_mode", ["truncate", "mask"])
def test_importance_sampling_with_on_policy_logprobs_matches_none(tokenizer, trajectories, level, is_mode):
    data = collate_trajectories(trajectories, tokenizer.pad_token_id)
    with torch.no_grad():
        old = make_module(tiny_qwen2(tokenizer).eval(), tokenizer).completion_logprobs(data)

    def updated(importance_sampling: str, sampling: torch.Tensor | None) -> list[torch.Tensor]:
        for i, t in enumerate(trajectories):  # as a backend reports them: 0 at forced tokens
            n = t.completion_ids.numel()
            t.sampling_logprobs = None if sampling is None else (sampling[i, :n] * t.loss_mask).float()
        batch = collate_trajectories(trajectories, tokenizer.pad_token_id)
        module = make_module(
            tiny_qwen2(tokenizer).eval(), tokenizer, importance_sampling=importance_sampling, is_mode=is_mode
        )
        _, metrics = update(module, batch, ADVANTAGES, old, None, lr=0.1)
        if importance_sampling != "none":
            assert {"is_weight_mean", "is_masked_fraction"} <= metrics.keys()
        return [p.detach().clone() for p in module.model.parameters()]

    baseline = updated("none", None)
    on_policy = updated(level, old)
    for a, b in zip(baseline, on_policy):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # A sampler that assigned lower probability to the sampled tokens (weights above the cap) changes the update.
    off_policy = updated(level, old - 1.0)
    assert any(not torch.equal(a, b) for a, b in zip(baseline, off_policy))


def test_importance_sampling_without_sampler_logprobs_is_a_clear_error(tokenizer, trajectories):
    data = collate_trajectories(trajectories, tokenizer.pad_token_id)
    assert data.sampling_logprobs is None
    module = make_module(tiny_qwen2(tokenizer), tokenizer, importance_sampling="token")
    old = torch.zeros(data.loss_mask.shape)
    with pytest.raises(ValueError, match=r"needs the sampler's log-probs.*rollout\.sampling\.logprobs true"):
        update(module, data, ADVANTAGES, old, None)


def test_invalid_settings_are_reported_together():
    with pytest.raises(ValueError) as info:
        GRPOConfig(importance_sampling="seq", is_mode="drop", is_cap=0.5, group_size=1)  # type: ignore[arg-type]
    for name in ("importance_sampling", "is_mode", "is_cap", "group_size"):
        assert name in str(info.value)


def attach_rollout_callback(module: GRPOModule) -> None:
    """What the rollout callback does before ``setup('fit')``: connect a sampler."""
    from lightning_cort.rollout.sampler import RolloutSampler

    module.connect_rollouts(RolloutSampler())


def test_lora_policy_uses_the_adapter_free_model_as_reference(tokenizer, trajectories):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    policy = get_peft_model(tiny_qwen2(tokenizer), lora).eval()
    module = make_module(policy, tokenizer, kl_coef=0.1)
    attach_rollout_callback(module)
    module.setup("fit")
    assert module.reference is None  # no deep copy of the policy
    data = collate_trajectories(trajectories, tokenizer.pad_token_id)
    with torch.no_grad():
        old = module.completion_logprobs(data)
        ref = module.reference_logprobs(data, 1.0)
    torch.testing.assert_close(ref, old)  # fresh LoRA (B = 0): the policy is the base model
    _, metrics = update(module, data, ADVANTAGES, old, ref, lr=0.5)
    assert abs(metrics["kl"].item()) < 1e-6
    with torch.no_grad():
        new = module.completion_logprobs(data)
        ref_after = module.reference_logprobs(data, 1.0)
    assert (new - old).abs().max() > 1e-4  # the adapters learned ...
    torch.testing.assert_close(ref_after, ref)  # ... and the reference is still the frozen base model
    assert not any(p.requires_grad for n, p in policy.named_parameters() if "lora_" not in n)


def test_plain_policy_keeps_a_frozen_copy_as_reference(tokenizer):
    module = make_module(tiny_qwen2(tokenizer), tokenizer, kl_coef=0.1)
    attach_rollout_callback(module)
    module.setup("fit")
    assert module.reference is not None and module.reference is not module.model
    assert not any(p.requires_grad for p in module.reference.parameters())


def test_dual_clip_and_dr_grpo_length_reach_the_loss(tokenizer, trajectories):
    """GRPOModule passes dual_clip and max_completion_length to policy_loss: with a fixed Dr. GRPO denominator twice
    the batch's length the gradient halves; an invalid dual clip is refused."""
    data = collate_trajectories(trajectories, tokenizer.pad_token_id)
    t = data.completion_ids.shape[1]
    results = []
    for length in (t, 2 * t):
        module = make_module(
            tiny_qwen2(tokenizer, num_layers=1),
            tokenizer,
            loss_type="dr_grpo",
            max_completion_length=length,
            dual_clip=3.0,
        )
        with torch.no_grad():
            old = module.completion_logprobs(data)
        update(module, data, ADVANTAGES, old, None)
        results.append(grads(module))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a / 2)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        GRPOConfig(dual_clip=0.5)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "bnpo", "dr_grpo"])
def test_micro_batches_accumulate_to_the_whole_minibatch_gradient(tokenizer, loss_type):
    """Splitting a minibatch into micro-batches gives the gradient of the unsplit minibatch (bnpo: the mean of the
    micro-batches' own token means, its definition), with KL and entropy terms on."""
    fmt = CoRTFormat()
    texts = [
        "```python\nprint(2 * 3)\n```\n```output\n6\n```\n</think>\n\n\\boxed{6}",
        "</think>\n\n\\boxed{5}",
        "I think it is six, so</think>\n\n\\boxed{6}",
        "```python\nprint(7)\n```\n```output\n7\n```\nHmm.</think>\n\n\\boxed{7}",
    ]
    trajs = [trajectory_from_text(tokenizer, "What is 2 * 3?", t, fmt, row={"answer": "6"}) for t in texts]
    data = collate_trajectories(trajs, tokenizer.pad_token_id)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    results = {}
    for micro in (None, 1, 3):
        module = make_module(
            tiny_qwen2(tokenizer).eval(),
            tokenizer,
            loss_type=loss_type,
            micro_batch_size=micro,
            kl_coef=0.1,
            entropy_coef=0.01,
        )
        module.reference = tiny_qwen2(tokenizer, seed=1).eval()
        with torch.no_grad():
            old = in_micro_batches(data, micro, module.completion_logprobs)
            ref = in_micro_batches(data, micro, partial(module.reference_logprobs, temperature=1.0))
        loss, _ = update(module, data, advantages, old, ref)
        results[micro] = (grads(module), loss)
    whole, _ = results[None]
    if loss_type == "bnpo":  # per micro-batch by definition: micro-batches of one row weigh rows equally
        assert any(not torch.allclose(a, b) for a, b in zip(whole, results[1][0]))
        return
    for micro in (1, 3):
        for a, b in zip(whole, results[micro][0]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(results[None][1], results[micro][1], rtol=1e-5, atol=1e-7)


def test_micro_batch_size_is_validated():
    with pytest.raises(ValueError, match="micro_batch_size"):
        GRPOConfig(micro_batch_size=0)


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_chunked_logprobs_and_entropy_equal_the_whole_computation(tokenizer, trajectories, lora, chunk):
    """Log-probs, entropies and their gradients are the same whether the logits are materialised at once or per
    chunk of positions under checkpointing (plain and LoRA policies)."""
    from lightning_cort.modules.base import PolicyModule

    data = collate_trajectories(trajectories, tokenizer.pad_token_id)
    assert data.completion_ids.shape[1] > chunk

    def run(chunk_size):
        torch.manual_seed(0)
        model = tiny_qwen2(tokenizer).train()
        if lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "down_proj"], lora_dropout=0.0))
            for p in model.parameters():  # adapters start at B = 0: make them matter
                if p.requires_grad:
                    torch.nn.init.normal_(p, std=0.05)
        module = PolicyModule(model, tokenizer)
        module.logprob_chunk_size = chunk_size
        logp, ent = module.completion_logprobs_and_entropy(data, temperature=0.7)
        plain = module.completion_logprobs(data, 0.7)
        ((logp * data.loss_mask).sum() + (ent * data.loss_mask).sum() * 0.3).backward()
        return logp, ent, plain, [p.grad.clone() for p in model.parameters() if p.requires_grad]

    whole, chunked = run(None), run(chunk)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked[2], whole[2], rtol=1e-5, atol=1e-6)
    assert len(chunked[3]) == len(whole[3]) > 0
    for a, b in zip(chunked[3], whole[3]):  # float32 sums in another order: agreement to ~1e-6 of values ~1
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_one_optimizer_step_uses_its_own_logprobs_as_the_old_ones(tokenizer, trajectories, loss_type):
    """With ``ppo_epochs × minibatches == 1`` grpo_step skips the old-log-prob forward: the update's own log-probs,
    detached, give the same loss and gradient as old log-probs from a separate no-grad pass. With more optimizer steps
    leaving them out is an error, not a silent ratio of 1."""
    data = collate_trajectories(trajectories, tokenizer.pad_token_id)
    results = []
    for given in (True, False):
        torch.manual_seed(0)
        module = make_module(tiny_qwen2(tokenizer).eval(), tokenizer, loss_type=loss_type)
        with torch.no_grad():
            old = module.completion_logprobs(data) if given else None
        loss, _ = update(module, data, ADVANTAGES, old, None)
        results.append((loss, grads(module)))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in grads_a)
    module = make_module(tiny_qwen2(tokenizer).eval(), tokenizer, minibatches=2)
    with pytest.raises(ValueError, match="one optimizer step"):
        update(module, data, ADVANTAGES, None, None)
