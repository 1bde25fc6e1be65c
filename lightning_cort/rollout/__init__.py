"""Rollouts: the multi-turn generate → execute → append loop and its generation backends."""

from lightning_cort.rollout.backends.base import GenerationBackend, GenerationOutput, SamplingConfig
from lightning_cort.rollout.backends.hf import HFBackend
from lightning_cort.rollout.engine import RolloutConfig, RolloutEngine

__all__ = ["GenerationBackend", "GenerationOutput", "HFBackend", "RolloutConfig", "RolloutEngine", "SamplingConfig"]
