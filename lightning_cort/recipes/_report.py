"""What a training run shows and leaves behind: progress bars, the greedy held-out evaluation, the exported policy,
generations, training curves and the before/after summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lightning_cort.formats.base import CodeFormat
    from lightning_cort.rollout import RolloutConfig
    from lightning_cort.trajectory import Trajectory

#: Metrics shown in the recipes' before/after table, with their number format.
SUMMARY_METRICS = {
    "accuracy": "{:.3f}",
    "tokens_per_response": "{:.1f}",
    "tokens_per_correct": "{:.1f}",
    "tool_calls_per_response": "{:.2f}",
    "code_success_rate": "{:.3f}",
}


def progress_callbacks(progress: bool, phase: str = "train", unit: str = "epoch") -> list:
    """A rich progress bar named after the phase (``SFT epoch 2/6``, ``GRPO`` with its steps counted) when
    ``progress``, else nothing."""
    if not progress:
        return []
    from lightning.pytorch.callbacks import RichProgressBar

    class PhaseProgressBar(RichProgressBar):
        """Lightning's rich bar, described by the phase instead of ``Epoch 0/-2`` (a run bounded by ``max_steps``
        has no epoch count)."""

        def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
            # Short names (``reward`` for ``train/reward``) so they fit the bar's column; no logger version.
            metrics = super().get_metrics(trainer, pl_module)
            short = {"tokens_per_response": "tokens"}
            names = {k: k.rsplit("/", 1)[-1] for k in metrics if k != "v_num"}
            return {short.get(n, n): metrics[k] for k, n in names.items()}

        def _get_train_description(self, current_epoch: int) -> str:
            epochs = self.trainer.max_epochs
            if epochs is None or epochs < 1 or (epochs == 1 and self.trainer.max_steps > 0):
                return phase
            return f"{phase} {unit} {current_epoch + 1}/{epochs}"

    return [PhaseProgressBar(leave=True)]


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
