"""Supervised fine-tuning on reasoning traces with code: ``python -m lightning_cort.recipes.sft``.

With no arguments this runs on a laptop CPU without network: a tiny Qwen2 policy, initialised at random, learns from
built-in code-integrated traces of the calculator task (``--sft.style text`` gives text-only traces, ``hint`` CoRT's
Hint-Engineering shape), and is evaluated greedily on held-out problems before and after. With ``--data.train`` it
trains on trace files: rows with ``prompt`` and ``completion`` (in the ``code_format``), or chat ``messages`` with a
``tool`` role (what ``python -m lightning_cort.recipes.synth`` writes). Interpreter output is not trained on
(``--sft.mask_tool_output false`` trains on it, R1-Code-Interpreter's ablation).

Examples:
    python -m lightning_cort.recipes.sft
    python -m lightning_cort.recipes.sft --sft.style text --sft.epochs 2
    python -m lightning_cort.recipes.sft --config recipes/sft/r1-distill-qwen-1.5b_lora_1gpu.yaml --dry-run
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lightning_cort.recipes._cli import parse_config
from lightning_cort.recipes._steps import RunParts
from lightning_cort.recipes.config import PolicyConfig, RecipeConfig, SFTOptions


@dataclass
class SFTConfig(RecipeConfig):
    """Configuration of the SFT recipe: the shared sections (``model``, ``data``, ``trainer``, ...) and ``sft``.

    Attributes:
        model: The policy (the tiny one starts from random weights here unless ``model.warm_start``).
        sft: Training settings.
    """

    model: PolicyConfig = field(default_factory=lambda: PolicyConfig(warm_start=False))
    sft: SFTOptions = field(default_factory=SFTOptions)


def main(args: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns the summary (also written to ``<run_dir>/summary.json``).

    Args:
        args: Command-line arguments (``None``: ``sys.argv``).
    """
    cfg = parse_config(SFTConfig, args, prog="python -m lightning_cort.recipes.sft", description=__doc__ or "")
    return run(cfg)


def plan(cfg: SFTConfig) -> Any:
    """The per-GPU memory plan of this config."""
    from lightning_cort.recipes._plan import memory_plan

    length = cfg.sft.max_length or 1024 + cfg.rollout.max_total_tokens
    return memory_plan(
        cfg.model,
        cfg.trainer,
        cfg.plan,
        vocab_size=1024,
        micro_batch_sequences=cfg.sft.batch_size,
        sequence_length=length,
        completion_length=length,
    )


def load_examples(cfg: SFTConfig, tokenizer: Any, fmt: Any, task: Any) -> list[Any]:
    """The training traces as token-exact examples (built-in or from ``data.train``)."""
    from lightning_cort.data import read_table, trace_examples
    from lightning_cort.recipes._steps import task_traces

    if not cfg.data.train:
        return task_traces(task, tokenizer, fmt, cfg.sft.examples, cfg.sft.style)
    examples = []
    for spec in cfg.data.train:
        rows = read_table(spec)[: cfg.data.limit]
        examples.extend(trace_examples(rows, tokenizer, fmt, source=spec))
    if not examples:
        raise ValueError(f"data.train {cfg.data.train} holds no traces")
    return examples


def build(cfg: SFTConfig, run_dir: Any, *, meta: bool = False) -> RunParts:
    """Build the policy, the module and the training examples without training (``meta``: no weights, no data)."""
    from lightning_cort.formats import get_format
    from lightning_cort.modules.sft import SFTModule
    from lightning_cort.recipes._steps import build_policy, build_strategy
    from lightning_cort.tasks.calculator import CalculatorTask

    fmt = get_format(cfg.code_format)
    task = CalculatorTask(kinds=cfg.task.kinds, digits=cfg.task.digits, seed=cfg.task.seed)  # type: ignore[arg-type]
    model, tokenizer, info = build_policy(
        cfg.model, task=task, code_format=fmt, warmup=cfg.warmup, trainer=cfg.trainer, seed=cfg.seed,
        run_dir=run_dir, progress=cfg.progress, meta=meta,
    )  # fmt: skip
    examples = [] if meta else load_examples(cfg, tokenizer, fmt, task)
    dropped = 0
    if cfg.sft.max_length and examples:
        kept = [e for e in examples if e.prompt_ids.numel() + e.completion_ids.numel() <= cfg.sft.max_length]
        dropped, examples = len(examples) - len(kept), kept
        if not examples:
            raise ValueError(f"every trace is longer than sft.max_length={cfg.sft.max_length} tokens")
    module = SFTModule(model, tokenizer, cfg.sft)  # the section whole: optimizer, schedule, masking
    module.logprob_chunk_size = cfg.model.logprob_chunk_size
    module.padding_free = cfg.model.padding_free
    return RunParts(
        fmt, task, model, tokenizer, info, module, build_strategy(cfg.trainer), examples=examples, dropped=dropped
    )


def run(cfg: SFTConfig) -> dict[str, Any]:
    """Run the recipe from a parsed config."""
    from lightning_cort.recipes._report import print_summary
    from lightning_cort.recipes._steps import begin, evaluate_before, finish, train_sft

    started = time.perf_counter()
    run_dir, dry = begin(cfg, "sft", plan)
    if dry is not None:
        return dry
    parts = build(cfg, run_dir)
    module, examples = parts.module, parts.examples
    rollout = cfg.rollout
    held_out, before = evaluate_before(cfg, parts, rollout)

    t0 = time.perf_counter()
    trainer = train_sft(
        module, examples, cfg.sft, cfg.trainer, run_dir, seed=cfg.seed, progress=cfg.progress, run_config=cfg
    )
    train_s = time.perf_counter() - t0

    trained_tokens = sum(int(e.loss_mask.sum()) for e in examples) * cfg.sft.epochs
    extra = {
        "examples": len(examples),
        "dropped_too_long": parts.dropped,
        "trained_tokens": trained_tokens,
        "optimizer_steps": trainer.global_step,
        "final_loss": _last_logged(trainer, "train/sft_loss"),
        "train_seconds": round(train_s, 1),
    }
    done = finish(module, parts, held_out, before, rollout, run_dir, extra, started)
    if done is None:
        return {}
    summary, _ = done
    print_summary(
        f"SFT on {len(examples)} traces: held-out problems, greedy",
        summary["before"],
        summary["after"],
        [
            f"Run directory: [bold]{run_dir}[/bold] (summary.json, logs/, policy/)",
            f"Took {summary['total_seconds']:.0f} s (training {summary['train_seconds']:.0f} s, "
            f"{trained_tokens:,} trained tokens).",
        ],
    )
    return summary


def _last_logged(trainer: Any, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


if __name__ == "__main__":
    main()
