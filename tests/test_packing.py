"""Padding-free batches: packed rows give the padded batch's log-probs, entropies and gradients (no attention across
sequences), and the SFT recipe trains to the same loss with them."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from lightning_cort.data import trajectory_from_text
from lightning_cort.formats import CoRTFormat
from lightning_cort.models.tiny import tiny_qwen2
from lightning_cort.modules import SFTModule
from lightning_cort.packing import pack_batch, padding_share
from lightning_cort.trajectory import collate_trajectories

COMPLETIONS = [
    "6 times 7 is 42.</think>\n\n\\boxed{42}",
    "```python\nprint(6 * 7)\n```\n```output\n42\n```\n</think>\n\n\\boxed{42}",
    "First, 6 * 7: six sevens are 7 + 7 + 7 + 7 + 7 + 7, which is 14, 21, 28, 35, 42. So 42.</think>\\boxed{42}",
    "\\boxed{41}",
    "Short.",
]


@pytest.fixture()
def batch(tokenizer):
    prompts = ["What is 6 * 7?", "Compute 6 times 7, please, and explain the steps.", "6*7", "q", "What is 6 * 7?"]
    fmt = CoRTFormat()
    trajectories = [trajectory_from_text(tokenizer, p, c, fmt) for p, c in zip(prompts, COMPLETIONS)]
    return collate_trajectories(trajectories, tokenizer.pad_token_id)


def test_packing_places_whole_sequences_in_fewer_rows(batch):
    packed = pack_batch(batch, 0)
    lengths = (batch.prompt_mask.sum(1) + batch.completion_mask.sum(1)).tolist()
    assert packed.input_ids.shape == (packed.input_ids.shape[0], max(lengths)) and packed.input_ids.shape[0] < 5
    assert len(packed.targets) == int(batch.completion_mask.sum())
    padded, in_rows = padding_share(batch)
    assert in_rows < padded


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_packed_logprobs_entropy_and_gradients_equal_the_padded_batch(tokenizer, batch, attn, lora):
    model = tiny_qwen2(tokenizer, num_layers=2, seed=0)
    model.config._attn_implementation = attn
    if lora:
        from lightning_cort.models.policy import LoraSettings, add_lora

        model = add_lora(model, LoraSettings(r=4))
    results = {}
    for packed in (False, True):
        module = SFTModule(copy.deepcopy(model), tokenizer)
        module.padding_free = packed
        logp, entropy = module.completion_logprobs_and_entropy(batch, temperature=0.7)
        (logp * batch.loss_mask).sum().backward()
        grads = [p.grad.clone() for p in module.model.parameters() if p.grad is not None]
        results[packed] = (logp.detach(), entropy.detach(), grads, module.completion_logprobs(batch).detach())
    (lp0, e0, g0, plain0), (lp1, e1, g1, plain1) = results[False], results[True]
    mask = batch.completion_mask.bool()
    assert torch.allclose(lp0[mask], lp1[mask], atol=1e-5) and (lp1[~mask] == 0).all()
    assert torch.allclose(e0[mask], e1[mask], atol=1e-5)
    assert torch.allclose(plain0[mask], plain1[mask], atol=1e-5)
    assert len(g0) == len(g1) and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g0, g1))


@pytest.mark.slow
def test_the_sft_recipe_trains_to_the_same_loss_padding_free(tmp_path):
    """Text-only traces (lengths vary most), padded and packed: the same losses step by step."""
    import csv

    from lightning_cort.recipes import sft

    losses = {}
    for packed in ("false", "true"):
        run = tmp_path / packed
        args = [
            "--sft.style", "text", "--sft.examples", "48", "--sft.epochs", "1", "--sft.batch_size", "8",
            "--model.tiny.num_layers", "1", "--held_out.size", "0", "--progress", "false",
            "--trainer.log_every_n_steps", "1", "--model.padding_free", packed, "--run_dir", str(run),
        ]  # fmt: skip
        sft.main(args)
        with open(run / "logs" / "version_0" / "metrics.csv") as f:
            losses[packed] = [float(r["train/sft_loss"]) for r in csv.DictReader(f) if r.get("train/sft_loss")]
        assert json.loads((run / "config.json").read_text())["model"]["padding_free"] == (packed == "true")
    assert len(losses["true"]) == 6
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-4)


def test_a_grpo_step_is_the_same_padding_free(tokenizer, batch):
    """GRPO's update trains on the same log-probs, so its gradients are the padded batch's."""
    from lightning_cort.modules.grpo import GRPOConfig, GRPOModule, grpo_update

    config = GRPOConfig(group_size=5, minibatches=1, max_grad_norm=0.0, kl_coef=0.0, entropy_coef=0.01)
    model = tiny_qwen2(tokenizer, num_layers=2, seed=0)
    grads = []
    for packed in (False, True):
        module = GRPOModule(copy.deepcopy(model), tokenizer, config)
        module.padding_free = packed
        with torch.no_grad():
            old = module.completion_logprobs(batch, 0.9)
        opt = torch.optim.SGD(module.model.parameters(), lr=0.0)
        advantages = torch.tensor([1.0, -0.5, 0.25, -1.0, 0.5])
        grpo_update(module, batch, advantages, batch.loss_mask, old, None, config, opt, temperature=0.9)
        grads.append([p.grad.clone() for p in module.model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))
