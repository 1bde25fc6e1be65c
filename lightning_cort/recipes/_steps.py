"""The steps a training recipe takes, in the order it takes them: start the run (seed, run directory, memory plan),
build the policy (loaded, or the tiny model's cached warm start), read the rows, build the Trainer and its
callbacks, evaluate before, train, finish (evaluate after, export, summary). Each recipe's ``run`` calls these top to
bottom; what a run shows and leaves behind is in :mod:`lightning_cort.recipes._report`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lightning_cort.recipes.config import (
    DataConfig,
    PolicyConfig,
    SFTOptions,
    TaskConfig,
    TrainerConfig,
    WarmupConfig,
    world_size,
)

if TYPE_CHECKING:
    import lightning as L
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lightning_cort.callbacks import TokenEfficiencyCallback
    from lightning_cort.formats.base import CodeFormat
    from lightning_cort.models.tiny import TinyConfig
    from lightning_cort.recipes.config import RolloutOptions
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


# -- start -------------------------------------------------------------------------------------------------------------


def begin(cfg: Any, recipe: str, plan_fn: Any) -> tuple[Path, dict[str, Any] | None]:
    """The start every training recipe shares: threads, seed, run directory, saved config, the memory plan.

    Returns:
        ``(run_dir, result)``; ``result`` is the dry run's answer (the plan) when ``cfg.dry_run``, else ``None``.
    """
    import lightning as L
    import torch

    from lightning_cort.recipes._cli import make_run_dir, save_config
    from lightning_cort.recipes._plan import check_plan, report_plan

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


# -- the policy --------------------------------------------------------------------------------------------------------


def build_policy(
    model: PolicyConfig,
    *,
    task: CalculatorTask,
    code_format: CodeFormat,
    warmup: WarmupConfig,
    trainer: TrainerConfig,
    seed: int,
    run_dir: Path,
    progress: bool,
    meta: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """Build the policy and its tokenizer.

    With ``meta`` nothing is loaded or trained: the model is built on the meta device from its shape (LoRA applied,
    so parameter names and trainable counts are real) and the tokenizer is the tiny one, which is how the recipe
    tests instantiate every shipped YAML without downloading weights.

    Returns:
        ``(model, tokenizer, info)``; ``info`` says whether a tiny warm start came from the cache and how long it took.
    """
    import time
    from dataclasses import replace

    from lightning_cort.models.policy import load_policy
    from lightning_cort.models.tiny import tiny_tokenizer

    if meta:
        return _meta_policy(model)
    info: dict[str, Any] = {"warmup_from_cache": None, "warmup_seconds": 0.0}
    if model.name_or_path is not None:
        policy, tokenizer = load_policy(model)  # the model section is the loader's settings
        return policy, tokenizer, info
    from lightning_cort.models.tiny import tiny_from_config

    tokenizer = tiny_tokenizer()
    t0 = time.perf_counter()
    if model.warm_start:
        base, cached = warm_start(tokenizer, model.tiny, warmup, task, code_format, seed, progress, trainer=trainer)
        info["warmup_from_cache"] = cached
    else:
        base = tiny_from_config(tokenizer, model.tiny)
    info["warmup_seconds"] = round(time.perf_counter() - t0, 1)
    if model.lora is None and model.quantization is None and model.dtype in ("float32", "auto"):
        return base.train(), tokenizer, info
    # LoRA, QLoRA or another dtype on the tiny model: go through the same loader as a real checkpoint.
    base_dir = run_dir / "base_policy"
    base.save_pretrained(str(base_dir))
    policy, tokenizer = load_policy(replace(model, name_or_path=str(base_dir)), tokenizer)
    return policy, tokenizer, info


def _meta_policy(model: PolicyConfig) -> tuple[Any, Any, dict[str, Any]]:
    from lightning_cort.models.policy import add_lora
    from lightning_cort.models.tiny import tiny_tokenizer
    from lightning_cort.recipes._plan import policy_architecture

    model.validate()
    tokenizer = tiny_tokenizer()
    arch = policy_architecture(model, len(tokenizer))
    policy = arch.meta_model()
    if model.lora is not None:
        policy = add_lora(policy, model.lora)  # the loader's own LoRA step: real names and trainable counts
    return policy, tokenizer, {"meta": True, "architecture": arch.to_dict()}


def warm_start(
    tokenizer: PreTrainedTokenizerBase,
    tiny: TinyConfig,
    warmup: WarmupConfig,
    task: CalculatorTask,
    code_format: CodeFormat,
    seed: int,
    progress: bool = True,
    *,
    trainer: TrainerConfig | None = None,
) -> tuple[PreTrainedModel, bool]:
    """A tiny policy supervised on code-integrated traces of the task (CoRT's SFT before RL), trained by
    :func:`train_sft` (the SFT recipe's path) on the run's accelerator and precision, one device, and cached on
    disk keyed by every setting that shapes it.

    Returns:
        ``(model, from_cache)``.
    """
    from transformers import Qwen2ForCausalLM

    from lightning_cort.models.tiny import default_cache_dir, tiny_from_config
    from lightning_cort.modules.sft import SFTModule

    one_device = replace(
        trainer or TrainerConfig(),
        devices=1,
        num_nodes=1,
        strategy="auto",
        checkpoint_every_n_steps=0,
        resume=None,
        log_every_n_steps=50,
    )
    key_src = json.dumps(
        {
            "v": 2,
            "model": dataclasses.asdict(tiny),
            "warmup": {**dataclasses.asdict(warmup), "cache": None},
            "task": [task.kinds, task.digits, task.seed],
            "format": code_format.name,
            "seed": seed,
            "accelerator": [one_device.accelerator, one_device.precision],
            "vocab": len(tokenizer),
            # The ids themselves: a retrained tokenizer of the same size must not reuse a policy trained on others.
            "tokenizer": _tokenizer_fingerprint(tokenizer),
        },
        sort_keys=True,
    )
    path = default_cache_dir() / f"warmstart-{hashlib.sha256(key_src.encode()).hexdigest()[:16]}"
    if warmup.cache and (path / "config.json").exists():
        model = Qwen2ForCausalLM.from_pretrained(str(path))
        return model.train(), True
    model = tiny_from_config(tokenizer, tiny)
    if warmup.examples > 0 and warmup.epochs > 0:
        examples = task_traces(task, tokenizer, code_format, warmup.examples, warmup.style)
        train_sft(SFTModule(model, tokenizer, warmup), examples, warmup, one_device, None, seed=seed,
                  progress=progress, phase="warm start (SFT)")  # fmt: skip
    model = model.cpu()
    if warmup.cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".warmstart-"))
        model.save_pretrained(str(tmp))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    return model.train(), False


def train_sft(
    module: L.LightningModule,
    examples: list[Trajectory],
    options: SFTOptions,
    trainer: TrainerConfig,
    run_dir: Path | None,
    *,
    seed: int,
    progress: bool,
    phase: str = "SFT",
    run_config: Any = None,
) -> L.Trainer:
    """Supervised fine-tuning of ``module`` on ``examples``: the SFT recipe's training, which the tiny model's warm
    start shares. Batches of ``options.batch_size`` examples, shuffled from ``seed`` (length-grouped with
    ``options.group_by_length``) by a loader that resumes mid-epoch, on a Trainer built from the ``trainer`` section
    (``run_dir`` ``None``: no logs or checkpoints).

    Returns:
        The Trainer, after ``fit``.
    """
    from functools import partial

    from lightning_cort.data import LengthGroupedSampler, ListDataset, ResumableDataLoader
    from lightning_cort.trajectory import collate_trajectories

    sampler = None
    if options.group_by_length:
        lengths = [e.prompt_ids.numel() + e.completion_ids.numel() for e in examples]
        sampler = LengthGroupedSampler(lengths, options.batch_size, seed=seed)
    loader = ResumableDataLoader(
        ListDataset(examples),
        batch_size=options.batch_size,
        shuffle=True,
        seed=seed,
        collate_fn=partial(collate_trajectories, pad_token_id=module.tokenizer.pad_token_id),
        **({"sampler": sampler} if sampler is not None else {}),
    )
    fit = build_trainer(
        trainer,
        run_dir,
        [],
        progress=progress,
        phase=phase,
        run_config=run_config,
        max_epochs=options.epochs,
        accumulate_grad_batches=options.accumulate_grad_batches,
        gradient_clip_val=options.gradient_clip or None,
    )
    fit.fit(module, loader, ckpt_path=resume_path(trainer, run_dir) if run_dir is not None else None)
    return fit


def _tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- rows --------------------------------------------------------------------------------------------------------------


def task_rows(task: CalculatorTask, split: Literal["train", "test"], n: int, start: int = 0) -> list[dict[str, Any]]:
    """Problems ``start .. start+n`` of a split as rows with the CoRT prompt."""
    from lightning_cort.tasks.calculator import build_prompt

    rows = []
    for p in task.problems(split, start + n)[start:]:
        row: dict[str, Any] = p.to_row()
        row["prompt"] = build_prompt(p.question)
        rows.append(row)
    return rows


def task_traces(
    task: CalculatorTask,
    tokenizer: PreTrainedTokenizerBase,
    code_format: CodeFormat,
    n: int,
    style: Literal["code", "hint", "text", "mixed"] = "code",
    start: int = 0,
) -> list[Any]:
    """Training examples from ``n`` problems of the task's training stream, as traces in ``style``."""
    from lightning_cort.data import trajectory_from_text
    from lightning_cort.tasks.calculator import build_prompt, trace_for

    return [
        trajectory_from_text(
            tokenizer, build_prompt(p.question), trace_for(p, style, code_format), code_format, row=p.to_row()
        )
        for p in task.problems("train", start + n)[start:]
    ]


def train_offset(task: TaskConfig, warmup: WarmupConfig) -> int:
    """Where RL and RFT start in the built-in task's training stream (after the warm start's traces by default)."""
    return task.train_offset if task.train_offset is not None else warmup.examples


def load_problem_rows(data: DataConfig, task: CalculatorTask, n: int, start: int = 0) -> list[dict[str, Any]]:
    """Problem rows (``prompt``, ``answer``, ...) for RL and RFT: the data files, or ``n`` built-in problems from
    position ``start`` of the task's training stream."""
    if not data.train:
        return task_rows(task, "train", n, start=start)
    from lightning_cort.evaluation import load_rows
    from lightning_cort.formats.cort import CORT_SUFFIX

    rows: list[dict[str, Any]] = []
    suffix = data.prompt_suffix if data.prompt_suffix is not None else CORT_SUFFIX
    for spec in data.train:
        rows.extend(load_rows(spec, data.columns, limit=data.limit, prompt_suffix=suffix))
    if not rows:
        raise ValueError(f"data.train {data.train} holds no rows")
    return rows


def eval_rows(data: DataConfig, task: CalculatorTask, size: int) -> list[dict[str, Any]]:
    """Held-out rows: ``size`` problems of the built-in task's test split (none when ``data.val`` files are set,
    which are used instead)."""
    if data.val:
        from lightning_cort.evaluation import load_rows
        from lightning_cort.formats.cort import CORT_SUFFIX

        suffix = data.prompt_suffix if data.prompt_suffix is not None else CORT_SUFFIX
        rows: list[dict[str, Any]] = []
        for spec in data.val:
            rows.extend(load_rows(spec, data.columns, limit=size or None, prompt_suffix=suffix))
        return rows
    return task_rows(task, "test", size) if size > 0 else []


# -- the Trainer and its callbacks -------------------------------------------------------------------------------------


def interpreter_callbacks(rollout: RolloutOptions, code_format: CodeFormat, seed: int) -> list[L.Callback]:
    """The local sandbox's lifecycle and the rollout callback (the ``rollout`` section whole: the engine's limits and
    sampling, and the backend) for a Trainer."""
    from functools import partial

    from lightning_cort.callbacks import RolloutCallback, SandboxCallback
    from lightning_cort.sandbox import LocalSandbox

    sandbox = SandboxCallback(partial(LocalSandbox, timeout=rollout.timeout))
    return [
        sandbox,
        RolloutCallback(
            code_format, rollout, sandbox=sandbox, backend=rollout.backend, vllm_kwargs=vllm_arguments(rollout, seed)
        ),
    ]


def vllm_arguments(rollout: RolloutOptions, seed: int) -> dict[str, Any]:
    """Arguments of :class:`~lightning_cort.rollout.backends.vllm.VLLMBackend` from the ``rollout`` section."""
    return {
        "dtype": rollout.vllm_dtype,
        "gpu_memory_utilization": rollout.vllm_memory,
        "tensor_parallel_size": rollout.vllm_tensor_parallel,
        "enable_sleep_mode": rollout.vllm_sleep,
        "seed": seed,
    } | ({} if rollout.vllm_kv_cache_gib is None else {"kv_cache_memory_bytes": int(rollout.vllm_kv_cache_gib * 2**30)})


def build_strategy(trainer: TrainerConfig) -> Any:
    """The Lightning strategy object (or name) for ``trainer.strategy``."""
    if trainer.strategy == "fsdp2":
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(data_parallel_size=world_size(trainer), tensor_parallel_size=1)
    return trainer.strategy


def build_trainer(
    trainer: TrainerConfig,
    run_dir: Path | None,
    callbacks: list[Any],
    *,
    progress: bool,
    phase: str = "train",
    unit: str = "epoch",
    run_config: Any = None,
    **kwargs: Any,
) -> L.Trainer:
    """A Trainer logging under ``run_dir`` (CSV, and ``trainer.logger``'s tracker with ``run_config`` attached) and
    checkpointing there when asked (``run_dir`` ``None``: neither), with a progress bar named after the ``phase``
    (``unit`` counts its epochs)."""
    import lightning as L

    from lightning_cort.recipes._report import progress_callbacks

    callbacks = list(callbacks)
    if trainer.checkpoint_every_n_steps and run_dir is not None:
        from lightning.pytorch.callbacks import ModelCheckpoint

        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                save_last=True,
                save_top_k=0,
                every_n_train_steps=trainer.checkpoint_every_n_steps,
            )
        )
    return L.Trainer(
        accelerator=trainer.accelerator,
        devices=trainer.devices,
        num_nodes=trainer.num_nodes,
        strategy=build_strategy(trainer),
        precision=trainer.precision,  # type: ignore[arg-type]
        default_root_dir=None if run_dir is None else str(run_dir),
        logger=False if run_dir is None else build_loggers(trainer, run_dir, run_config),
        log_every_n_steps=trainer.log_every_n_steps,
        enable_checkpointing=bool(trainer.checkpoint_every_n_steps) and run_dir is not None,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=[*callbacks, *progress_callbacks(progress, phase, unit)],
        **kwargs,
    )


def build_loggers(trainer: TrainerConfig, run_dir: Path, run_config: Any = None) -> list[Any]:
    """Lightning's loggers for ``trainer.logger``: CSV under ``<run_dir>/logs`` always (the summary's curves read
    it), and TensorBoard (``<run_dir>/tensorboard``), Weights & Biases (``<run_dir>/wandb``; offline with
    ``WANDB_MODE=offline``) or MLflow (``trainer.tracking_uri``, default a file store in ``<run_dir>/mlruns``) beside
    it, each given the run's resolved config as hyperparameters."""
    import dataclasses

    from lightning.pytorch.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(str(run_dir), name="logs")]
    if trainer.logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(run_dir), name="tensorboard", default_hp_metric=False))
    elif trainer.logger == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(project=trainer.project, name=run_dir.name, save_dir=str(run_dir)))
    elif trainer.logger == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        uri = trainer.tracking_uri
        if uri is None:  # a file store in the run directory: MLflow keeps it, in maintenance mode, when asked to
            uri = (run_dir / "mlruns").as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        loggers.append(MLFlowLogger(experiment_name=trainer.project, run_name=run_dir.name, tracking_uri=uri))
    if run_config is not None:
        hparams = dataclasses.asdict(run_config)
        for logger in loggers:
            logger.log_hyperparams(hparams)
    return loggers


def resume_path(trainer: TrainerConfig, run_dir: Path) -> str | None:
    """The checkpoint to resume from (``last`` means ``<run_dir>/checkpoints/last.ckpt`` when it exists)."""
    if trainer.resume is None:
        return None
    if trainer.resume == "last":
        last = run_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.exists() else None
    if not Path(trainer.resume).exists():
        raise FileNotFoundError(f"trainer.resume: no checkpoint at {trainer.resume}")
    return trainer.resume


# -- before and after --------------------------------------------------------------------------------------------------


def evaluate_before(cfg: Any, parts: RunParts, rollout: RolloutConfig) -> tuple[list[dict[str, Any]], dict]:
    """The held-out rows (none under several processes) and the metrics before training (empty when
    ``held_out.before`` is off)."""
    from lightning_cort.recipes._report import greedy_eval

    single = world_size(cfg.trainer) == 1
    held_out = eval_rows(cfg.data, parts.task, cfg.held_out.size) if single else []
    rows = held_out if cfg.held_out.before else []
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

    from lightning_cort.recipes._report import finite, greedy_eval, save_policy, write_generations, write_summary

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
