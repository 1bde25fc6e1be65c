"""GRPO on fixed rollouts under one process, 2-process DDP or 2-process FSDP2 (gloo, CPU); writes the loss curve.

Run by ``tests/test_distributed.py`` as ``python grpo_run.py <single|ddp|fsdp2> <out.json> <cache dir>``. Lightning
re-launches this script for the second rank. Every rank gets whole prompt groups, so group advantages and the
``grpo`` loss (mean over sequences) are the same quantities as in the single-process run: DDP's gradient average
and FSDP2's reduce-scatter then give the single-process update.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import lightning as L
import torch

STEPS = 3
GROUP = 2
GROUPS_PER_STEP = 4


def trajectories(tokenizer: Any) -> list[list[Any]]:
    """``STEPS`` batches of ``GROUPS_PER_STEP`` groups of ``GROUP`` hand-written completions (rewarded or not)."""
    from lightning_cort.data import trajectory_from_text
    from lightning_cort.formats import CoRTFormat

    fmt = CoRTFormat()
    steps = []
    for s in range(STEPS):
        batch = []
        for g in range(GROUPS_PER_STEP):
            a, b = 3 + s, 4 + g
            prompt = f"What is {a} * {b}?"
            good = f"```python\nprint({a} * {b})\n```\n```output\n{a * b}\n```\n</think>\n\n\\boxed{{{a * b}}}"
            bad = f"I think it is {a * b + 1}.\n</think>\n\n\\boxed{{{a * b + 1}}}"
            for text in (good, bad) if (s + g) % 2 == 0 else (bad, good):
                batch.append(trajectory_from_text(tokenizer, prompt, text, fmt, row={"answer": str(a * b)}))
        steps.append(batch)
    return steps


def main() -> None:
    mode, out, cache = sys.argv[1], sys.argv[2], sys.argv[3]
    os.environ["LIGHTNING_CORT_CACHE"] = cache
    from lightning.pytorch.strategies import ModelParallelStrategy

    from lightning_cort.callbacks import RolloutCallback, SandboxCallback
    from lightning_cort.formats import CoRTFormat
    from lightning_cort.models.tiny import tiny_qwen2, tiny_tokenizer
    from lightning_cort.modules import GRPOModule
    from lightning_cort.modules.grpo import GRPOConfig
    from lightning_cort.rewards import correctness_reward
    from lightning_cort.rollout.sampler import collate_prompts

    L.seed_everything(0, verbose=False)
    tokenizer = tiny_tokenizer()
    model = tiny_qwen2(tokenizer, num_layers=2, seed=0)
    data = trajectories(tokenizer)
    initial = os.path.join(os.path.dirname(os.path.abspath(out)), f"{mode}-initial.pt")
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, initial)

    class FixedRollouts(RolloutCallback):
        """Fills each rank's batch with its share of the fixed rollouts (whole groups) instead of sampling."""

        def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
            pl_module.connect_rollouts(self.sampler)  # never started: nothing is sampled

        def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            pass

        def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
            step = trainer.global_step // pl_module.config.ppo_epochs  # not batch_idx: the sampler pads/wraps
            share = len(data[step]) // trainer.world_size
            rank = trainer.global_rank
            batch.trajectories = data[step][rank * share : (rank + 1) * share]

    class Curve(L.Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, i: int) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            loss = loss.detach().float().clone()
            if trainer.world_size > 1:
                torch.distributed.all_reduce(loss)
                loss /= trainer.world_size
            self.losses.append(loss.item())

    config = GRPOConfig(
        group_size=GROUP, lr=5e-3, loss_type="grpo", kl_coef=0.05, ppo_epochs=2, minibatches=1, max_grad_norm=0.0
    )
    module = GRPOModule(model, tokenizer, config, reward_fn=correctness_reward)
    curve = Curve()
    strategy: Any = {
        "single": "auto",
        "ddp": "ddp",
        "fsdp2": ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
    }[mode]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1 if mode == "single" else 2,
        strategy=strategy,
        max_steps=STEPS * 2,  # optimizer steps: STEPS rollout batches × ppo_epochs
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[FixedRollouts(CoRTFormat(), sandbox=SandboxCallback()), curve],
    )
    rows = [{"prompt": "unused"}] * STEPS
    loader = torch.utils.data.DataLoader(rows, batch_size=1, collate_fn=collate_prompts)
    trainer.fit(module, loader)
    from lightning_cort.models.policy import export_policy

    export_dir = os.path.join(os.path.dirname(os.path.abspath(out)), f"{mode}-export")
    export_policy(module.model, tokenizer, export_dir, mode="full")  # every rank: FSDP2 gathers the shards
    if trainer.global_rank == 0:
        from transformers import AutoModelForCausalLM

        state = AutoModelForCausalLM.from_pretrained(export_dir).state_dict()
        weights = os.path.join(os.path.dirname(os.path.abspath(out)), f"{mode}-weights.pt")
        torch.save(state, weights)
        sharded = any(type(p).__name__ == "DTensor" for p in module.model.parameters())
        with open(out, "w") as f:
            json.dump({"losses": curve.losses, "weights": weights, "initial": initial, "sharded": sharded}, f)


if __name__ == "__main__":
    main()
