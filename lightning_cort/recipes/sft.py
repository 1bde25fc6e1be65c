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
from typing import Any, Literal

from lightning_cort.recipes._common import parse_config
from lightning_cort.recipes._config import PolicyConfig, RecipeConfig
from lightning_cort.recipes._steps import RunParts


@dataclass
class SFTOptions:
    """Supervised fine-tuning settings.

    Attributes:
        style: Built-in traces (when ``data.train`` is empty): ``code`` (one program, its output, the answer),
            ``hint`` (Hint-Engineering shape: a step in words, Hint-1, the program, Hint-2, the answer) or ``text``
            (the arithmetic worked out in words).
        examples: Built-in traces to train on.
        epochs: Passes over the data.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: Traces per optimizer step (per process), before gradient accumulation.
        accumulate_grad_batches: Micro-batches per optimizer step.
        warmup_ratio: Fraction of the steps with a linear learning-rate warm-up.
        lr_schedule: ``cosine`` decay after the warm-up, or ``constant``.
        mask_tool_output: Keep interpreter output out of the loss.
        max_length: Drop traces longer than this many tokens (prompt + completion; 0: keep all); the number dropped
            is reported.
        gradient_clip: Gradient-norm clipping (0: off).
        group_by_length: Batch traces of similar length together (shuffled within windows of 50 batches): far less
            padding when lengths vary, as text-only traces do.
    """

    style: Literal["code", "hint", "text"] = "code"
    examples: int = 4000
    epochs: int = 6
    lr: float = 1.5e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    accumulate_grad_batches: int = 1
    warmup_ratio: float = 0.05
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    mask_tool_output: bool = True
    max_length: int = 0
    gradient_clip: float = 1.0
    group_by_length: bool = True


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
    from lightning_cort.recipes._config import memory_plan

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
    from lightning_cort.recipes._common import task_traces

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
    from lightning_cort.recipes._config import build_policy, build_strategy
    from lightning_cort.tasks.calculator import CalculatorTask

    fmt = get_format(cfg.code_format)
    task = CalculatorTask(kinds=cfg.task.kinds, digits=cfg.task.digits, seed=cfg.task.seed)  # type: ignore[arg-type]
    model, tokenizer, info = build_policy(
        cfg.model, task=task, code_format=fmt, warmup=cfg.warmup, seed=cfg.seed, run_dir=run_dir,
        progress=cfg.progress, meta=meta,
    )  # fmt: skip
    examples = [] if meta else load_examples(cfg, tokenizer, fmt, task)
    dropped = 0
    if cfg.sft.max_length and examples:
        kept = [e for e in examples if e.prompt_ids.numel() + e.completion_ids.numel() <= cfg.sft.max_length]
        dropped, examples = len(examples) - len(kept), kept
        if not examples:
            raise ValueError(f"every trace is longer than sft.max_length={cfg.sft.max_length} tokens")
    s = cfg.sft
    steps = s.epochs * max(1, -(-len(examples) // (s.batch_size * s.accumulate_grad_batches)))
    module = SFTModule(
        model,
        tokenizer,
        lr=s.lr,
        weight_decay=s.weight_decay,
        mask_tool_output=s.mask_tool_output,
        warmup_steps=max(1, int(steps * s.warmup_ratio)) if s.warmup_ratio else 0,
        lr_schedule=s.lr_schedule,
    )
    module.logprob_chunk_size = cfg.model.logprob_chunk_size
    return RunParts(
        fmt, task, model, tokenizer, info, module, build_strategy(cfg.trainer), examples=examples, dropped=dropped
    )


def run(cfg: SFTConfig) -> dict[str, Any]:
    """Run the recipe from a parsed config."""
    from functools import partial

    from lightning_cort.data import LengthGroupedSampler, ListDataset, ResumableDataLoader
    from lightning_cort.recipes._config import build_trainer, resume_path
    from lightning_cort.recipes._steps import begin, evaluate_before, finish, print_summary
    from lightning_cort.trajectory import collate_trajectories

    started = time.perf_counter()
    run_dir, dry = begin(cfg, "sft", plan)
    if dry is not None:
        return dry
    parts = build(cfg, run_dir)
    tokenizer, module = parts.tokenizer, parts.module
    rollout = cfg.rollout
    held_out, before = evaluate_before(cfg, parts, rollout)

    examples = parts.examples
    sampler = None
    if cfg.sft.group_by_length:
        lengths = [e.prompt_ids.numel() + e.completion_ids.numel() for e in examples]
        sampler = LengthGroupedSampler(lengths, cfg.sft.batch_size, seed=cfg.seed)
    loader = ResumableDataLoader(
        ListDataset(examples),
        batch_size=cfg.sft.batch_size,
        shuffle=True,
        seed=cfg.seed,
        collate_fn=partial(collate_trajectories, pad_token_id=tokenizer.pad_token_id),
        **({"sampler": sampler} if sampler is not None else {}),
    )
    trainer = build_trainer(
        cfg.trainer,
        run_dir,
        [],
        progress=cfg.progress,
        phase="SFT",
        max_epochs=cfg.sft.epochs,
        accumulate_grad_batches=cfg.sft.accumulate_grad_batches,
        gradient_clip_val=cfg.sft.gradient_clip or None,
    )
    t0 = time.perf_counter()
    trainer.fit(module, loader, ckpt_path=resume_path(cfg.trainer, run_dir))
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
