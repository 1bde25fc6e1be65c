"""Steps the training recipes share after building their parts: held-out evaluation, policy export, the summary."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning as L
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lightning_cort.callbacks import TokenEfficiencyCallback
    from lightning_cort.formats.base import CodeFormat
    from lightning_cort.recipes._config import DataConfig
    from lightning_cort.rollout import RolloutConfig
    from lightning_cort.tasks.calculator import CalculatorTask
    from lightning_cort.trajectory import Trajectory


@dataclass
class RunParts:
    """What a training recipe's ``build`` makes before anything trains.

    Attributes:
        format: The policy's code format.
        task: The built-in task (its held-out problems, and its training problems when no data files are given).
        model: The policy (on the meta device when built with ``meta=True``).
        tokenizer: Its tokenizer.
        info: How the policy was made (``warmup_from_cache``, ``warmup_seconds``, ...).
        module: The LightningModule that trains it.
        strategy: The Lightning strategy (object or name).
        callbacks: The Trainer's callbacks beyond checkpointing and progress (sandbox, rollouts, metrics).
        rows: Prompt rows to train on (RL).
        examples: Traces to train on (SFT).
        dropped: Traces left out for being too long (SFT).
        efficiency: The token-efficiency callback, whose history the summary reports (RL).
    """

    format: CodeFormat
    task: CalculatorTask
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: dict[str, Any]
    module: L.LightningModule
    strategy: Any
    callbacks: list[L.Callback] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    examples: list[Trajectory] = field(default_factory=list)
    dropped: int = 0
    efficiency: TokenEfficiencyCallback | None = None


#: Metrics shown in the recipes' before/after table, with their number format.
SUMMARY_METRICS = {
    "accuracy": "{:.3f}",
    "tokens_per_response": "{:.1f}",
    "tokens_per_correct": "{:.1f}",
    "tool_calls_per_response": "{:.2f}",
    "code_success_rate": "{:.3f}",
}


def eval_rows(data: DataConfig, task: CalculatorTask, size: int) -> list[dict[str, Any]]:
    """Held-out rows: ``size`` problems of the built-in task's test split (none when ``data.val`` files are set,
    which are used instead)."""
    from lightning_cort.recipes._common import task_rows

    if data.val:
        from lightning_cort.evaluation import load_rows
        from lightning_cort.formats.cort import CORT_SUFFIX

        suffix = data.prompt_suffix if data.prompt_suffix is not None else CORT_SUFFIX
        rows: list[dict[str, Any]] = []
        for spec in data.val:
            rows.extend(load_rows(spec, data.columns, limit=size or None, prompt_suffix=suffix))
        return rows
    return task_rows(task, "test", size) if size > 0 else []


def greedy_eval(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, Any]],
    code_format: CodeFormat,
    rollout: RolloutConfig,
    progress: bool = False,
    description: str = "held-out evaluation",
) -> tuple[dict[str, float], list[Trajectory]]:
    """Greedy rollouts of ``rows`` with a fresh local sandbox, scored (empty metrics for no rows)."""
    if not rows:
        return {}, []
    from lightning_cort.evaluation import evaluate
    from lightning_cort.sandbox import LocalSandbox

    with LocalSandbox(timeout=rollout.timeout or 5.0) as sandbox:
        return evaluate(
            model, tokenizer, rows, code_format, sandbox, rollout, progress=progress, description=description
        )


def save_policy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, run_dir: Path) -> Path:
    """Export the trained policy to ``<run_dir>/policy`` (merged weights for LoRA; the adapter alone for 4-bit)."""
    from lightning_cort.models.policy import export_policy, is_peft_model, is_quantized

    mode = "full"
    if is_peft_model(model):
        mode = "adapter" if is_quantized(model) else "merged"
    return export_policy(model, tokenizer, run_dir / "policy", mode=mode)  # type: ignore[arg-type]


def write_generations(trajectories: list[Trajectory], path: Path) -> None:
    """One JSON line per held-out trajectory: id, gold answer, completion, finish reason."""
    with open(path, "w", encoding="utf-8") as f:
        for t in trajectories:
            record = {
                "id": t.row.get("id"),
                "answer": t.row.get("answer"),
                "completion": t.completion_text,
                "finish_reason": t.finish_reason,
            }
            f.write(json.dumps(record) + "\n")


def plot_training_curves(run_dir: Path, curves: dict[str, str], title: str) -> Path | None:
    """``training_curves.png``: each logged metric of ``curves`` (``{"train/reward": "mean reward", ...}``) against
    the training step, read from the run's CSV log (``None`` when nothing was logged)."""
    import csv

    logs = sorted((run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not logs:
        return None
    series: dict[str, list[float]] = {k: [] for k in curves}
    with open(logs[-1], newline="") as f:
        for row in csv.DictReader(f):
            for key in curves:
                if row.get(key):
                    series[key].append(float(row[key]))
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.3), squeeze=False)
    for ax, (key, values) in zip(axes[0], series.items()):
        ax.plot(range(1, len(values) + 1), values, marker=".")
        ax.set_xlabel("step")
        ax.set_ylabel(curves[key])
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    out = run_dir / "training_curves.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """``metrics`` with NaN/inf replaced by ``None`` (JSON has no NaN)."""
    return {k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None) for k, v in metrics.items()}


def write_summary(summary: dict[str, Any], run_dir: Path) -> None:
    """``summary.json`` in the run directory."""
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def print_summary(title: str, before: dict[str, Any], after: dict[str, Any], footer: list[str]) -> None:
    """A before/after table of :data:`SUMMARY_METRICS` and a few lines under it."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for key, fmt in SUMMARY_METRICS.items():
        cells = [before.get(key), after.get(key)]
        table.add_row(key, *("-" if v is None else fmt.format(v) for v in cells))
    console = Console()
    console.print(table)
    for line in footer:
        console.print(line)


def begin(cfg: Any, recipe: str, plan_fn: Any) -> tuple[Path, dict[str, Any] | None]:
    """The start every training recipe shares: threads, seed, run directory, saved config, the memory plan.

    Returns:
        ``(run_dir, result)``; ``result`` is the dry run's answer (the plan) when ``cfg.dry_run``, else ``None``.
    """
    import lightning as L
    import torch

    from lightning_cort.recipes._common import make_run_dir, save_config
    from lightning_cort.recipes._config import check_plan, report_plan

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, verbose=False)
    run_dir = make_run_dir(cfg.run_dir, recipe)
    save_config(cfg, run_dir)
    memory = plan_fn(cfg)
    if cfg.dry_run:
        title = f"{recipe.upper()} memory plan (per GPU)"
        return run_dir, {"plan": report_plan(memory, run_dir, title), "run_dir": str(run_dir)}
    check_plan(memory, cfg.plan, cfg.trainer)
    return run_dir, None


def evaluate_before(cfg: Any, parts: RunParts, rollout: RolloutConfig) -> tuple[list[dict[str, Any]], dict]:
    """The held-out rows (none under several processes) and the metrics before training (empty when
    ``task.eval_before`` is off)."""
    from lightning_cort.recipes._config import world_size

    single = world_size(cfg.trainer) == 1
    held_out = eval_rows(cfg.data, parts.task, cfg.task.eval_size) if single else []
    rows = held_out if cfg.task.eval_before else []
    before, _ = greedy_eval(
        parts.model, parts.tokenizer, rows, parts.format, rollout, cfg.progress, "held-out eval, before"
    )
    return held_out, before


def finish(
    module: Any,
    parts: RunParts,
    held_out: list[dict[str, Any]],
    before: dict[str, Any],
    rollout: RolloutConfig,
    run_dir: Path,
    extra: dict[str, Any],
    started: float,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The end every training recipe shares: evaluate after, export the policy (every rank, for FSDP2), and on
    rank 0 write the generations and ``summary.json``.

    Returns:
        ``(summary, after)`` on rank 0, ``None`` on the other ranks.
    """
    import time

    tokenizer = parts.tokenizer
    progress = bool(module.trainer.progress_bar_callback)
    after, trajectories = greedy_eval(
        module.model, tokenizer, held_out, parts.format, rollout, progress, "held-out eval, after"
    )
    save_policy(module.model, tokenizer, run_dir)
    if not module.trainer.is_global_zero:
        return None
    write_generations(trajectories, run_dir / "eval_generations.jsonl")
    summary = {
        "accuracy_before": before.get("accuracy"),
        "accuracy_after": after.get("accuracy"),
        "tool_calls_per_response": after.get("tool_calls_per_response"),
        "tokens_per_response": after.get("tokens_per_response"),
        "tokens_per_correct": finite(after).get("tokens_per_correct"),
        "code_success_rate": after.get("code_success_rate"),
        "before": finite(before),
        "after": finite(after),
        **extra,
        "total_seconds": round(time.perf_counter() - started, 1),
        "run_dir": str(run_dir),
    }
    write_summary(summary, run_dir)
    return summary, after
