"""Per-GPU memory estimates for a training run, before anyone rents a GPU.

:func:`plan_memory` adds up what one GPU holds in the two phases of an RL (or SFT/RFT) step:

* **training**: weights, LoRA adapters, gradients, optimizer states, a frozen reference copy (full fine-tuning with
  KL), activations of one micro-batch and its logits, plus a colocated vLLM engine unless it sleeps while training;
* **rollout**: weights, adapters, optimizer states and reference (gradients are freed), plus the rollout's KV cache
  (HF ``generate``) or the memory a colocated vLLM engine reserves.

How each term is computed (``b`` = bytes per element):

=====================  ================================================================================================
weights                parameters × b(dtype) / shards; QLoRA: linear weights at 0.516 B (nf4 + double-quantized
                       absmax), the rest at 4 B (peft upcasts norms and embeddings to fp32 for k-bit training)
adapters               LoRA parameters × 4 B (peft keeps adapters in fp32)
gradients, optimizer   trainable parameters × b (gradients) and × 2b (AdamW's two moments), / shards under FSDP2
reference              parameters × b(dtype) / shards, only for full fine-tuning with ``kl_coef > 0`` (LoRA's
                       reference is the base model with adapters off)
activations            per token and layer: ``4h + 2·q + 2·kv + 4I`` saved elements (norm inputs, attention
                       q/k/v/output with SDPA, SwiGLU gate/up/product); with activation checkpointing only each
                       layer's input (``h``) plus one layer recomputed
logits                 completion positions × vocabulary × (b + 12 B): the logits, their fp32 copy and
                       log-softmax, and its gradient (+8 B with the entropy bonus); with chunked log-probs only
                       ``logprob_chunk_size`` positions at a time (one device and DDP)
HF rollout KV          concurrent sequences × length × layers × 2 × kv heads × head dim × b
vLLM                   ``gpu_memory_utilization`` × GPU memory, which must hold its merged bf16 weights (/ tensor
                       parallel size) and the KV cache of the concurrent sequences
=====================  ================================================================================================

The figures are estimates (±30 % on activations; checked against measured saved tensors and parameter storage in
``tests/test_planner.py``); a CUDA context and allocator fragmentation are covered by ``overhead_gb`` and
``headroom``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lightning_cort.models.architectures import Architecture

GiB = 1024**3
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}
#: Bytes per linear weight of bitsandbytes nf4 with double quantization (4 bits + an 8-bit absmax per 64 weights
#: + a float32 second-level constant per 256 blocks).
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)


@dataclass
class PlanInput:
    """What :func:`plan_memory` needs to know about a run (the recipes fill it from their config).

    Attributes:
        arch: The model's shape.
        dtype: Parameter dtype (``bfloat16``, ``float32``, ...).
        mixed_precision: Lightning ``*-mixed`` precision: fp32 parameters, activations in 16 bit.
        lora_r: LoRA rank, or ``None`` for full fine-tuning.
        lora_targets: LoRA target modules.
        quantization: ``4bit``, ``8bit`` or ``None``.
        gradient_checkpointing: Activation checkpointing per decoder layer.
        shards: FSDP2 data-parallel size (1 for one device or DDP).
        reference_copy: Full fine-tuning with a KL term keeps a frozen copy of the policy.
        micro_batch_sequences: Sequences per forward/backward pass.
        sequence_length: Prompt plus completion tokens of the longest sequence.
        completion_length: Completion tokens (positions whose logits are materialised).
        entropy: The entropy bonus keeps the probabilities too.
        logprob_chunk_size: Positions whose logits exist at once (chunked log-probs; not under FSDP2), or ``None``.
        rollout_backend: ``hf``, ``vllm`` or ``none`` (SFT).
        rollout_sequences: Sequences generated at once on this GPU.
        rollout_length: Their length (prompt plus completion budget).
        vllm_memory: vLLM's ``gpu_memory_utilization``.
        vllm_tensor_parallel: vLLM's tensor-parallel size.
        vllm_sleep: vLLM releases its memory while the policy trains (sleep mode).
        gpu_memory_gb: Memory of one GPU.
        overhead_gb: CUDA context, kernels' workspaces.
        headroom: Fraction of the GPU kept free for fragmentation.
        ranks_per_node: Processes per machine (host RAM: each loads the full checkpoint before sharding).
    """

    arch: Architecture
    dtype: str = "bfloat16"
    mixed_precision: bool = False
    lora_r: int | None = None
    lora_targets: list[str] | str = "all-linear"
    quantization: Literal["4bit", "8bit"] | None = None
    gradient_checkpointing: bool = False
    shards: int = 1
    reference_copy: bool = False
    micro_batch_sequences: int = 1
    sequence_length: int = 4096
    completion_length: int = 4096
    entropy: bool = False
    logprob_chunk_size: int | None = None
    rollout_backend: Literal["hf", "vllm", "none"] = "none"
    rollout_sequences: int = 0
    rollout_length: int = 0
    vllm_memory: float = 0.4
    vllm_tensor_parallel: int = 1
    vllm_sleep: bool = True
    gpu_memory_gb: float = 80.0
    overhead_gb: float = 1.0
    headroom: float = 0.1
    ranks_per_node: int = 1


@dataclass
class MemoryPlan:
    """The estimate: bytes per component and phase, the verdict and advice.

    Attributes:
        training: Component name -> bytes on one GPU while training.
        rollout: Component name -> bytes on one GPU while generating.
        limit_bytes: Usable bytes (GPU memory minus headroom).
        host_ram_bytes: Host memory to load the checkpoint on each machine.
        notes: Warnings and advice.
    """

    training: dict[str, float] = field(default_factory=dict)
    rollout: dict[str, float] = field(default_factory=dict)
    limit_bytes: float = 0.0
    host_ram_bytes: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def peak_bytes(self) -> float:
        """The larger phase total."""
        return max(sum(self.training.values()), sum(self.rollout.values()))

    @property
    def fits(self) -> bool:
        """Whether the peak fits the usable GPU memory."""
        return self.peak_bytes <= self.limit_bytes

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly summary in GiB."""
        return {
            "training_gib": {k: round(v / GiB, 2) for k, v in self.training.items()},
            "rollout_gib": {k: round(v / GiB, 2) for k, v in self.rollout.items()},
            "peak_gib": round(self.peak_bytes / GiB, 2),
            "limit_gib": round(self.limit_bytes / GiB, 2),
            "fits": self.fits,
            "host_ram_gib": round(self.host_ram_bytes / GiB, 1),
            "notes": list(self.notes),
        }


def activation_bytes(arch: Architecture, tokens: int, dtype_bytes: int, checkpointing: bool) -> float:
    """Bytes of activations saved for the backward pass of ``tokens`` tokens through the decoder layers."""
    q = arch.num_heads * arch.head_dim
    kv = arch.num_kv_heads * arch.head_dim
    per_layer = 4 * arch.hidden_size + 2 * q + 2 * kv + 4 * arch.intermediate_size  # elements per token
    if checkpointing:
        return tokens * dtype_bytes * (arch.num_layers * arch.hidden_size + per_layer)
    return tokens * dtype_bytes * arch.num_layers * per_layer


def logits_bytes(arch: Architecture, positions: int, dtype_bytes: int, *, grad: bool, entropy: bool) -> float:
    """Bytes of the logits of ``positions`` positions and the fp32 tensors computed from them."""
    per = dtype_bytes + 8 + (4 if grad else 0) + (8 if entropy else 0)
    return positions * arch.vocab_size * per


def plan_memory(p: PlanInput) -> MemoryPlan:
    """Estimate per-GPU memory for ``p`` (see the module docstring for the terms)."""
    a = p.arch
    b = 4 if p.mixed_precision else _BYTES.get(p.dtype, 2)
    act_b = 2 if p.mixed_precision else b
    plan = MemoryPlan(limit_bytes=p.gpu_memory_gb * GiB * (1 - p.headroom))
    shards = max(1, p.shards)

    linear = a.num_layers * a.layer_linear_params
    if p.quantization is not None:
        per = NF4_BYTES if p.quantization == "4bit" else 1.0
        weights = linear * per + (a.num_params - linear) * 4
    else:
        weights = a.num_params * b / shards
    trainable = a.lora_params(p.lora_r, p.lora_targets) if p.lora_r else a.num_params
    t_b = 4 if p.lora_r else b
    adapters = trainable * 4 / shards if p.lora_r else 0.0
    grads = trainable * t_b / shards
    optimizer = 2 * trainable * t_b / shards
    reference = a.num_params * b / shards if (p.reference_copy and not p.lora_r) else 0.0

    persistent = {"weights": weights, "LoRA adapters": adapters, "optimizer states": optimizer}
    if reference:
        persistent["reference copy"] = reference
    persistent["CUDA context, workspaces"] = p.overhead_gb * GiB
    tokens = p.micro_batch_sequences * p.sequence_length
    chunked = p.logprob_chunk_size and shards == 1 and p.logprob_chunk_size < p.completion_length
    positions = p.micro_batch_sequences * (p.logprob_chunk_size if chunked else p.completion_length)
    plan.training = {
        **persistent,
        "gradients": grads,
        "activations": activation_bytes(a, tokens, act_b, p.gradient_checkpointing),
        "logits": logits_bytes(a, positions, act_b, grad=True, entropy=p.entropy),
    }
    plan.rollout = dict(persistent)

    if p.rollout_backend == "hf" and p.rollout_sequences:
        kv = p.rollout_sequences * p.rollout_length * a.kv_bytes_per_token(act_b)
        plan.rollout["KV cache (HF generate)"] = kv
    elif p.rollout_backend == "vllm":
        reserved = p.vllm_memory * p.gpu_memory_gb * GiB
        plan.rollout["vLLM (gpu_memory_utilization)"] = reserved
        if not p.vllm_sleep:
            plan.training["vLLM (awake while training)"] = reserved
        vllm_weights = a.num_params * 2 / max(1, p.vllm_tensor_parallel)
        kv_free = reserved - vllm_weights - 0.5 * GiB
        if kv_free <= 0:
            plan.notes.append(
                f"vLLM's share ({reserved / GiB:.1f} GiB) cannot hold its own weights ({vllm_weights / GiB:.1f} GiB):"
                " raise rollout.vllm_memory or the tensor-parallel size"
            )
            plan.rollout["vLLM (gpu_memory_utilization)"] = max(reserved, vllm_weights + 0.5 * GiB)
        elif p.rollout_sequences:
            needed = p.rollout_sequences * p.rollout_length * a.kv_bytes_per_token(2) / max(1, p.vllm_tensor_parallel)
            if needed > kv_free:
                concurrent = int(kv_free / max(1, p.rollout_length * a.kv_bytes_per_token(2)))
                plan.notes.append(
                    f"vLLM's KV cache ({kv_free / GiB:.1f} GiB) holds about {concurrent} of the "
                    f"{p.rollout_sequences} sequences at full length: it will queue the rest (slower, not an OOM)"
                )

    file_bytes = a.num_params * (2 if p.quantization else b)
    plan.host_ram_bytes = file_bytes * max(1, p.ranks_per_node)
    if not plan.fits:
        plan.notes.extend(_advice(p, plan))
    return plan


def _advice(p: PlanInput, plan: MemoryPlan) -> list[str]:
    phase = plan.training if sum(plan.training.values()) >= sum(plan.rollout.values()) else plan.rollout
    biggest = sorted(phase.items(), key=lambda kv: -kv[1])[:3]
    out = ["largest terms: " + ", ".join(f"{k} {v / GiB:.1f} GiB" for k, v in biggest)]
    names = {k for k, _ in biggest}
    if "activations" in names and not p.gradient_checkpointing:
        out.append("turn on model.gradient_checkpointing")
    if {"activations", "logits"} & names and p.micro_batch_sequences > 1:
        out.append("lower the micro-batch size")
    if "logits" in names:
        out.append("shorten the completion budget (logits grow with completion tokens × vocabulary)")
    if {"optimizer states", "gradients", "weights"} & names:
        out.append("train LoRA adapters (model.lora), quantize the base (QLoRA), or shard over more GPUs (FSDP2)")
    if any(k.startswith("vLLM") or k.startswith("KV") for k in names):
        out.append("lower rollout.vllm_memory / the rollout batch, or let vLLM sleep while training")
    return out


def _cell(v: float | None) -> str:
    return f"{v / GiB:14.2f}" if v is not None else f"{'-':>14}"


def format_plan(plan: MemoryPlan, title: str = "Memory plan (per GPU)") -> str:
    """The plan as a plain-text table."""
    rows = sorted(
        set(plan.training) | set(plan.rollout), key=lambda k: list({**plan.training, **plan.rollout}).index(k)
    )
    lines = [title, f"{'component':<32}{'training GiB':>14}{'rollout GiB':>14}"]
    for k in rows:
        t, r = plan.training.get(k), plan.rollout.get(k)
        lines.append(f"{k:<32}{_cell(t)}{_cell(r)}")
    lines.append(f"{'total':<32}{sum(plan.training.values()) / GiB:14.2f}{sum(plan.rollout.values()) / GiB:14.2f}")
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    lines.append(f"peak {plan.peak_bytes / GiB:.1f} GiB of {plan.limit_bytes / GiB:.1f} GiB usable: {verdict}")
    lines.append(f"host RAM to load the checkpoint: {plan.host_ram_bytes / GiB:.1f} GiB per machine")
    lines.extend(f"note: {n}" for n in plan.notes)
    return "\n".join(lines)
