"""The generation backend protocol used by :class:`~lightning_cort.rollout.RolloutEngine`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

BackendFinish = Literal["stop", "eos", "length"]


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample.

    Attributes:
        temperature: Softmax temperature; ``0`` means greedy.
        top_p: Nucleus sampling mass.
        top_k: Keep the ``top_k`` most likely tokens (``0``: all).
        max_new_tokens: Upper bound for one generation call.
        logprobs: Return the sampled tokens' log-probabilities (under ``logits / temperature``).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    logprobs: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class GenerationOutput:
    """One row's newly sampled tokens.

    Attributes:
        token_ids: Exactly the sampled ids (up to and including the token that completed a stop string, or EOS).
        logprobs: Their log-probabilities when requested.
        finish: ``stop`` (a stop string completed), ``eos``, or ``length``.
    """

    token_ids: list[int]
    logprobs: list[float] | None
    finish: BackendFinish


class StalePolicyError(RuntimeError):
    """The generation backend holds other weights than the policy version that is supposed to sample."""


class GenerationBackend(Protocol):
    """Generates continuations of token-id prompts; never re-tokenizes."""

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop_strings: Sequence[str]
    ) -> list[GenerationOutput]:
        """Continue each prompt until EOS, ``sampling.max_new_tokens``, or a stop string."""
        ...
