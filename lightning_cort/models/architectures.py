"""Model shapes without weights: what the memory planner and the recipes' offline checks need to know about a model.

A shape comes from a local checkpoint's ``config.json``, from the Hugging Face cache (offline), or from the table of
:data:`KNOWN_ARCHITECTURES` (the public configs of the models the shipped recipes use), so a recipe can be planned and
instantiated on the meta device on a machine that has never downloaded the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel


@dataclass(frozen=True)
class Architecture:
    """The shape of a decoder-only transformer of the Qwen2/Llama family.

    Attributes:
        name: Where the shape came from (a model id or path).
        model_type: ``qwen2`` (biases on q/k/v) or ``llama`` (no biases).
        hidden_size: Model width ``h``.
        num_layers: Decoder layers ``L``.
        num_heads: Attention heads.
        num_kv_heads: Key/value heads (grouped-query attention).
        intermediate_size: SwiGLU MLP width ``I``.
        vocab_size: Embedding rows ``V``.
        tie_word_embeddings: Whether the output head shares the embedding matrix.
        max_position_embeddings: Longest supported context.
        head_dim: Per-head width (``hidden_size / num_heads`` unless the config says otherwise).
    """

    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    head_dim: int = 0

    def __post_init__(self) -> None:
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)

    # -- parameter counts ------------------------------------------------------------------------------------------
    @property
    def layer_linear_params(self) -> int:
        """Weights of one decoder layer's linear projections (what LoRA adapts and 4-bit quantization packs)."""
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        q = self.num_heads * self.head_dim
        return h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size

    @property
    def layer_other_params(self) -> int:
        """Biases and norms of one decoder layer."""
        biases = (
            self.num_heads * self.head_dim + 2 * self.num_kv_heads * self.head_dim if self.model_type == "qwen2" else 0
        )
        return biases + 2 * self.hidden_size

    @property
    def embedding_params(self) -> int:
        """Input embedding plus (when untied) the output head."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def num_params(self) -> int:
        """All parameters."""
        layer = self.layer_linear_params + self.layer_other_params
        return self.embedding_params + self.num_layers * layer + self.hidden_size

    def lora_params(self, r: int, target_modules: list[str] | str) -> int:
        """Trainable parameters of LoRA adapters of rank ``r`` on ``target_modules`` in every layer."""
        h, I = self.hidden_size, self.intermediate_size  # noqa: E741
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        shapes = {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, I),
            "up_proj": (h, I),
            "down_proj": (I, h),
        }
        names = list(shapes) if target_modules == "all-linear" else list(target_modules)
        unknown = [n for n in names if n not in shapes]
        if unknown:
            raise ValueError(f"unknown LoRA target modules {unknown}; known: {sorted(shapes)} or 'all-linear'")
        return self.num_layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Key and value cache bytes one token takes over all layers."""
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * dtype_bytes

    # -- conversions -----------------------------------------------------------------------------------------------
    def to_hf_config(self) -> PretrainedConfig:
        """A transformers config of this shape (``Qwen2Config`` or ``LlamaConfig``)."""
        kwargs: dict[str, Any] = {
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
        }
        if self.model_type == "qwen2":
            from transformers import Qwen2Config

            return Qwen2Config(**kwargs)
        from transformers import LlamaConfig

        return LlamaConfig(head_dim=self.head_dim, **kwargs)

    def meta_model(self) -> PreTrainedModel:
        """The model with this shape on the meta device: every parameter has its real shape and no storage."""
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(self.to_hf_config())

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


def _arch(name: str, h: int, layers: int, heads: int, kv: int, inter: int, vocab: int, tied: bool, ctx: int):
    return Architecture(name, "qwen2", h, layers, heads, kv, inter, vocab, tied, ctx)


#: Public configs of the models the shipped recipes use (keys are lower-case model ids).
KNOWN_ARCHITECTURES: dict[str, Architecture] = {
    a.name.lower(): a
    for a in (
        _arch("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 1536, 28, 12, 2, 8960, 151936, False, 131072),
        _arch("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 3584, 28, 28, 4, 18944, 152064, False, 131072),
        _arch("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", 5120, 48, 40, 8, 13824, 152064, False, 131072),
        _arch("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 5120, 64, 40, 8, 27648, 152064, False, 131072),
        _arch("Qwen/Qwen2.5-1.5B-Instruct", 1536, 28, 12, 2, 8960, 151936, True, 32768),
        _arch("Qwen/Qwen2.5-3B-Instruct", 2048, 36, 16, 2, 11008, 151936, True, 32768),
        _arch("Qwen/Qwen2.5-7B-Instruct", 3584, 28, 28, 4, 18944, 152064, False, 32768),
        _arch("Qwen/Qwen2.5-14B-Instruct", 5120, 48, 40, 8, 13824, 152064, False, 32768),
        _arch("Qwen/Qwen2.5-32B-Instruct", 5120, 64, 40, 8, 27648, 152064, False, 32768),
        # The packaged real models (lightning_cort.models.real), as their GGUF files describe them.
        _arch("packaged:qwen2.5-coder-0.5b-instruct", 896, 24, 14, 2, 4864, 151936, False, 32768),
        Architecture("packaged:gemma-3-270m", "llama", 640, 18, 4, 1, 2048, 262144, True, 32768, head_dim=256),
    )
}


def architecture_from_config(config: Any, name: str = "") -> Architecture:
    """The shape described by a transformers config object or a ``config.json`` dict."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    model_type = get("model_type", "qwen2")
    heads = get("num_attention_heads")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if get(k) is None]
    if missing:
        raise ValueError(f"the config of {name or 'the model'} lacks {missing}: not a decoder-only transformer config")
    return Architecture(
        name=name or str(get("_name_or_path", "")),
        model_type="qwen2" if model_type == "qwen2" else "llama",
        hidden_size=get("hidden_size"),
        num_layers=get("num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=get("num_key_value_heads") or heads,
        intermediate_size=get("intermediate_size"),
        vocab_size=get("vocab_size"),
        tie_word_embeddings=bool(get("tie_word_embeddings", False)),
        max_position_embeddings=get("max_position_embeddings", 32768) or 32768,
        head_dim=get("head_dim") or 0,
    )


def resolve_architecture(name_or_path: str) -> Architecture:
    """The shape of ``name_or_path`` without loading weights or using the network.

    Looks in order at a local directory's ``config.json``, :data:`KNOWN_ARCHITECTURES`, and the Hugging Face cache.

    Raises:
        ValueError: When none of them knows the model (the message lists the known ids).
    """
    from lightning_cort.models.real import converted_config

    config = converted_config(name_or_path)  # a .gguf file or a packaged model: its conversion's config, or its header
    if config is not None:
        return architecture_from_config(config, name_or_path)
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return architecture_from_config(json.loads((path / "config.json").read_text()), str(path))
    known = KNOWN_ARCHITECTURES.get(name_or_path.lower())
    if known is not None:
        return known
    try:
        from transformers import AutoConfig

        return architecture_from_config(AutoConfig.from_pretrained(name_or_path, local_files_only=True), name_or_path)
    except Exception as err:  # not cached, not a model id, unsupported config: all mean "unknown here"
        known = sorted(a.name for a in KNOWN_ARCHITECTURES.values())
        raise ValueError(
            f"cannot find the shape of {name_or_path!r} offline: it is not a directory with a config.json, not in the "
            f"Hugging Face cache, and not one of the known models {known}"
            f" ({type(err).__name__}: {err})"
        ) from err
