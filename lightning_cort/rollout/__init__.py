"""Rollouts: the multi-turn generate → execute → append loop and its generation backends."""

from lightning_cort.rollout.backends.base import (
    DecodeStream,
    GenerationBackend,
    GenerationOutput,
    SamplingConfig,
    StalePolicyError,
    StreamingBackend,
)
from lightning_cort.rollout.backends.hf import HFBackend, HFDecodeStream
from lightning_cort.rollout.engine import RolloutConfig, RolloutEngine

__all__ = [
    "DecodeStream",
    "GenerationBackend",
    "GenerationOutput",
    "HFBackend",
    "HFDecodeStream",
    "RolloutConfig",
    "RolloutEngine",
    "SamplingConfig",
    "StalePolicyError",
    "StreamingBackend",
    "VLLMBackend",
]


def __getattr__(name: str) -> object:
    if name == "VLLMBackend":  # imported lazily: vLLM is an optional extra
        from lightning_cort.rollout.backends.vllm import VLLMBackend

        return VLLMBackend
    raise AttributeError(f"module 'lightning_cort.rollout' has no attribute {name!r}")
