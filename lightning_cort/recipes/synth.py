"""Hint-Engineering data synthesis: ``python -m lightning_cort.recipes.synth``.

CoRT's key data step: find where a reasoning trace starts a tedious manual calculation, cut it there with Hint-1 and
an opened code block, let a teacher model continue with a real code interpreter, and keep the continuations with a
correct answer and neither delayed computation nor result distrust. The kept traces are written as SFT-ready JSONL
(``prompt``, ``completion`` and chat ``messages`` with a ``tool`` role) that ``python -m lightning_cort.recipes.sft
--data.train '[.../sft.jsonl]'`` trains on.

Steps: read traces (``problem``, ``answer``, ``trace`` columns) → propose hint points (the heuristic detector, or an
LLM judge at any OpenAI-compatible endpoint) → optionally review them in the terminal (accept, move, edit, add) →
continue each prefix with the teacher through the rollout engine → filter → write.

With no arguments this runs on a laptop CPU without network: tool-free reasoning traces of the built-in calculator
task are cut at their first hand calculation and continued by a tiny teacher (warm-started on Hint-Engineering-style
traces) with the local sandbox.

Examples:
    python -m lightning_cort.recipes.synth
    python -m lightning_cort.recipes.synth --synth.traces r1_traces.jsonl --teacher.name_or_path deepseek-ai/DeepSeek-R1-Distill-Qwen-32B --rollout.backend vllm
    python -m lightning_cort.recipes.synth --synth.traces r1_traces.jsonl --synth.detector llm --synth.judge_url http://localhost:8000/v1 --synth.judge_model Qwen2.5-72B-Instruct --synth.review true
"""  # noqa: E501

from __future__ import annotations

import collections
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning_cort.recipes._cli import make_run_dir, parse_config, save_config
from lightning_cort.recipes.config import (
    PolicyConfig,
    RolloutOptions,
    RunOptions,
    TaskConfig,
    TrainerConfig,
    WarmupConfig,
    unused_tiny_sections,
)


@dataclass
class SynthOptions:
    """What to synthesize from and how.

    Attributes:
        traces: A ``.jsonl`` of reasoning traces (``problem``, ``answer``, ``trace``; optional reviewed ``points``);
            empty: text-only traces of the built-in calculator task.
        columns: Where the fields are when named differently, e.g. ``{"trace": "response", "answer": "gt_answer"}``.
        examples: Built-in traces to synthesize from (when ``traces`` is empty).
        detector: ``heuristic`` (text rules) or ``llm`` (a judge model at ``judge_url``).
        judge_url: Base URL of an OpenAI-compatible endpoint (``.../v1``).
        judge_model: The judge's model name.
        judge_api_key_env: Environment variable holding the judge's API key.
        min_digits: Heuristic detector: smallest operand size that makes a calculation "manual".
        review: Review the proposed points in the terminal before synthesis (written to ``reviewed.jsonl``; rerun
            to resume an interrupted review).
        samples: Continuations per prefix.
        max_points: Most hint points used per trace (each gives its own prefix; 0: all).
        temperature: Teacher sampling temperature (0: greedy).
        top_p: Teacher nucleus mass.
        output: Where the kept SFT records go (default ``<run_dir>/sft.jsonl``).
    """

    traces: str | None = None
    columns: dict[str, str] | None = None
    examples: int = 64
    detector: Literal["heuristic", "llm"] = "heuristic"
    judge_url: str | None = None
    judge_model: str | None = None
    judge_api_key_env: str = "OPENAI_API_KEY"
    min_digits: int = 3
    review: bool = False
    samples: int = 1
    max_points: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    output: str | None = None


@dataclass
class SynthConfig(RunOptions):
    """Configuration of the synthesis recipe.

    Attributes:
        teacher: The model that continues the traces (empty ``name_or_path``: the tiny warm-started policy).
        task: The built-in task (when ``synth.traces`` is empty).
        warmup: The tiny teacher's warm start (on Hint-Engineering-style traces: a model must have seen prose
            followed by a program to continue a trace cut at Hint-1).
        synth: Input, detector, review and sampling.
        rollout: Limits and backend of the teacher's rollouts.
    """

    teacher: PolicyConfig = field(default_factory=PolicyConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    warmup: WarmupConfig = field(default_factory=lambda: WarmupConfig(style="hint"))
    synth: SynthOptions = field(default_factory=SynthOptions)
    rollout: RolloutOptions = field(default_factory=RolloutOptions)

    def validate(self) -> None:
        """The rollout backend must be able to serve the teacher."""
        from lightning_cort.recipes.config import check_rollout_backend

        self.teacher.validate()
        check_rollout_backend(self.teacher, self.rollout)
        super().validate()

    def unused_sections(self) -> dict[str, str]:
        """``task`` when traces come from a file and the teacher is loaded; ``warmup`` and ``teacher.tiny`` with a
        loaded teacher."""
        tiny = self.teacher.name_or_path is None
        unused = {} if (not self.synth.traces or tiny) else {"task": "synth.traces is given and the teacher is loaded"}
        return unused | unused_tiny_sections(self.teacher, "teacher")


def main(args: list[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns the summary (also written to ``<run_dir>/summary.json``).

    Args:
        args: Command-line arguments (``None``: ``sys.argv``).
    """
    cfg = parse_config(SynthConfig, args, prog="python -m lightning_cort.recipes.synth", description=__doc__ or "")
    return run(cfg)


def builtin_traces(task: Any, n: int) -> list[dict[str, Any]]:
    """Tool-free reasoning traces (the approach in a sentence, then the arithmetic by hand) of ``n`` held-out problems
    of the built-in task: the synthesis input when no file is given. The test split keeps them apart from the
    teacher's warm-start problems."""
    from lightning_cort.tasks.calculator import reasoning_trace

    return [
        {"id": p.id, "problem": p.question, "answer": p.answer, "trace": reasoning_trace(p)}
        for p in task.problems("test", n)
    ]


def build_detector(opts: SynthOptions, fmt: Any) -> Any:
    """The hint detector the options ask for."""
    from lightning_cort.hints import HeuristicDetector, LLMJudgeDetector

    if opts.detector == "heuristic":
        return HeuristicDetector(min_digits=opts.min_digits, code_format=fmt)
    if not opts.judge_url or not opts.judge_model:
        raise ValueError("synth.detector llm needs synth.judge_url and synth.judge_model")
    return LLMJudgeDetector(opts.judge_url, opts.judge_model, os.environ.get(opts.judge_api_key_env), code_format=fmt)


@dataclass
class SynthParts:
    """What the synthesis recipe's ``build`` makes: the format, task and hint detector, then (unless ``meta``) the
    input traces and the teacher."""

    format: Any
    task: Any
    detector: Any
    items: list[Any] = field(default_factory=list)
    model: Any = None
    tokenizer: Any = None
    info: dict[str, Any] = field(default_factory=dict)


def build(cfg: SynthConfig, run_dir: Any, *, meta: bool = False) -> SynthParts:
    """Build the detector, the input traces and (unless ``meta``) the teacher."""
    from lightning_cort.formats import get_format
    from lightning_cort.recipes._steps import build_policy
    from lightning_cort.tasks.calculator import CalculatorTask

    cfg.validate()  # parse_config ran it already; a config built in code gets the same checks
    fmt = get_format(cfg.code_format)
    task = CalculatorTask(kinds=cfg.task.kinds, digits=cfg.task.digits, seed=cfg.task.seed)  # type: ignore[arg-type]
    detector = build_detector(cfg.synth, fmt)
    parts = SynthParts(fmt, task, detector)
    if meta:
        return parts
    if cfg.synth.traces:
        from lightning_cort.hints import read_traces

        parts.items = read_traces(cfg.synth.traces, cfg.synth.columns)
    else:
        parts.items = builtin_traces(task, cfg.synth.examples)
    model, tokenizer, info = build_policy(
        cfg.teacher, task=task, code_format=fmt, warmup=cfg.warmup, trainer=TrainerConfig(), seed=cfg.seed,
        run_dir=run_dir, progress=cfg.progress,
    )  # fmt: skip
    parts.model, parts.tokenizer, parts.info = model, tokenizer, info
    return parts


def _backend(cfg: SynthConfig, model: Any, tokenizer: Any, run_dir: Path) -> Any:
    from lightning_cort.rollout import HFBackend

    if cfg.rollout.backend == "hf":
        return HFBackend(model.eval(), tokenizer)
    from lightning_cort.models.policy import export_policy, is_peft_model
    from lightning_cort.recipes._steps import vllm_arguments
    from lightning_cort.rollout.backends.vllm import VLLMBackend

    path = run_dir / "teacher"
    export_policy(model, tokenizer, path, mode="merged" if is_peft_model(model) else "full")
    return VLLMBackend(path, tokenizer, **vllm_arguments(cfg.rollout, cfg.seed))


def run(cfg: SynthConfig) -> dict[str, Any]:
    """Run the recipe from a parsed config."""
    import lightning as L
    import torch

    from lightning_cort.hints import review_file, synthesize, write_jsonl
    from lightning_cort.rollout import RolloutEngine
    from lightning_cort.sandbox import LocalSandbox

    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, verbose=False)
    run_dir = make_run_dir(cfg.run_dir, "synth")
    save_config(cfg, run_dir)
    parts = build(cfg, run_dir)
    fmt, items = parts.format, parts.items
    if cfg.synth.review:
        proposals = run_dir / "reviewed.jsonl"
        if not proposals.exists():
            write_jsonl(items, proposals)
        review_file(proposals, proposals, detector=parts.detector, code_format=fmt)
        from lightning_cort.hints import read_traces

        items = read_traces(proposals)
    rollout = cfg.rollout.with_sampling(temperature=cfg.synth.temperature, top_p=cfg.synth.top_p)
    with LocalSandbox(timeout=cfg.rollout.timeout) as sandbox, torch.no_grad():
        engine = RolloutEngine(_backend(cfg, parts.model, parts.tokenizer, run_dir), parts.tokenizer, fmt,
                               sandbox, rollout)  # fmt: skip
        results = synthesize(
            items,
            engine,
            detector=parts.detector,
            n=cfg.synth.samples,
            max_points=cfg.synth.max_points or None,
        )
    kept = [r.record() for r in results if r.kept]
    output = Path(cfg.synth.output) if cfg.synth.output else run_dir / "sft.jsonl"
    write_jsonl(kept, output)
    write_jsonl((_report(r) for r in results), run_dir / "synthesis.jsonl")
    rejected = collections.Counter(reason for r in results for reason in r.rejected_by)
    summary = {
        "traces": len(items),
        "with_calculate_point": len({r.index for r in results if r.point is not None}),
        "continuations": sum(1 for r in results if r.point is not None),
        "kept": len(kept),
        "rejected_by": dict(rejected),
        "output": str(output),
        "teacher_warmup_from_cache": parts.info.get("warmup_from_cache"),
        "total_seconds": round(time.perf_counter() - started, 1),
        "run_dir": str(run_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if cfg.progress:
        print(
            f"[synth] {summary['traces']} traces, {summary['continuations']} continuations from hint points, "
            f"{summary['kept']} kept → {output}\n[synth] rejected: {dict(rejected) or 'none'}; "
            f"took {summary['total_seconds']:.0f} s"
        )
    return summary


def _report(result: Any) -> dict[str, Any]:
    """One line of ``synthesis.jsonl``: every continuation, kept or not, with why it was rejected."""
    return {
        "source_id": result.source_id,
        "point": result.point.to_dict() if result.point is not None else None,
        "kept": result.kept,
        "rejected_by": list(result.rejected_by),
        "completion": result.completion,
    }


if __name__ == "__main__":
    main()
