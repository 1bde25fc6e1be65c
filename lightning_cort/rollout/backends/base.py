"""The generation backend protocol used by :class:`~lightning_cort.rollout.RolloutEngine`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

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


class DecodeStream(Protocol):
    """A batch that decodes token by token, where sequences pause, resume with forced tokens, and come and go.

    The engine's ``continuous`` schedule drives it: :meth:`add` a prompt, :meth:`resume` it to start a generation
    round, call :meth:`step` until the round ends (a stop string, EOS, or its token budget), execute the code, then
    :meth:`resume` with the interpreter's output tokens as forced context; :meth:`release` a finished sequence. A
    paused sequence keeps its context (its KV cache), so a resume only encodes the forced tokens.
    """

    #: Most sequences decoded at once (``None``: no limit); the engine adds more as others are released.
    capacity: int | None

    def add(self, prompt_ids: Sequence[int]) -> int:
        """Add a sequence (paused); returns its handle."""
        ...

    def resume(self, handle: int, forced_ids: Sequence[int], max_new_tokens: int, stop_strings: Sequence[str]) -> None:
        """Append ``forced_ids`` to the sequence's context (never sampled, never re-tokenized) and start a round of at
        most ``max_new_tokens`` sampled tokens that ends at EOS or at the token completing one of ``stop_strings``."""
        ...

    def step(self) -> list[tuple[int, GenerationOutput]]:
        """Sample one token for every sequence in a round; returns ``(handle, output)`` for the rounds that ended
        (those sequences are paused), with the same ``token_ids`` / ``logprobs`` / ``finish`` semantics as
        :meth:`GenerationBackend.generate`."""
        ...

    def release(self, handle: int) -> None:
        """Drop a sequence and free its slot."""
        ...

    def drop_last(self, handle: int) -> None:
        """Remove the last sampled token of a paused sequence from its context (the engine drops an end-of-turn token
        that followed a closed code call, so the call's output continues the turn without it)."""
        ...

    @property
    def generating(self) -> int:
        """Sequences currently in a round."""
        ...

    @property
    def size(self) -> int:
        """Sequences held (generating or paused)."""
        ...


@runtime_checkable
class StreamingBackend(Protocol):
    """A backend that can also decode continuously (:class:`DecodeStream`)."""

    def open_stream(self, sampling: SamplingConfig) -> DecodeStream:
        """A new, empty stream sampling with ``sampling`` (its ``max_new_tokens`` is ignored: rounds set theirs)."""
        ...
