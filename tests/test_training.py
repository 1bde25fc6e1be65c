"""Each training module trains the tiny model on CPU and changes every trainable parameter; a QLoRA GRPO run
(real bitsandbytes 4-bit) works in the RL order: generate in eval mode, then train."""

from __future__ import annotations

import copy
import warnings

import lightning as L
import pytest
import torch

from lightning_cort._imports import BITSANDBYTES_AVAILABLE
from lightning_cort.callbacks import RolloutCallback, SandboxCallback
from lightning_cort.data import ListDataset, trajectory_from_text
from lightning_cort.formats import CoRTFormat
from lightning_cort.models.policy import LoraSettings, PolicySettings, export_policy, load_policy
from lightning_cort.models.tiny import TinyConfig
from lightning_cort.modules import GRPOModule, SFTModule, SFTSettings
from lightning_cort.modules.grpo import GRPOConfig
from lightning_cort.rewards.functions import cort_reward
from lightning_cort.rollout import RolloutConfig
from lightning_cort.rollout.sampler import collate_prompts
from lightning_cort.sandbox import LocalSandbox
from lightning_cort.tasks import CalculatorTask, build_prompt
from lightning_cort.trajectory import collate_trajectories


def _trainer(**kw):
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _unchanged(model, before):
    return [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]


def _rows(n):
    task = CalculatorTask(digits=3, seed=0)
    return [{"prompt": build_prompt(p.question), "answer": p.answer} for p in task.problems("train", n)]


def test_sft_changes_every_parameter(tokenizer):
    model, _ = load_policy(PolicySettings(tiny=TinyConfig(num_layers=2)), tokenizer)
    fmt = CoRTFormat()
    examples = [
        trajectory_from_text(
            tokenizer, f"What is {a} * 7?", f"```python\nprint({a} * 7)\n```\n```output\n{7 * a}\n```\n</think>", fmt
        )
        for a in range(20, 28)
    ]
    loader = torch.utils.data.DataLoader(
        examples, batch_size=4, collate_fn=lambda b: collate_trajectories(b, tokenizer.pad_token_id)
    )
    before = _snapshot(model)
    _trainer(max_steps=3).fit(
        SFTModule(model, tokenizer, SFTSettings(lr=1e-3, warmup_ratio=0.0, lr_schedule="constant")), loader
    )
    assert _unchanged(model, before) == []


def _shorter_is_better(trajectory, row):
    """A reward that always varies within a group (the barely trained test policy is rarely correct, so
    correctness alone would give all-zero advantages and no update): CoRT's reward minus a length term."""
    return cort_reward(trajectory, row) - trajectory.completion_ids.numel() / 100


ROLLOUT = RolloutConfig(max_calls=1, max_total_tokens=120)


def _grpo_fit(model, tokenizer, steps=2, callbacks=(), **kw):
    module = GRPOModule(
        model, tokenizer, GRPOConfig(group_size=4, lr=1e-3, minibatches=1, **kw), reward_fn=_shorter_is_better
    )
    sandbox = SandboxCallback(lambda: LocalSandbox(timeout=5.0))
    rollout = RolloutCallback(CoRTFormat(), ROLLOUT, sandbox=sandbox)
    loader = torch.utils.data.DataLoader(ListDataset(_rows(2 * steps)), batch_size=2, collate_fn=collate_prompts)
    _trainer(max_steps=steps, callbacks=[sandbox, rollout, *callbacks]).fit(module, loader)
    return module


def test_grpo_changes_every_parameter(tokenizer, trained_policy):
    from lightning_cort.callbacks import TokenEfficiencyCallback

    policy = copy.deepcopy(trained_policy).train()
    before = _snapshot(policy)
    torch.manual_seed(0)
    val_rows = [{**r, "id": i} for i, r in enumerate(_rows(3))]
    sandbox = SandboxCallback(lambda: LocalSandbox(timeout=5.0))
    efficiency = TokenEfficiencyCallback(
        val_rows=val_rows, val_every_n_steps=1, code_format=CoRTFormat(), rollout_config=ROLLOUT, sandbox=sandbox
    )
    _grpo_fit(policy, tokenizer, kl_coef=0.01, callbacks=[sandbox, efficiency])
    assert _unchanged(policy, before) == []
    # Training rollouts and validation rollouts report the same metrics (one implementation).
    assert len(efficiency.history) == 2 and len(efficiency.val_history) == 2
    assert set(efficiency.val_history[0]) - {"step"} == set(efficiency.history[0])
    assert [m["step"] for m in efficiency.val_history] == [1.0, 2.0]


@pytest.mark.skipif(not BITSANDBYTES_AVAILABLE, reason="bitsandbytes is not installed (extra 'qlora')")
def test_qlora_grpo_generates_then_trains(tokenizer, trained_policy, tmp_path):
    """The warmed-up policy saved, reloaded in 4-bit with LoRA, then trained by GRPO with real rollouts; KL uses the
    same model with adapters disabled. Every LoRA parameter changes and the 4-bit base does not."""
    export_policy(trained_policy, tokenizer, tmp_path / "base", mode="full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy, _ = load_policy(
            PolicySettings(
                name_or_path=str(tmp_path / "base"),
                quantization="4bit",
                lora=LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]),
            )
        )
    before = _snapshot(policy)
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    torch.manual_seed(0)
    module = _grpo_fit(policy, tokenizer, steps=2, kl_coef=0.01)
    assert module.reference is None  # no copy of the 4-bit model: adapters are disabled for the reference
    assert _unchanged(policy, before) == []
    assert all(torch.equal(p, frozen[n]) for n, p in policy.named_parameters() if not p.requires_grad)


def test_sft_loss_with_per_example_weights(tokenizer):
    """RFT's code-decision weights: an example's tokens count ``weight`` times over the same token count."""
    model, _ = load_policy(PolicySettings(tiny=TinyConfig(num_layers=1)), tokenizer)
    module = SFTModule(model, tokenizer)
    module.log = lambda *a, **k: None  # no Trainer here
    fmt = CoRTFormat()
    batch = collate_trajectories(
        [trajectory_from_text(tokenizer, "Q?", text, fmt) for text in ("```python\nprint(1)\n```\n</think>", "A.")],
        tokenizer.pad_token_id,
    )
    logp = module.completion_logprobs(batch).detach()
    mask = batch.loss_mask.float()
    expected = -(2.0 * (logp[0] * mask[0]).sum()) / mask.sum()
    weighted = module.training_step((batch, torch.tensor([2.0, 0.0])), 0)
    torch.testing.assert_close(weighted.detach(), expected)
    plain = module.training_step(batch, 0)
    torch.testing.assert_close(plain.detach(), -(logp * mask).sum() / mask.sum())
