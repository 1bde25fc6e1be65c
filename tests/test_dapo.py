"""DAPO's dynamic sampling and soft overlong punishment, and TRL's truncated-completion masking, each checked against
its published definition on hand-built trajectories (no Trainer)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lightning_cort.data import trajectory_from_text
from lightning_cort.formats import CoRTFormat
from lightning_cort.losses import group_advantages
from lightning_cort.models.tiny import tiny_qwen2
from lightning_cort.modules import GRPOModule
from lightning_cort.modules.grpo import GRPOConfig, grpo_step, grpo_update
from lightning_cort.rewards import overlong_penalty, truncated
from lightning_cort.rollout.sampler import RolloutBatch, collate_prompts, sample_informative_groups
from lightning_cort.trajectory import Trajectory, collate_trajectories


def test_soft_overlong_punishment_follows_dapos_definition():
    """Eq. 13 of DAPO with L_max 20 and L_cache 5: 0 up to 15 tokens, ((L_max - L_cache) - |y|) / L_cache up to 20,
    -1 beyond; verl's factor scales it."""
    lengths = torch.tensor([10, 15, 16, 18, 20, 25])
    expected = torch.tensor([0.0, 0.0, -0.2, -0.6, -1.0, -1.0])
    assert torch.allclose(overlong_penalty(lengths, max_length=20, buffer=5), expected)
    assert torch.allclose(overlong_penalty(lengths, max_length=20, buffer=5, factor=0.5), expected / 2)
    with pytest.raises(ValueError, match="overlong buffer"):
        overlong_penalty(lengths, max_length=20, buffer=0)


def _trajectory(tokenizer, text: str, **fields) -> Trajectory:
    return replace(trajectory_from_text(tokenizer, "What is 2 * 3?", text, CoRTFormat(), row={"answer": "6"}), **fields)


def test_truncated_completions_are_those_without_an_end_of_sequence(tokenizer):
    reasons = ["eos", "length", "budget", "max_rounds"]
    trajectories = [_trajectory(tokenizer, "\\boxed{6}", finish_reason=r) for r in reasons]
    assert truncated(trajectories).tolist() == [False, True, True, True]


def test_masking_truncated_completions_leaves_them_out_of_the_loss(tokenizer):
    """With ``mask_truncated`` a cut-off completion gets no gradient (its reward still counts in the advantages):
    the step's gradient equals the update's with that row's loss mask zeroed."""
    trajectories = [
        _trajectory(tokenizer, "</think>\n\n\\boxed{6}"),
        _trajectory(tokenizer, "</think>\n\n\\boxed{5} and more", finish_reason="length"),
    ]
    rewards = torch.tensor([1.0, 0.0])
    grads, kept = {}, {}
    for mask in (False, True):
        torch.manual_seed(0)
        config = GRPOConfig(group_size=2, minibatches=1, max_grad_norm=0.0, mask_truncated=mask)
        module = GRPOModule(tiny_qwen2(tokenizer).eval(), tokenizer, config)
        opt = torch.optim.SGD(module.model.parameters(), lr=0.0)
        result = grpo_step(module, trajectories, rewards, config, opt, temperature=1.0, pad_token_id=0)
        grads[mask] = [p.grad.clone() for p in module.model.parameters()]
        kept[mask] = result.kept.tolist()
    assert kept == {False: [True, True], True: [True, False]}
    # The same update by hand, the truncated row's mask zeroed.
    torch.manual_seed(0)
    config = GRPOConfig(group_size=2, minibatches=1, max_grad_norm=0.0)
    module = GRPOModule(tiny_qwen2(tokenizer).eval(), tokenizer, config)
    data = collate_trajectories(trajectories, 0)
    mask = data.loss_mask * torch.tensor([[1], [0]])
    with torch.no_grad():
        old = module.completion_logprobs(data)
    opt = torch.optim.SGD(module.model.parameters(), lr=0.0)
    grpo_update(module, data, group_advantages(rewards, 2), mask, old, None, config, opt, temperature=1.0)
    by_hand = [p.grad for p in module.model.parameters()]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads[True], by_hand))
    assert not all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads[False], by_hand))


class ScriptedSampler:
    """Samples ``n`` trajectories per row whose rewards the row scripts (``row["rewards"]``)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.calls = tokenizer, []

    def sample(self, policy, rows, n, version, sampling=None) -> list[Trajectory]:
        self.calls.append([r["id"] for r in rows])
        return [
            replace(_trajectory(self.tokenizer, f"\\boxed{{{r['id']}}}"), row={**r, "reward": r["rewards"][j]}, group=g)
            for g, r in enumerate(rows)
            for j in range(n)
        ]


def score(trajectories) -> torch.Tensor:
    return torch.tensor([t.row["reward"] for t in trajectories])


def _batch(tokenizer, sampler, scripted: dict[str, list[float]], prompts: int) -> tuple[RolloutBatch, torch.Tensor]:
    batch = collate_prompts([{"id": k, "prompt": k, "rewards": v} for k, v in scripted.items()], prompts=prompts)
    batch.trajectories = sampler.sample(None, batch.rows, 2, 0)
    return batch, score(batch.trajectories)


def test_dynamic_sampling_drops_groups_with_equal_rewards_and_refills_from_the_reserve(tokenizer):
    """DAPO: groups whose rewards are all equal (all right or all wrong) are dropped, and groups are sampled for
    further prompts until the batch holds ``prompts_per_step`` groups with a signal; extra kept groups are cut."""
    sampler = ScriptedSampler(tokenizer)
    scripted = {"A": [1, 1], "B": [0, 1], "C": [0, 0], "D": [1, 0], "E": [0, 1], "F": [1, 0]}
    batch, rewards = _batch(tokenizer, sampler, scripted, prompts=2)
    assert [r["id"] for r in batch.rows] == ["A", "B"] and [r["id"] for r in batch.reserve] == ["C", "D", "E", "F"]
    out, out_rewards, stats = sample_informative_groups(
        sampler, None, batch, rewards, score, n=2, version=0, max_rounds=2
    )
    assert sampler.calls[1:] == [["C", "D"]]  # one further round was enough
    assert [t.row["id"] for t in out] == ["B", "B", "D", "D"] and [t.group for t in out] == [0, 0, 1, 1]
    assert out_rewards.tolist() == [0, 1, 1, 0]
    assert stats == {"kept_groups": 2.0, "dropped_groups": 2.0, "rounds": 1.0}


def test_dynamic_sampling_stops_at_its_round_cap_and_keeps_the_batch_when_nothing_has_a_signal(tokenizer):
    sampler = ScriptedSampler(tokenizer)
    scripted = {"A": [1, 1], "B": [0, 1], "C": [0, 0], "D": [1, 1], "E": [0, 1], "F": [1, 0]}
    batch, rewards = _batch(tokenizer, sampler, scripted, prompts=2)
    out, _, stats = sample_informative_groups(sampler, None, batch, rewards, score, n=2, version=0, max_rounds=1)
    assert [t.row["id"] for t in out] == ["B", "B"]  # the cap spent: the groups kept so far
    assert stats == {"kept_groups": 1.0, "dropped_groups": 3.0, "rounds": 1.0}
    flat = {"A": [1, 1], "B": [0, 0], "C": [0, 0], "D": [1, 1]}
    batch, rewards = _batch(tokenizer, sampler, flat, prompts=2)
    out, out_rewards, stats = sample_informative_groups(
        sampler, None, batch, rewards, score, n=2, version=0, max_rounds=3
    )
    assert out is batch.trajectories and torch.equal(out_rewards, rewards)  # nothing to train on: the first round
    assert stats == {"kept_groups": 0.0, "dropped_groups": 4.0, "rounds": 1.0}  # the reserve ran out


def test_an_overlong_buffer_needs_the_completion_budget(tokenizer):
    with pytest.raises(ValueError, match=r"overlong_buffer needs grpo\.max_completion_length"):
        GRPOModule(tiny_qwen2(tokenizer), tokenizer, GRPOConfig(overlong_buffer=8))
    with pytest.raises(ValueError, match="must not exceed the completion budget"):
        GRPOConfig(overlong_buffer=80, max_completion_length=64)
    module = GRPOModule(tiny_qwen2(tokenizer), tokenizer, GRPOConfig(overlong_buffer=4, max_completion_length=12))
    long, short = _trajectory(tokenizer, "x " * 20 + "\\boxed{6}"), _trajectory(tokenizer, "\\boxed{6}")
    assert short.completion_ids.numel() <= 12 - 4 and long.completion_ids.numel() >= 12
    rewards = module.score([long, short])  # cort reward: 1 for the right box less the penalty, -0.1 without code
    plain = torch.tensor([float(module.reward_fn(t, t.row)) for t in (long, short)])
    assert torch.allclose(rewards - plain, torch.tensor([-1.0, 0.0]))
