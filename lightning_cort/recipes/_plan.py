"""The memory plan of a recipe's config: what ``--dry-run`` prints, and what a GPU run checks before it starts (see
:mod:`lightning_cort.planner`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_cort.recipes.config import PlanConfig, PolicyConfig, RolloutOptions, TrainerConfig, world_size

if TYPE_CHECKING:
    from lightning_cort.models.architectures import Architecture
    from lightning_cort.planner import MemoryPlan


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
    rollout: RolloutOptions | None = None,
    rollout_sequences: int = 0,
) -> MemoryPlan:
    """The per-GPU memory plan of a recipe's config (see :mod:`lightning_cort.planner`); ``rollout`` is the
    ``rollout`` section of a run that samples (its backend and vLLM share), ``None`` for one that only trains."""
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
            rollout_backend="none" if rollout is None else rollout.backend,
            rollout_sequences=rollout_sequences,
            rollout_length=sequence_length,
            vllm_memory=0.4 if rollout is None else rollout.vllm_memory,
            vllm_tensor_parallel=1 if rollout is None else rollout.vllm_tensor_parallel,
            vllm_sleep=True if rollout is None else rollout.vllm_sleep,
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
