"""Evaluation: roll a policy out on dataset rows and score it (:func:`evaluate`), and the pieces of the benchmark
evaluation recipe (loading benchmark files, generation records, per-dataset metrics)."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_cort._console import progress_bar
from lightning_cort.metrics import no_answer_diagnosis, token_efficiency
from lightning_cort.rewards.functions import is_correct
from lightning_cort.rewards.math import opens_thinking, response_text
from lightning_cort.rollout.backends.base import SamplingConfig
from lightning_cort.rollout.backends.hf import HFBackend
from lightning_cort.rollout.engine import RolloutConfig, RolloutEngine
from lightning_cort.trajectory import Trajectory

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lightning_cort.formats.base import CodeFormat
    from lightning_cort.sandbox.base import Sandbox


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    code_format: CodeFormat,
    sandbox: Sandbox,
    config: RolloutConfig | None = None,
    *,
    n: int = 1,
    sampling: SamplingConfig | None = None,
    batch_size: int = 64,
    progress: bool = False,
    description: str = "evaluating",
) -> tuple[dict[str, float], list[Trajectory]]:
    """Roll out every row (``prompt`` field) and score it against its ``answer``.

    Args:
        model: The policy (put in eval mode for the duration).
        tokenizer: Its tokenizer.
        rows: Rows with ``prompt`` and ``answer``.
        code_format: The policy's code format.
        sandbox: Executes the code.
        config: Rollout limits.
        n: Samples per row.
        sampling: Defaults to greedy decoding.
        batch_size: Rows per generation batch.
        progress: Show a progress bar (``description``) over the rows.
        description: The progress bar's label.

    Returns:
        ``(metrics, trajectories)`` with :func:`~lightning_cort.metrics.token_efficiency` metrics.
    """
    config = config or RolloutConfig()
    sampling = sampling or SamplingConfig(temperature=0.0)
    engine = RolloutEngine(HFBackend(model, tokenizer), tokenizer, code_format, sandbox, config)
    was_training = model.training
    model.eval()
    trajectories: list[Trajectory] = []
    try:
        with torch.no_grad(), progress_bar(progress, description, len(rows)) as advance:
            for i in range(0, len(rows), batch_size):
                chunk = rows[i : i + batch_size]
                prompts = engine.encode_prompts([r["prompt"] for r in chunk])
                trajectories.extend(engine.generate(prompts, chunk, n=n, sampling=sampling))
                advance(len(chunk))
    finally:
        model.train(was_training)
    diagnosis = no_answer_diagnosis([(t.response_text, t.finish_reason) for t in trajectories])
    if diagnosis is not None:
        warnings.warn(f"evaluation: {diagnosis}", stacklevel=2)
    correct = [is_correct(t, t.row) for t in trajectories]
    return token_efficiency(trajectories, correct), trajectories


# -- benchmark evaluation (the eval recipe) ---------------------------------------------------------------------------

#: CoRT's samples per problem: avg@16 on the small contest sets, avg@4 on the large ones.
CORT_SAMPLES = {"aime24": 16, "aime25": 16, "amc23": 16, "math500": 4, "olympiad_bench": 4}

#: The column names of the CoRT benchmark files.
CORT_COLUMNS = {"problem": "problem", "answer": "gt_answer", "prompt": "prompt"}


def dataset_name(spec: str) -> str:
    """A short name for a dataset file or hub id: ``.../test_aime24.reason_step.jsonl`` → ``aime24``."""
    name = os.path.basename(spec.rstrip("/"))
    for suffix in (".jsonl", ".json", ".parquet"):
        name = name.removesuffix(suffix)
    name = name.removeprefix("test_").removesuffix(".reason_step")
    return name


def load_rows(
    spec: str, columns: Mapping[str, str] | None = None, *, limit: int | None = None, prompt_suffix: str | None = None
) -> list[dict[str, Any]]:
    """Read benchmark rows from a local ``.jsonl`` / ``.json`` / ``.parquet`` file or a hub dataset name.

    Args:
        spec: Path, or ``name`` / ``name:split`` of a hub dataset (needs network or a local hub cache).
        columns: Where the fields are: ``problem``, ``answer`` and optionally ``prompt`` (the full user message;
            without it the prompt is the problem plus ``prompt_suffix``). Default: the CoRT format.
        limit: Keep the first ``limit`` rows.
        prompt_suffix: Appended on a new line to the problem when there is no prompt column.

    Returns:
        Rows with ``id``, ``prompt``, ``answer``, ``problem`` (and the original fields under ``source_row``).

    Raises:
        ValueError: A row lacks a mapped column (the message names the row and the columns found).
    """
    cols = dict(columns or CORT_COLUMNS)
    path = Path(spec)
    if path.suffix in (".jsonl", ".json", ".parquet"):
        from lightning_cort.data import read_table

        raw = read_table(path)
    else:
        import datasets

        name, _, split = spec.partition(":")
        try:
            raw = list(datasets.load_dataset(name, split=split or "test"))
        except Exception as e:  # any hub failure becomes one clear message
            raise ValueError(f"could not load dataset {spec!r} (not a local .jsonl/.json/.parquet file): {e}") from e
    if limit is not None:
        raw = raw[:limit]
    name = dataset_name(spec)
    rows = []
    for i, r in enumerate(raw):
        missing = [c for k, c in cols.items() if k != "prompt" and _field(r, c) is None]
        if missing:
            found = sorted(r) if isinstance(r, Mapping) else type(r).__name__
            raise ValueError(f"{spec}: row {i} has no column(s) {missing}; its columns are {found}")
        problem = _user_text(_field(r, cols["problem"]))
        prompt = _field(r, cols["prompt"]) if "prompt" in cols else None
        if prompt is None:
            prompt = f"{problem}\n{prompt_suffix}" if prompt_suffix else problem
        answer = str(_field(r, cols["answer"]))
        rows.append({"id": f"{name}-{i}", "prompt": _user_text(prompt), "answer": answer, "problem": problem})
    return rows


def _field(row: Any, path: str) -> Any:
    """``row[path]``, following dots into nested mappings (``reward_model.ground_truth``); ``None`` when absent."""
    value = row
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _user_text(value: Any) -> str:
    """A prompt given as chat messages (verl's format) is its (last) user message."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(m, Mapping) for m in value):
        users = [m.get("content", "") for m in value if m.get("role") == "user"]
        return str(users[-1] if users else value[-1].get("content", ""))
    return str(value)


def trajectory_record(t: Trajectory, dataset: str, index: int, sample: int) -> dict[str, Any]:
    """One generation as a JSON-serialisable record (what ``generations.jsonl`` holds)."""
    from lightning_cort.metrics import trajectory_usage

    return {
        "dataset": dataset,
        "index": index,
        "sample": sample,
        "id": t.row.get("id"),
        "answer": t.row.get("answer"),
        "completion": t.completion_text,
        "completion_ids": t.completion_ids.tolist(),
        "opens_thinking": opens_thinking(t.prompt_text),
        **trajectory_usage(t),
    }


def record_response(record: Mapping[str, Any], completion: str | None = None) -> str:
    """The response of a generation record as the answer judge reads it (``completion`` replaces the record's, e.g.
    cut at a token budget)."""
    text = record["completion"] if completion is None else completion
    return response_text("<think>" if record.get("opens_thinking") else "", text)


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of ``generations.jsonl``; a last line cut short by an interruption is ignored."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # the write that was interrupted; everything before it is complete
    return out


def record_metrics(
    records: Sequence[Mapping[str, Any]],
    correct: Sequence[bool],
    answers: Sequence[str | None],
    *,
    budgets: Sequence[int] = (),
    rescore: Callable[[int, int], bool] | None = None,
) -> dict[str, Any]:
    """The eval metrics of one dataset's records (every problem's samples): avg@n / pass@k / maj@n, the usage
    metrics shared with training (:func:`~lightning_cort.metrics.usage_metrics`), and ``budget_accuracy`` (accuracy
    under each token budget, longer responses cut and rescored)."""
    from lightning_cort.metrics import budget_accuracy, sample_metrics, usage_metrics

    if not records:
        return {}
    by_problem: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        by_problem.setdefault(int(r["index"]), []).append(i)
    groups = [sorted(ix, key=lambda i: records[i]["sample"]) for _, ix in sorted(by_problem.items())]
    n = min(len(g) for g in groups)
    ks = sorted({1, n} | ({k for k in (2, 4, 8, 16) if k < n}))
    out: dict[str, Any] = sample_metrics(
        [[correct[i] for i in g] for g in groups], [[answers[i] for i in g] for g in groups], ks=ks
    )
    usage = usage_metrics(records, correct)
    if not math.isfinite(usage["tokens_per_correct"]):
        usage["tokens_per_correct"] = None  # type: ignore[assignment]  # JSON has no infinity
    out.update(usage, problems=len(groups), samples_per_problem=n)
    total = [r["model_tokens"] + r["tool_tokens"] for r in records]
    if budgets:
        out["budget_accuracy"] = {str(b): a for b, a in budget_accuracy(total, correct, budgets, rescore).items()}
    return out
