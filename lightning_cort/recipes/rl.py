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
from dataclasses import dataclass, field, replace
from typing import Any

from lightning_cort.modules.grpo import GRPOConfig
from lightning_cort.recipes._cli import parse_config
from lightning_cort.recipes._steps import RunParts
from lightning_cort.recipes.config import RecipeConfig


@dataclass
class RLConfig(RecipeConfig):
    """Configuration of the RL recipe: the shared sections (``model``, ``data``, ``trainer``, ...) and ``grpo``.

    Attributes:
        grpo: RL settings.
    """

    grpo: GRPOConfig = field(default_factory=GRPOConfig)

    def validate(self) -> None:
        """A backend that can serve the policy, sampling GRPO can train on, and a reward that resolves."""
        from lightning_cort.modules.grpo import resolve_reward
        from lightning_cort.recipes.config import check_rollout_backend, check_sampling

        super().validate()
        check_rollout_backend(self.model, self.rollout, self.trainer)
        check_sampling(self.rollout, self.grpo)
        resolve_reward(self.grpo.reward)
        if self.grpo.overlong_buffer > (self.grpo.max_completion_length or self.rollout.max_total_tokens):
            raise ValueError(
                f"grpo.overlong_buffer ({self.grpo.overlong_buffer}) must not exceed the completion budget "
                f"(rollout.max_total_tokens {self.rollout.max_total_tokens}); e.g. a quarter of it"
            )


def main(args: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns the summary (also written to ``<run_dir>/summary.json``).

    Args:
        args: Command-line arguments (``None``: ``sys.argv``).
    """
    cfg = parse_config(RLConfig, args, prog="python -m lightning_cort.recipes.rl", description=__doc__ or "")
    return run(cfg)


def prompts_per_batch(g: GRPOConfig) -> int:
    """Prompt rows per step: the step's own, and with dynamic sampling a reserve for each further round."""
    return g.prompts_per_step * (1 + g.dynamic_sampling_rounds if g.dynamic_sampling else 1)


def plan(cfg: RLConfig, run_dir: Any = None) -> Any:
    """The per-GPU memory plan of this config."""
    from lightning_cort.recipes._plan import memory_plan

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
        rollout=cfg.rollout,
        rollout_sequences=per_step,
    )


def build(cfg: RLConfig, run_dir: Any, *, meta: bool = False) -> RunParts:
    """Build every part of the run without starting it: policy, module, callbacks, strategy, data.

    With ``meta`` the policy lives on the meta device and no data is read (how the YAML tests instantiate real-model
    configs offline).
    """
    from lightning_cort.callbacks import TokenEfficiencyCallback
    from lightning_cort.formats import get_format
    from lightning_cort.modules.grpo import GRPOModule, resolve_reward
    from lightning_cort.recipes._steps import (
        build_policy,
        build_strategy,
        interpreter_callbacks,
        load_problem_rows,
        train_offset,
    )
    from lightning_cort.tasks.calculator import CalculatorTask

    cfg.validate()  # parse_config ran it already; a config built in code gets the same checks
    reward_fn = resolve_reward(cfg.grpo.reward)
    fmt = get_format(cfg.code_format)
    task = CalculatorTask(kinds=cfg.task.kinds, digits=cfg.task.digits, seed=cfg.task.seed)  # type: ignore[arg-type]
    model, tokenizer, info = build_policy(
        cfg.model, task=task, code_format=fmt, warmup=cfg.warmup, trainer=cfg.trainer, seed=cfg.seed,
        run_dir=run_dir, progress=cfg.progress, meta=meta,
    )  # fmt: skip
    g = cfg.grpo
    if (g.loss_type == "dr_grpo" or g.overlong_buffer) and g.max_completion_length is None:
        # Dr. GRPO's constant, and where DAPO's overlong punishment ends: the completion budget.
        g = replace(g, max_completion_length=cfg.rollout.max_total_tokens)
    module = GRPOModule(model, tokenizer, g, reward_fn=reward_fn)
    module.logprob_chunk_size = cfg.model.logprob_chunk_size
    module.padding_free = cfg.model.padding_free
    efficiency = TokenEfficiencyCallback()
    callbacks = [*interpreter_callbacks(cfg.rollout, fmt, cfg.seed), efficiency]
    # RL prompts come after the warm-up traces in the train stream, so RL sees new problems.
    rows = (
        []
        if meta
        else load_problem_rows(cfg.data, task, g.steps * prompts_per_batch(g), start=train_offset(cfg.task, cfg.warmup))
    )
    return RunParts(
        fmt, task, model, tokenizer, info, module, build_strategy(cfg.trainer), callbacks, rows=rows,
        efficiency=efficiency,
    )  # fmt: skip


def run(cfg: RLConfig) -> dict[str, Any]:
    """Run the recipe from a parsed config."""
    from functools import partial

    import lightning as L

    from lightning_cort.data import ListDataset, ResumableDataLoader
    from lightning_cort.recipes._report import plot_training_curves, print_summary
    from lightning_cort.recipes._steps import begin, build_trainer, evaluate_before, finish, resume_path
    from lightning_cort.rollout.sampler import collate_prompts

    started = time.perf_counter()
    run_dir, dry = begin(cfg, "rl", plan)
    if dry is not None:
        return dry
    parts = build(cfg, run_dir)
    module = parts.module
    held_out, before = evaluate_before(cfg, parts, cfg.rollout)

    g = cfg.grpo
    efficiency = parts.efficiency
    trainer = build_trainer(
        cfg.trainer,
        run_dir,
        parts.callbacks,
        progress=cfg.progress,
        run_config=cfg,
        phase="GRPO steps",
        # Under manual optimization the trainer counts optimizer steps: each RL step makes ppo_epochs × minibatches.
        max_steps=g.steps * g.ppo_epochs * g.minibatches,
    )
    # Resumable: a run restarted from a checkpoint continues with the prompts that come next.
    # With dynamic sampling each batch carries reserve prompts beyond the step's own (RolloutBatch.reserve).
    collate = partial(collate_prompts, prompts=g.prompts_per_step)
    loader = ResumableDataLoader(ListDataset(parts.rows), batch_size=prompts_per_batch(g), collate_fn=collate)
    t0 = time.perf_counter()
    # The RL phase's random streams start from the seed, whether the warm start was trained here or loaded from cache.
    L.seed_everything(cfg.seed, verbose=False)
    trainer.fit(module, loader, ckpt_path=resume_path(cfg.trainer, run_dir))
    rl_s = time.perf_counter() - t0

    extra = {
        "train_reward_first": efficiency.history[0]["accuracy"] if efficiency.history else None,
        "train_reward_last": efficiency.history[-1]["accuracy"] if efficiency.history else None,
        "rl_steps": g.steps,
        "warmup_from_cache": parts.info["warmup_from_cache"],
        "warmup_seconds": parts.info["warmup_seconds"],
        "rl_seconds": round(rl_s, 1),
    }
    if trainer.is_global_zero:
        curves = {"train/reward": "mean reward", "efficiency/tokens_per_response": "tokens per response"}
        plot = plot_training_curves(run_dir, curves, "GRPO training rollouts")
        extra["training_curves"] = str(plot) if plot else None
    done = finish(module, parts, held_out, before, cfg.rollout, run_dir, extra, started)
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
