"""GRPO with a code interpreter: ``python -m lightning_cort.recipes.rl``.

With no arguments this runs on a laptop CPU without network: it warm-starts a tiny Qwen2 policy by supervised
fine-tuning on built-in code-integrated traces of the calculator task (cached, so later runs skip it), measures
greedy accuracy on held-out problems, trains it with GRPO using the local sandbox, measures again, and writes
``summary.json`` in the run directory.

Examples:
    python -m lightning_cort.recipes.rl
    python -m lightning_cort.recipes.rl --grpo.steps 10 --run_dir runs/quick
    python -m lightning_cort.recipes.rl --config my.yaml --grpo.lr 1e-5
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from lightning_cort.recipes._common import parse_config
from lightning_cort.recipes._config import RecipeConfig


@dataclass
class GRPOConfig:
    """GRPO settings.

    Attributes:
        steps: RL steps (one rollout batch and its updates each).
        prompts_per_step: Prompts per step (per process under DDP/FSDP2); each gets ``group_size`` trajectories.
        group_size: Trajectories per prompt.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        loss_type: Loss aggregation.
        clip_low: PPO ε below 1.
        clip_high: PPO ε above 1 (clip-higher when larger than ``clip_low``).
        dual_clip: Dual-clip constant ``c > 1`` for negative advantages, or empty.
        advantage_scale: Divide by the ``group`` std (GRPO), the ``batch`` std, or ``none`` (Dr. GRPO).
        kl_coef: β of the KL penalty against the initial policy (0: no reference model).
        kl_estimator: ``k1``, ``k2`` or ``k3``.
        entropy_coef: Entropy bonus weight.
        temperature: Sampling temperature during training (log-probs use the same).
        top_p: Nucleus sampling mass during training.
        ppo_epochs: Passes over each rollout batch.
        minibatches: Optimizer steps per pass.
        micro_batch_size: Trajectories per forward/backward pass (gradient accumulation; empty: a whole minibatch).
        max_grad_norm: Gradient clipping (0: off).
        reward: ``correctness`` (1/0), ``cort`` (1/0 with −0.1 when no code output succeeded) or ``retool`` (±1).
    """

    steps: int = 40
    prompts_per_step: int = 8
    group_size: int = 8
    lr: float = 2e-5
    weight_decay: float = 0.0
    loss_type: Literal["grpo", "dapo", "bnpo", "dr_grpo"] = "dapo"
    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float | None = None
    advantage_scale: Literal["group", "batch", "none"] = "group"
    kl_coef: float = 0.0
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    entropy_coef: float = 0.0
    temperature: float = 1.0
    top_p: float = 1.0
    ppo_epochs: int = 1
    minibatches: int = 2
    micro_batch_size: int | None = None
    max_grad_norm: float = 1.0
    reward: Literal["correctness", "cort", "retool"] = "cort"


@dataclass
class RLConfig(RecipeConfig):
    """Configuration of the RL recipe: the shared sections (``model``, ``data``, ``trainer``, ...) and ``grpo``.

    Attributes:
        grpo: RL settings.
    """

    grpo: GRPOConfig = field(default_factory=GRPOConfig)


def main(args: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns the summary (also written to ``<run_dir>/summary.json``).

    Args:
        args: Command-line arguments (``None``: ``sys.argv``).
    """
    cfg = parse_config(RLConfig, args, prog="python -m lightning_cort.recipes.rl", description=__doc__ or "")
    return run(cfg)


def rollout_config(cfg: RLConfig) -> Any:
    """The engine's limits and training-time sampling."""
    from lightning_cort.recipes._config import engine_config

    return engine_config(cfg.rollout, cfg.grpo.temperature, cfg.grpo.top_p)


def plan(cfg: RLConfig, run_dir: Any = None) -> Any:
    """The per-GPU memory plan of this config."""
    from lightning_cort.recipes._config import memory_plan

    g = cfg.grpo
    per_step = g.prompts_per_step * g.group_size
    micro = g.micro_batch_size or max(1, per_step // g.minibatches)
    length = 1024 + cfg.rollout.max_total_tokens  # prompt budget (CoRT filters prompts over 1024 tokens) + response
    return memory_plan(
        cfg.model,
        cfg.trainer,
        cfg.plan,
        vocab_size=1024,
        micro_batch_sequences=micro,
        sequence_length=length,
        completion_length=cfg.rollout.max_total_tokens,
        reference_copy=g.kl_coef > 0 and cfg.model.lora is None,
        entropy=g.entropy_coef != 0,
        rollout_backend=cfg.rollout.backend,
        rollout_sequences=per_step,
        vllm_memory=cfg.rollout.vllm_memory,
        vllm_tensor_parallel=cfg.rollout.vllm_tensor_parallel,
        vllm_sleep=cfg.rollout.vllm_sleep,
    )


def build(cfg: RLConfig, run_dir: Any, *, meta: bool = False) -> dict[str, Any]:
    """Build every part of the run without starting it: policy, module, callbacks, strategy, data.

    With ``meta`` the policy lives on the meta device and no data is read (how the YAML tests instantiate real-model
    configs offline).
    """
    from lightning_cort.callbacks import TokenEfficiencyCallback
    from lightning_cort.formats import get_format
    from lightning_cort.modules.grpo import GRPOModule
    from lightning_cort.recipes._config import (
        build_policy,
        build_strategy,
        check_rollout_backend,
        interpreter_callbacks,
        load_problem_rows,
        train_offset,
    )
    from lightning_cort.rewards import correctness_reward, cort_reward, retool_reward
    from lightning_cort.tasks.calculator import CalculatorTask

    check_rollout_backend(cfg.model, cfg.rollout, cfg.trainer)
    fmt = get_format(cfg.code_format)
    task = CalculatorTask(kinds=cfg.task.kinds, digits=cfg.task.digits, seed=cfg.task.seed)  # type: ignore[arg-type]
    model, tokenizer, info = build_policy(
        cfg.model, task=task, code_format=fmt, warmup=cfg.warmup, seed=cfg.seed, run_dir=run_dir,
        progress=cfg.progress, meta=meta,
    )  # fmt: skip
    rewards = {"cort": cort_reward, "correctness": correctness_reward, "retool": retool_reward}
    g = cfg.grpo
    module = GRPOModule(
        model,
        tokenizer,
        reward_fn=rewards[g.reward],
        group_size=g.group_size,
        lr=g.lr,
        weight_decay=g.weight_decay,
        loss_type=g.loss_type,
        clip_low=g.clip_low,
        clip_high=g.clip_high,
        dual_clip=g.dual_clip,
        max_completion_length=cfg.rollout.max_total_tokens if g.loss_type == "dr_grpo" else None,
        advantage_scale=g.advantage_scale,
        kl_coef=g.kl_coef,
        kl_estimator=g.kl_estimator,
        entropy_coef=g.entropy_coef,
        ppo_epochs=g.ppo_epochs,
        minibatches=g.minibatches,
        micro_batch_size=g.micro_batch_size,
        temperature=g.temperature,
        max_grad_norm=g.max_grad_norm,
    )
    module.logprob_chunk_size = cfg.model.logprob_chunk_size
    callbacks = [*interpreter_callbacks(cfg.rollout, fmt, rollout_config(cfg), cfg.seed), TokenEfficiencyCallback()]
    # RL prompts come after the warm-up traces in the train stream, so RL sees new problems.
    rows = (
        []
        if meta
        else load_problem_rows(cfg.data, task, g.steps * g.prompts_per_step, start=train_offset(cfg.task, cfg.warmup))
    )
    return {
        "format": fmt,
        "task": task,
        "model": model,
        "tokenizer": tokenizer,
        "info": info,
        "module": module,
        "callbacks": callbacks,
        "strategy": build_strategy(cfg.trainer),
        "rows": rows,
    }


def run(cfg: RLConfig) -> dict[str, Any]:
    """Run the recipe from a parsed config."""
    import torch

    from lightning_cort.data import ListDataset, collate_rows
    from lightning_cort.recipes._config import build_trainer, resume_path
    from lightning_cort.recipes._steps import begin, evaluate_before, finish, plot_training_curves, print_summary

    started = time.perf_counter()
    run_dir, dry = begin(cfg, "rl", plan)
    if dry is not None:
        return dry
    parts = build(cfg, run_dir)
    module = parts["module"]
    rollout_cfg = rollout_config(cfg)
    held_out, before = evaluate_before(cfg, parts, rollout_cfg)

    g = cfg.grpo
    efficiency = parts["callbacks"][-1]
    trainer = build_trainer(
        cfg.trainer,
        run_dir,
        parts["callbacks"],
        progress=cfg.progress,
        phase="GRPO steps",
        # Under manual optimization the trainer counts optimizer steps: each RL step makes ppo_epochs × minibatches.
        max_steps=g.steps * g.ppo_epochs * g.minibatches,
    )
    loader = torch.utils.data.DataLoader(
        ListDataset(parts["rows"]), batch_size=g.prompts_per_step, shuffle=False, collate_fn=collate_rows
    )
    t0 = time.perf_counter()
    trainer.fit(module, loader, ckpt_path=resume_path(cfg.trainer, run_dir))
    rl_s = time.perf_counter() - t0

    extra = {
        "train_reward_first": efficiency.history[0]["accuracy"] if efficiency.history else None,
        "train_reward_last": efficiency.history[-1]["accuracy"] if efficiency.history else None,
        "rl_steps": g.steps,
        "warmup_from_cache": parts["info"]["warmup_from_cache"],
        "warmup_seconds": parts["info"]["warmup_seconds"],
        "rl_seconds": round(rl_s, 1),
    }
    if trainer.is_global_zero:
        curves = {"train/reward": "mean reward", "efficiency/tokens_per_response": "tokens per response"}
        plot = plot_training_curves(run_dir, curves, "GRPO training rollouts")
        extra["training_curves"] = str(plot) if plot else None
    done = finish(module, parts, held_out, before, rollout_cfg, run_dir, extra, started)
    if done is None:
        return {}
    summary, _ = done
    cached = ", cached" if summary["warmup_from_cache"] else ""
    print_summary(
        "GRPO: held-out problems, greedy",
        summary["before"],
        summary["after"],
        [
            f"Run directory: [bold]{run_dir}[/bold] (summary.json, training_curves.png, logs/, policy/)",
            f"Took {summary['total_seconds']:.0f} s (warm start {summary['warmup_seconds']:.0f} s{cached}; "
            f"RL {summary['rl_seconds']:.0f} s).",
        ],
    )
    return summary


if __name__ == "__main__":
    main()
