"""Evaluate a policy with a code interpreter: ``python -m lightning_cort.recipes.eval``.

With no arguments this runs on a laptop CPU without network: the tiny policy warm-started on the built-in calculator
task (the same cached warm start as the RL recipe) is evaluated greedily on held-out problems, where accuracy is
meaningful. With ``--data`` it evaluates benchmark files (CoRT's jsonl format by default, or any jsonl/parquet file
with ``--columns``) and ``--preset cort`` reproduces CoRT's protocol: avg@16 on AIME24/AIME25/AMC23 and avg@4 on
MATH500/OlympiadBench, temperature 0.6, top-p 0.95, 15 code calls, 32k tokens, math-verify over the whole generation;
``--preset strict`` scores only the last ``\\boxed{}`` after ``</think>``.

Generations are appended to ``generations.jsonl`` as they are produced, so an interrupted evaluation resumes where it
stopped (finished problems are not generated again). The run directory gets ``metrics.json``, ``config.json`` and two
plots: accuracy against a token budget and the token distributions of correct and incorrect responses.

Examples:
    python -m lightning_cort.recipes.eval
    python -m lightning_cort.recipes.eval --model.path runs/rl-.../policy --data ../shared/data/cort/test_aime24.reason_step.jsonl --preset cort
    python -m lightning_cort.recipes.eval --data my.jsonl --columns '{"problem": "question", "answer": "solution"}'
"""  # noqa: E501

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning_cort.models.tiny import TinyConfig
from lightning_cort.recipes._cli import make_run_dir, parse_config, save_config
from lightning_cort.recipes._steps import task_rows, warm_start
from lightning_cort.recipes.config import TaskConfig, WarmupConfig

#: Held-out problems of the built-in task evaluated when ``limit`` is not set.
BUILTIN_PROBLEMS = 200


@dataclass
class EvalModelConfig:
    """Which policy to evaluate.

    Attributes:
        path: A model directory or hub id in Hugging Face format; ``None`` evaluates the tiny warm-started policy.
        adapter: A LoRA adapter directory to apply on top of ``path``.
        checkpoint: A Lightning checkpoint of a lightning_cort module (its ``model.*`` weights are loaded into the
            policy built from ``path``, or into the tiny policy).
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto``.
    """

    path: str | None = None
    adapter: str | None = None
    checkpoint: str | None = None
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"


@dataclass
class EvalConfig:
    """Configuration of the eval recipe.

    Attributes:
        run_dir: Output directory (default ``runs/eval-<timestamp>``; pass an existing one to resume).
        seed: Sampling seed.
        model: The policy.
        data: Benchmark files (``.jsonl``/``.json``/``.parquet``) or hub names; empty: the built-in calculator task.
        columns: Column names of ``problem``, ``answer`` and (optional) ``prompt``; default: CoRT's format.
        limit: Evaluate the first ``limit`` problems of each dataset (the built-in task: 200 when not set).
        prompt_suffix: Ask with this instruction, on a new line after each problem, instead of the prompt the data
            gives (CoRT's files carry CoRT's instruction; the built-in task uses it too), e.g. for a text-only arm
            with ``max_calls 0``.
        preset: ``cort`` (CoRT's protocol), ``strict`` (CoRT's sampling, strict scoring), or ``custom`` (the values
            below as given).
        n: Samples per problem (``None``: the preset's; 1 for ``custom``).
        temperature: Sampling temperature (0: greedy). Presets set 0.6.
        top_p: Nucleus mass. Presets set 0.95.
        max_calls: Code calls per response. Presets set 15.
        max_total_tokens: Tokens per response, interpreter output included. Presets set 32768.
        max_tokens_per_call: Tokens per generation round.
        scoring: ``cort`` (math-verify over the whole generation) or ``strict`` (last box after ``</think>``).
        code_format: ``cort``, ``retool`` or ``hermes``.
        timeout: Seconds per code execution.
        batch_size: Problems per generation batch.
        budgets: Token budgets of the accuracy-vs-budget curve (empty: 8 points up to ``max_total_tokens``).
        task: The built-in task (when ``data`` is empty).
        warmup: The tiny policy's warm start (when ``model.path`` is empty).
        tiny: The tiny policy's shape.
        progress: Print progress.
        verbose: Keep library banners, tips, weight-loading bars and deprecation warnings (hidden by default).
    """

    run_dir: str | None = None
    seed: int = 0
    model: EvalModelConfig = field(default_factory=EvalModelConfig)
    data: list[str] = field(default_factory=list)
    columns: dict[str, str] | None = None
    limit: int | None = None
    prompt_suffix: str | None = None
    preset: Literal["cort", "strict", "custom"] = "custom"
    n: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    max_calls: int = 2
    max_total_tokens: int = 160
    max_tokens_per_call: int = 128
    scoring: Literal["cort", "strict"] = "strict"
    code_format: Literal["cort", "retool", "hermes"] = "cort"
    timeout: float = 5.0
    batch_size: int = 32
    budgets: list[int] = field(default_factory=list)
    task: TaskConfig = field(default_factory=TaskConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    tiny: TinyConfig = field(default_factory=TinyConfig)
    progress: bool = True
    verbose: bool = False


def apply_preset(cfg: EvalConfig) -> EvalConfig:
    """Fill in the preset's protocol (``cort`` / ``strict``); ``custom`` leaves the config as given."""
    if cfg.preset in ("cort", "strict"):
        cfg.temperature, cfg.top_p, cfg.max_calls, cfg.max_total_tokens = 0.6, 0.95, 15, 32768
        cfg.max_tokens_per_call = 32768
        cfg.scoring = cfg.preset
    return cfg


def samples_for(cfg: EvalConfig, dataset: str) -> int:
    """Samples per problem for ``dataset`` (CoRT: 16 or 4 by benchmark; 4 for others under a preset)."""
    from lightning_cort.evaluation import CORT_SAMPLES

    if cfg.n is not None:
        return cfg.n
    if cfg.preset in ("cort", "strict"):
        return CORT_SAMPLES.get(dataset, 4)
    return 1


def main(args: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns the metrics (also written to ``<run_dir>/metrics.json``).

    Args:
        args: Command-line arguments (``None``: ``sys.argv``).
    """
    cfg = parse_config(EvalConfig, args, prog="python -m lightning_cort.recipes.eval", description=__doc__ or "")
    return run(apply_preset(cfg))


def _load_model(cfg: EvalConfig) -> tuple[Any, Any]:
    import torch

    from lightning_cort.models.policy import PolicySettings, load_policy
    from lightning_cort.models.tiny import tiny_tokenizer

    if cfg.model.path is None:
        from lightning_cort.formats import get_format
        from lightning_cort.tasks.calculator import CalculatorTask

        tokenizer = tiny_tokenizer()
        task = CalculatorTask(kinds=cfg.task.kinds, digits=cfg.task.digits, seed=cfg.task.seed)  # type: ignore[arg-type]
        fmt = get_format(cfg.code_format)
        model, _ = warm_start(tokenizer, cfg.tiny, cfg.warmup, task, fmt, 0, cfg.progress)
    else:
        model, tokenizer = load_policy(PolicySettings(name_or_path=cfg.model.path, dtype=cfg.model.dtype))
    if cfg.model.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, cfg.model.adapter)
    if cfg.model.checkpoint:
        state = torch.load(cfg.model.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected or [m for m in missing if "lm_head" not in m]:
            raise ValueError(
                f"checkpoint {cfg.model.checkpoint} does not fit the policy: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
    return model.eval(), tokenizer


def _datasets(cfg: EvalConfig) -> dict[str, list[dict[str, Any]]]:
    from lightning_cort.evaluation import dataset_name, load_rows
    from lightning_cort.tasks.calculator import CalculatorTask

    if not cfg.data:
        task = CalculatorTask(kinds=cfg.task.kinds, digits=cfg.task.digits, seed=cfg.task.seed)  # type: ignore[arg-type]
        out = {"calculator": task_rows(task, "test", cfg.limit or BUILTIN_PROBLEMS)}
    else:
        out = {}
        for spec in cfg.data:
            name = dataset_name(spec)
            if name in out:
                raise ValueError(f"two datasets are both named {name!r}: rename one of the files")
            out[name] = load_rows(spec, cfg.columns, limit=cfg.limit)
    if cfg.prompt_suffix is not None:
        for rows in out.values():
            for row in rows:
                row["prompt"] = f"{row['problem']}\n{cfg.prompt_suffix}" if cfg.prompt_suffix else row["problem"]
    return out


def run(cfg: EvalConfig) -> dict[str, Any]:
    """Run the recipe from a parsed config (presets already applied)."""
    import lightning as L

    from lightning_cort._console import progress_bar
    from lightning_cort.evaluation import read_records, trajectory_record
    from lightning_cort.formats import get_format
    from lightning_cort.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingConfig
    from lightning_cort.sandbox import LocalSandbox

    started = time.perf_counter()
    L.seed_everything(cfg.seed, verbose=False)
    run_dir = make_run_dir(cfg.run_dir, "eval")
    save_config(cfg, run_dir)
    datasets = _datasets(cfg)
    model, tokenizer = _load_model(cfg)
    fmt = get_format(cfg.code_format)
    sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_tokens_per_call)
    rollout = RolloutConfig(
        max_calls=cfg.max_calls,
        max_total_tokens=cfg.max_total_tokens,
        max_tokens_per_call=cfg.max_tokens_per_call,
        timeout=cfg.timeout,
        sampling=sampling,
    )
    gen_path = run_dir / "generations.jsonl"
    _drop_partial_line(gen_path)
    done = {(r["dataset"], r["index"]) for r in read_records(gen_path)}
    generated = 0
    with LocalSandbox(timeout=cfg.timeout) as sandbox, open(gen_path, "a", encoding="utf-8") as out:
        engine = RolloutEngine(HFBackend(model, tokenizer), tokenizer, fmt, sandbox, rollout)
        for name, rows in datasets.items():
            n = samples_for(cfg, name)
            todo = [i for i in range(len(rows)) if (name, i) not in done]
            if cfg.progress:
                print(f"[eval] {name}: {len(rows)} problems × {n} samples ({len(rows) - len(todo)} done before)")
            with progress_bar(cfg.progress, f"generating ({name})", len(todo)) as advance:
                for start in range(0, len(todo), cfg.batch_size):
                    chunk = todo[start : start + cfg.batch_size]
                    prompts = engine.encode_prompts([rows[i]["prompt"] for i in chunk])
                    trajectories = engine.generate(prompts, [rows[i] for i in chunk], n=n)
                    for j, t in enumerate(trajectories):
                        index, sample = chunk[j // n], j % n
                        out.write(json.dumps(trajectory_record(t, name, index, sample)) + "\n")
                    out.flush()  # a problem's samples are on disk before the next batch starts
                    generated += len(chunk)
                    advance(len(chunk))
    records = read_records(gen_path)
    metrics = score_and_report(cfg, records, datasets, tokenizer, run_dir)
    metrics["_run"] = {
        "run_dir": str(run_dir),
        "problems_generated": generated,
        "problems_resumed": len(done),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _drop_partial_line(path: Path) -> None:
    """Cut a line left half-written by an interruption (and anything after it), so appending starts clean."""
    if not path.exists():
        return
    from lightning_cort.evaluation import read_records

    keep = len(read_records(path))
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    with open(path, "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines[:keep]))


def score_and_report(
    cfg: EvalConfig,
    records: list[dict[str, Any]],
    datasets: dict[str, list[dict[str, Any]]],
    tokenizer: Any,
    run_dir: Path,
) -> dict[str, Any]:
    """Score every record, compute each dataset's metrics, print the table and draw the plots."""
    from lightning_cort.answer_pool import AnswerChecker
    from lightning_cort.evaluation import record_metrics, record_response
    from lightning_cort.metrics import no_answer_diagnosis
    from lightning_cort.rewards.math import final_answer

    budgets = cfg.budgets or [max(1, cfg.max_total_tokens * k // 8) for k in range(1, 9)]
    metrics: dict[str, Any] = {}
    per_dataset: dict[str, tuple[list[dict[str, Any]], list[bool]]] = {}
    with AnswerChecker(mode=cfg.scoring) as checker:
        for name in datasets:
            recs = [r for r in records if r["dataset"] == name]
            if not recs:
                continue
            correct = checker.check_many([(record_response(r), r["answer"]) for r in recs])
            answers = [final_answer(record_response(r)) for r in recs]
            diagnosis = no_answer_diagnosis([(record_response(r), r["finish_reason"]) for r in recs])
            if diagnosis is not None:
                warnings.warn(f"{name}: {diagnosis}", stacklevel=2)
            # Responses longer than a budget are cut there and checked again, all in one batch.
            cuts = [(i, b) for i, r in enumerate(recs) for b in budgets if r["model_tokens"] + r["tool_tokens"] > b]
            texts = [
                record_response(recs[i], tokenizer.decode(recs[i]["completion_ids"][:b], skip_special_tokens=False))
                for i, b in cuts
            ]
            cut_correct = dict(zip(cuts, checker.check_many(zip(texts, [recs[i]["answer"] for i, _ in cuts]))))
            metrics[name] = record_metrics(
                recs, correct, answers, budgets=budgets, rescore=lambda i, b, c=cut_correct: c[(i, b)]
            )
            per_dataset[name] = (recs, correct)
    _print_table(metrics)
    _plots(per_dataset, metrics, run_dir)
    return metrics


def _print_table(metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="evaluation")
    for col in ("dataset", "n", "accuracy", "pass@n", "maj@n", "tokens", "tokens ✓", "tokens ✗", "calls", "code ok"):
        table.add_column(col, justify="right")
    for name, m in metrics.items():
        n = m["samples_per_problem"]
        table.add_row(
            name,
            str(n),
            f"{m['accuracy']:.3f}",
            f"{m.get(f'pass@{n}', float('nan')):.3f}",
            f"{m.get(f'maj@{n}', float('nan')):.3f}",
            f"{m['tokens_per_response']:.0f}",
            f"{m['tokens_correct']:.0f}",
            f"{m['tokens_incorrect']:.0f}",
            f"{m['tool_calls_per_response']:.2f}",
            f"{m['code_success_rate']:.2f}",
        )
    import shutil

    Console(width=max(120, shutil.get_terminal_size().columns)).print(table)


def _plots(
    per_dataset: dict[str, tuple[list[dict[str, Any]], list[bool]]], metrics: dict[str, Any], run_dir: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in metrics.items():
        curve = m.get("budget_accuracy", {})
        xs = sorted(int(b) for b in curve)
        ax.plot(xs, [curve[str(b)] for b in xs], marker="o", label=name)
    ax.set_xlabel("token budget per response")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy vs token budget")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "accuracy_vs_budget.png", dpi=120)
    plt.close(fig)

    cols = max(1, len(per_dataset))
    fig, axes = plt.subplots(1, cols, figsize=(4 * cols, 3.5), squeeze=False)
    for ax, (name, (recs, correct)) in zip(axes[0], per_dataset.items()):
        tokens = [r["model_tokens"] + r["tool_tokens"] for r in recs]
        right = [t for t, c in zip(tokens, correct) if c]
        wrong = [t for t, c in zip(tokens, correct) if not c]
        bins = max(5, min(30, int(math.sqrt(len(tokens)))))
        ax.hist([right, wrong], bins=bins, label=["correct", "incorrect"], color=["tab:green", "tab:red"])
        ax.set_title(name)
        ax.set_xlabel("tokens per response")
        ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "token_distribution.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
