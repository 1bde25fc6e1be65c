"""Rejection fine-tuning with a code interpreter: ``python -m lightning_cort.recipes.rft``.

Each round samples ``samples_per_prompt`` trajectories per prompt with the current policy (code executed in the
local sandbox), keeps those that pass the filters — by default CoRT's: a correct answer, no delayed computation, no
result distrust — at most ``per_prompt`` per prompt (shortest first), and fine-tunes on them with interpreter output
masked. One round is CoRT's offline RFT; several rounds are expert iteration, and ``code_decision_weighting`` weights
each kept sample by the value of its decision to use code (AutoCode).

With no arguments this runs on a laptop CPU without network, from the tiny policy's supervised warm start on the
built-in calculator task, and evaluates greedily on held-out problems before and after.

Examples:
    python -m lightning_cort.recipes.rft
    python -m lightning_cort.recipes.rft --rft.rounds 3 --rft.filters correct --rft.code_decision_weighting true
    python -m lightning_cort.recipes.rft --model.name_or_path runs/sft-.../policy --data.train '[problems.jsonl]'
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lightning_cort.recipes._cli import parse_config
from lightning_cort.recipes._steps import RunParts
from lightning_cort.recipes.config import RecipeConfig, RFTOptions


@dataclass
class RFTConfig(RecipeConfig):
    """Configuration of the RFT recipe: the shared sections (``model``, ``data``, ``trainer``, ...) and ``rft``.

    Attributes:
        rft: Round settings.
    """

    rft: RFTOptions = field(default_factory=RFTOptions)

    def validate(self) -> None:
        """The rollout backend must be able to serve the policy on this strategy."""
        from lightning_cort.recipes.config import check_rollout_backend

        super().validate()
        check_rollout_backend(self.model, self.rollout, self.trainer)


def main(args: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns the summary (also written to ``<run_dir>/summary.json``).

    Args:
        args: Command-line arguments (``None``: ``sys.argv``).
    """
    cfg = parse_config(RFTConfig, args, prog="python -m lightning_cort.recipes.rft", description=__doc__ or "")
    return run(cfg)


def plan(cfg: RFTConfig) -> Any:
    """The per-GPU memory plan of this config."""
    from lightning_cort.recipes._plan import memory_plan

    length = 1024 + cfg.rollout.max_total_tokens
    return memory_plan(
        cfg.model,
        cfg.trainer,
        cfg.plan,
        vocab_size=1024,
        micro_batch_sequences=cfg.rft.batch_size,
        sequence_length=length,
        completion_length=cfg.rollout.max_total_tokens,
        rollout=cfg.rollout,
        rollout_sequences=min(cfg.rft.prompts, 64) * cfg.rft.samples_per_prompt,
    )


def build(cfg: RFTConfig, run_dir: Any, *, meta: bool = False) -> RunParts:
    """Build the policy, the module and its callbacks without training (``meta``: no weights, no data)."""
    from lightning_cort.formats import get_format
    from lightning_cort.modules.rft import RFTModule
    from lightning_cort.recipes._steps import (
        build_policy,
        build_strategy,
        interpreter_callbacks,
        load_problem_rows,
        train_offset,
    )
    from lightning_cort.tasks.calculator import CalculatorTask

    cfg.validate()  # parse_config ran it already; a config built in code gets the same checks
    fmt = get_format(cfg.code_format)
    task = CalculatorTask(kinds=cfg.task.kinds, digits=cfg.task.digits, seed=cfg.task.seed)  # type: ignore[arg-type]
    model, tokenizer, info = build_policy(
        cfg.model, task=task, code_format=fmt, warmup=cfg.warmup, trainer=cfg.trainer, seed=cfg.seed,
        run_dir=run_dir, progress=cfg.progress, meta=meta,
    )  # fmt: skip
    r = cfg.rft
    start = train_offset(cfg.task, cfg.warmup)
    rows = [{"prompt": "placeholder"}] if meta else load_problem_rows(cfg.data, task, r.prompts, start)
    module = RFTModule(model, tokenizer, rows[: r.prompts] if not cfg.data.train else rows, r, seed=cfg.seed)
    module.logprob_chunk_size = cfg.model.logprob_chunk_size
    module.padding_free = cfg.model.padding_free
    callbacks = interpreter_callbacks(cfg.rollout, fmt, cfg.seed)
    return RunParts(fmt, task, model, tokenizer, info, module, build_strategy(cfg.trainer), callbacks)


def run(cfg: RFTConfig) -> dict[str, Any]:
    """Run the recipe from a parsed config."""
    import lightning as L

    from lightning_cort.recipes._report import print_summary
    from lightning_cort.recipes._steps import begin, build_trainer, evaluate_before, finish, resume_path

    started = time.perf_counter()
    run_dir, dry = begin(cfg, "rft", plan)
    if dry is not None:
        return dry
    parts = build(cfg, run_dir)
    module = parts.module
    held_out, before = evaluate_before(cfg, parts, cfg.rollout)  # greedy: the held-out check samples nothing

    trainer = build_trainer(
        cfg.trainer,
        run_dir,
        parts.callbacks,
        progress=cfg.progress,
        run_config=cfg,
        phase="RFT",
        unit="round",
        max_epochs=cfg.rft.rounds,
        reload_dataloaders_every_n_epochs=1,
    )
    t0 = time.perf_counter()
    # The rounds' random streams start from the seed, whether the warm start was trained here or loaded from cache.
    L.seed_everything(cfg.seed, verbose=False)
    trainer.fit(module, ckpt_path=resume_path(cfg.trainer, run_dir))
    train_s = time.perf_counter() - t0

    extra = {
        "rounds": [dict(r) for r in module.rounds],
        "warmup_from_cache": parts.info["warmup_from_cache"],
        "train_seconds": round(train_s, 1),
    }
    done = finish(module, parts, held_out, before, cfg.rollout, run_dir, extra, started)
    if done is None:
        return {}
    summary, _ = done
    kept = ", ".join(f"{r['kept']:.0f}/{r['sampled']:.0f}" for r in module.rounds)
    print_summary(
        "RFT: held-out problems, greedy",
        summary["before"],
        summary["after"],
        [
            f"Kept per round: {kept}",
            f"Run directory: [bold]{run_dir}[/bold] (summary.json, logs/, policy/)",
            f"Took {summary['total_seconds']:.0f} s (training {summary['train_seconds']:.0f} s).",
        ],
    )
    return summary


if __name__ == "__main__":
    main()
