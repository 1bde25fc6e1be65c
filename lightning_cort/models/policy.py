"""Build the policy to train: a model id or path (or the tiny factory), its dtype, LoRA or QLoRA adapters,
activation checkpointing, and HF-format export. The same model object then trains on one device, under DDP, or
sharded with FSDP2 (see :func:`shard_fsdp2`, called from the modules' ``configure_model``).

Supported combinations:

==================  ===========  ==========  =============
                    full params  LoRA        QLoRA (4-bit)
==================  ===========  ==========  =============
single device       yes          yes         yes
DDP                 yes          yes         yes
FSDP2               yes          yes         no (error)
==================  ===========  ==========  =============
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from lightning_cort._imports import require
from lightning_cort.models.tiny import TinyConfig, tiny_from_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Dtype = Literal["float32", "bfloat16", "float16", "auto"]
Quantization = Literal["4bit", "8bit"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoraSettings:
    """LoRA adapter settings (peft).

    Args:
        r: Rank.
        alpha: Scaling numerator (``alpha / r`` scales the update).
        dropout: Dropout on the adapter input.
        target_modules: Module names to adapt; ``"all-linear"`` adapts every linear layer but the output head.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] | str = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class PolicySettings:
    """How to build the policy (the ``model`` section of the recipes).

    Args:
        name_or_path: A hub id or local directory, a ``.gguf`` file or ``packaged:<name>`` (converted once into a cached
            Hugging Face directory: :mod:`lightning_cort.models.real`); ``None`` builds the tiny Qwen2 model and
            tokenizer.
        dtype: Parameter dtype; ``auto`` keeps the checkpoint's.
        lora: LoRA settings, or ``None`` to train every parameter.
        quantization: ``4bit`` (QLoRA, nf4 with double quantization) or ``8bit`` base weights; needs ``lora``.
        gradient_checkpointing: Recompute activations in the backward pass (less memory, ~30% more compute).
        attn_implementation: Passed to ``from_pretrained`` (``sdpa``, ``eager``, ``flash_attention_2``).
        trust_remote_code: Passed to ``from_pretrained``.
        tiny: Shape of the tiny model (only when ``name_or_path`` is ``None``).
    """

    name_or_path: str | None = None
    dtype: Dtype = "float32"
    lora: LoraSettings | None = None
    quantization: Quantization | None = None
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    tiny: TinyConfig = field(default_factory=TinyConfig)

    def validate(self) -> None:
        """Raise ``ValueError`` naming every unsupported combination."""
        errors = []
        if self.dtype not in (*_DTYPES, "auto"):
            errors.append(f"dtype must be one of {[*sorted(_DTYPES), 'auto']}, got {self.dtype!r}")
        if self.quantization is not None:
            if self.quantization not in ("4bit", "8bit"):
                errors.append(f"quantization must be '4bit', '8bit' or None, got {self.quantization!r}")
            if self.lora is None:
                errors.append("quantized base weights cannot be trained: set `lora` too (QLoRA)")
            if self.name_or_path is None:
                errors.append("quantization needs a checkpoint (`name_or_path`); save the tiny model first")
        if self.lora is not None and self.lora.r < 1:
            errors.append(f"lora.r must be >= 1, got {self.lora.r}")
        if errors:
            raise ValueError("invalid policy (model) settings: " + "; ".join(errors))


def load_policy(
    settings: PolicySettings | None = None, tokenizer: PreTrainedTokenizerBase | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Build the model and tokenizer described by ``settings``, ready to train (``.train()`` mode).

    Returns:
        ``(model, tokenizer)``; with LoRA the model is a ``peft.PeftModel`` whose only trainable parameters are the
        adapters, so ``with model.disable_adapter():`` gives the base model (the RL reference without a copy).
    """
    settings = settings or PolicySettings()
    settings.validate()
    if settings.name_or_path is None:
        from lightning_cort.models.tiny import tiny_tokenizer

        tokenizer = tokenizer or tiny_tokenizer()
        model = tiny_from_config(tokenizer, settings.tiny)
        if settings.dtype != "auto":
            model = model.to(_DTYPES[settings.dtype])
    else:
        model, tokenizer = _from_pretrained(settings, tokenizer)
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if settings.lora is not None:
        model = add_lora(model, settings.lora)
    model.train()
    return model, tokenizer


def _from_pretrained(
    settings: PolicySettings, tokenizer: PreTrainedTokenizerBase | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM

    from lightning_cort.models.real import resolve_model

    path = resolve_model(settings.name_or_path or "")  # a .gguf file or packaged model: its converted directory
    kwargs: dict[str, Any] = {"trust_remote_code": settings.trust_remote_code}
    if settings.dtype != "auto":
        kwargs["dtype"] = _DTYPES[settings.dtype]
    if settings.attn_implementation:
        kwargs["attn_implementation"] = settings.attn_implementation
    if settings.quantization is not None:
        require("bitsandbytes", "QLoRA (quantization='4bit'/'8bit')")
        from transformers import BitsAndBytesConfig

        compute = _DTYPES.get(settings.dtype, torch.bfloat16) if settings.dtype != "auto" else torch.bfloat16
        if settings.quantization == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute,
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        if not torch.cuda.is_available():
            kwargs["device_map"] = {"": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise OSError(
            f"could not load model {settings.name_or_path!r}: give a local directory or a hub id reachable from this "
            f"machine ({e})"
        ) from e
    if tokenizer is None:
        tokenizer = _load_tokenizer(path, settings.trust_remote_code)
    if settings.quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=settings.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        disable_cpu_4bit_repacking(model)
    return model, tokenizer


def _load_tokenizer(path: str, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def add_lora(model: PreTrainedModel, lora: LoraSettings) -> PreTrainedModel:
    """``model`` with LoRA adapters of ``lora`` on its target modules (a ``peft.PeftModel``; only they train)."""
    require("peft", "LoRA")
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def contiguous_head_inputs(model: torch.nn.Module) -> torch.nn.Module:
    """Make the output head's input contiguous (idempotent; returns ``model``).

    Transformers slices the last hidden states before the head (``logits_to_keep``: the last position in generation,
    the completion positions in training) and so hands it a strided view. On CPU, PyTorch's bf16 matmul of a strided
    3-D input takes a slow path: 9.3 s instead of 0.02 s for 16 rows through Qwen2's 151,936-row head (float32: 0.29
    instead of ~0.05 s). Copying the slice first costs microseconds.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if isinstance(head, torch.nn.Module) and not getattr(head, "_lightning_cort_contiguous", False):
        head.register_forward_pre_hook(lambda _module, args: (args[0].contiguous(), *args[1:]))
        head._lightning_cort_contiguous = True  # type: ignore[assignment]
    return model


def disable_cpu_4bit_repacking(model: torch.nn.Module) -> int:
    """Keep bitsandbytes' 4-bit layers trainable after an eval-mode forward on CPU.

    On CPUs with AVX512-BF16 the first eval-mode forward of a ``Linear4bit`` repacks its weight into a CPU-only
    layout, after which training fails or silently loses input gradients — exactly the RL order (generate, then
    train). This turns the repacking off on every 4-bit layer. Returns how many layers were changed.
    """
    n = 0
    for module in model.modules():
        if type(module).__name__ == "Linear4bit" and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def is_peft_model(model: torch.nn.Module) -> bool:
    """Whether ``model`` carries peft adapters that can be switched off (``disable_adapter``)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def is_quantized(model: torch.nn.Module) -> bool:
    """Whether the model has bitsandbytes 4-bit or 8-bit layers."""
    return any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in model.modules())


def decoder_layers(model: torch.nn.Module) -> Sequence[torch.nn.Module]:
    """The transformer blocks of a causal LM (through a peft wrapper), the units FSDP2 shards one by one."""
    base = model.get_base_model() if is_peft_model(model) else model  # type: ignore[operator]
    inner = getattr(base, "model", base)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(base).__name__} (expected `.model.layers`)")
    return list(layers)


def shard_fsdp2(model: torch.nn.Module, device_mesh: Any, *, reshard_after_forward: bool = True) -> torch.nn.Module:
    """Shard ``model`` with FSDP2 (``fully_shard``): each decoder layer, then the root.

    Call it from ``configure_model`` under Lightning's ``ModelParallelStrategy`` (``device_mesh["data_parallel"]``
    or a 1-D mesh). Quantized (QLoRA) models are refused: bitsandbytes' packed weights cannot be sharded as
    DTensors.
    """
    from torch.distributed.fsdp import fully_shard

    if is_quantized(model):
        raise ValueError(
            "FSDP2 cannot shard bitsandbytes-quantized weights: use LoRA with full-precision weights under FSDP2, "
            "or QLoRA on a single device / DDP"
        )
    mesh = device_mesh
    if (
        hasattr(device_mesh, "mesh_dim_names")
        and device_mesh.mesh_dim_names
        and "data_parallel" in (device_mesh.mesh_dim_names)
    ):
        mesh = device_mesh["data_parallel"]
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return model


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on CPU: gathers FSDP2 DTensors (a collective: call it on every rank)."""
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in model.parameters()):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def policy_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights under Hugging Face parameter names, for a generation engine (vLLM weight sync).

    A plain model yields its state dict; FSDP2-sharded parameters are gathered first (a collective: call it on every
    rank); a LoRA policy yields its base weights with each adapter's update ``B @ A × scaling`` added on the fly,
    so the trained model is not modified. 4-bit/8-bit bases are refused (the engine would need dequantized weights).
    """
    if is_quantized(model):
        raise ValueError("cannot sync a 4-bit/8-bit policy's weights to a generation engine: use the HF backend")
    state = full_state_dict(model)
    if not is_peft_model(model):
        yield from state.items()
        return
    adapter = getattr(model, "active_adapter", "default")
    adapter = adapter[0] if isinstance(adapter, (list, tuple)) else adapter
    scaling = {
        name: module.scaling[adapter]
        for name, module in model.named_modules()
        if hasattr(module, "lora_A") and adapter in getattr(module, "lora_A", {})
    }
    for name, tensor in state.items():
        if ".lora_" in name or ".lora_magnitude" in name:
            continue
        out = tensor
        if name.endswith(".base_layer.weight"):
            path = name[: -len(".base_layer.weight")]
            if path in scaling:
                a = state[f"{path}.lora_A.{adapter}.weight"].float()
                b = state[f"{path}.lora_B.{adapter}.weight"].float()
                out = (tensor.float() + (b @ a) * scaling[path]).to(tensor.dtype)
        yield name.removeprefix("base_model.model.").replace(".base_layer.", "."), out


def export_policy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    path: str | os.PathLike,
    *,
    mode: Literal["full", "adapter", "merged"] = "merged",
) -> Path:
    """Write the policy in Hugging Face format, loadable with ``from_pretrained`` (or by vLLM).

    Args:
        model: The trained policy (plain or peft).
        tokenizer: Saved beside it when given.
        path: Output directory.
        mode: ``full`` (a plain model's weights), ``adapter`` (only the LoRA adapter, for ``PeftModel.from_pretrained``)
            or ``merged`` (adapters folded into a copy of the base weights; a plain model is saved as is).

    Under FSDP2 call it on every rank: the shards are gathered (a collective) and rank 0 writes.
    """
    if mode not in ("full", "adapter", "merged"):
        raise ValueError(f"unknown export mode {mode!r}; choose 'full', 'adapter' or 'merged'")
    peft = is_peft_model(model)
    if mode == "adapter" and not peft:
        raise ValueError("mode='adapter' needs a LoRA (peft) policy; use 'full' for a plain model")
    if peft and mode == "full":
        raise ValueError("a LoRA policy has no standalone full weights: use mode='merged' or 'adapter'")
    if peft and mode == "merged" and is_quantized(model):
        raise ValueError("cannot merge LoRA into 4-bit/8-bit weights: export mode='adapter' and merge on load")
    out = Path(path)
    if _is_sharded(model):
        # FSDP2: gather on every rank (a collective), write once.
        import torch.distributed as dist

        state = full_state_dict(model) if mode == "adapter" else dict(policy_weights(model))
        if dist.get_rank() == 0:
            out.mkdir(parents=True, exist_ok=True)
            if mode == "adapter":
                adapter = {k: v for k, v in state.items() if ".lora_" in k}
                model.save_pretrained(out, state_dict=adapter)
            else:
                (model.get_base_model() if peft else model).save_pretrained(out, state_dict=state)
        dist.barrier()
    else:
        out.mkdir(parents=True, exist_ok=True)
        if mode == "adapter":
            model.save_pretrained(out)
        else:
            (_merged_copy(model) if peft else model).save_pretrained(out)
    if tokenizer is not None and (not _is_sharded(model) or _rank() == 0):
        from lightning_cort.models.tiny import save_tokenizer

        save_tokenizer(tokenizer, out)
    return out


def _is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _merged_copy(model: Any) -> PreTrainedModel:
    import copy

    return copy.deepcopy(model).merge_and_unload()
