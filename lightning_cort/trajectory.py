"""The core data model: a :class:`Trajectory` (one sampled completion with interleaved tool output) and the collator
that turns a list of them into padded training tensors.

Provenance, not text, decides what is trained on: every completion token is either *sampled* by the model
(``loss_mask == 1``) or *forced* by the environment as rendered interpreter output (``loss_mask == 0``). The ids are
exactly the ids that were sampled or appended, never re-tokenized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from lightning_cort.sandbox.base import ExecutionResult

SegmentKind = Literal["model", "tool"]
FinishReason = Literal["eos", "length", "max_rounds", "budget", "active"]


@dataclass(frozen=True)
class Segment:
    """A contiguous span of completion tokens with one provenance.

    Attributes:
        kind: ``"model"`` (sampled) or ``"tool"`` (interpreter output appended by the environment).
        start: First completion-token index of the span.
        end: One past the last completion-token index.
        text: The span's text: the decoded ids for model spans, the rendered output for tool spans.
    """

    kind: SegmentKind
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class ToolCall:
    """One code execution inside a trajectory.

    Attributes:
        code: The program the model wrote.
        result: What the sandbox returned.
        rendered: The text appended to the completion (the interpreter block).
        segment: Index into :attr:`Trajectory.segments` of the tool segment holding ``rendered``.
    """

    code: str
    result: ExecutionResult
    rendered: str
    segment: int


@dataclass
class Trajectory:
    """One completion of one prompt, with its tool calls and token provenance.

    Attributes:
        prompt_ids: Token ids of the (chat-templated) prompt. ``[P]`` int64
        completion_ids: Every completion token: sampled and forced. ``[T]`` int64
        loss_mask: 1 for sampled tokens, 0 for interpreter-output tokens. ``[T]`` int64
        segments: The completion split into model and tool spans, in order.
        tool_calls: The executions, in order.
        finish_reason: Why generation ended: ``eos``, ``length`` (token limit), ``max_rounds``, ``budget`` (an
            output did not fit the token budget).
        sampling_logprobs: Log-probabilities of sampled tokens under the sampler, when requested; 0 at forced
            tokens. ``[T]`` float32 or ``None``
        prompt_text: The prompt as text, chat template and generation prompt included (whether it opens ``<think>``
            decides how the answer is read: :attr:`response_text`).
        row: The dataset row the prompt came from (answer, id, ...).
        group: Index of the prompt within its batch; trajectories of one prompt share it.
        policy_version: Version of the weights that sampled it (for staleness checks).
        generation_s: Seconds spent in generation for this trajectory's rounds (shared batch time divided evenly).
        tool_s: Seconds its executions took.
    """

    prompt_ids: torch.Tensor
    completion_ids: torch.Tensor
    loss_mask: torch.Tensor
    segments: list[Segment]
    tool_calls: list[ToolCall]
    finish_reason: FinishReason
    sampling_logprobs: torch.Tensor | None = None
    prompt_text: str = ""
    row: dict[str, Any] = field(default_factory=dict)
    group: int = 0
    policy_version: int = 0
    generation_s: float = 0.0
    tool_s: float = 0.0

    @property
    def completion_text(self) -> str:
        """The completion as text: model spans decoded, tool spans as rendered."""
        return "".join(s.text for s in self.segments)

    @property
    def response_text(self) -> str:
        """The response as answer checking reads it: the completion, preceded by ``<think>`` when the prompt's
        generation prompt opened the thinking (R1-Distill templates do; instruct models' do not)."""
        from lightning_cort.rewards.math import response_text

        return response_text(self.prompt_text, self.completion_text)

    @property
    def num_model_tokens(self) -> int:
        """Sampled tokens."""
        return int(self.loss_mask.sum())

    @property
    def num_tool_tokens(self) -> int:
        """Interpreter-output tokens."""
        return int(self.loss_mask.numel() - self.loss_mask.sum())

    @property
    def has_infrastructure_failure(self) -> bool:
        """Whether any execution failed because of the sandbox rather than the code."""
        return any(c.result.is_infrastructure_failure for c in self.tool_calls)

    def validate(self) -> None:
        """Check internal consistency (lengths, segment coverage, masks agree with provenance)."""
        n = self.completion_ids.numel()
        if self.loss_mask.numel() != n:
            raise ValueError(f"loss_mask has {self.loss_mask.numel()} entries for {n} completion tokens")
        pos = 0
        for s in self.segments:
            if s.start != pos or s.end < s.start:
                raise ValueError(f"segments do not tile the completion at token {pos}: {s}")
            want = 1 if s.kind == "model" else 0
            if bool((self.loss_mask[s.start : s.end] != want).any()):
                raise ValueError(f"loss_mask disagrees with the provenance of segment {s}")
            pos = s.end
        if pos != n:
            raise ValueError(f"segments cover {pos} of {n} completion tokens")


@dataclass
class TrajectoryBatch:
    """Padded tensors for a list of trajectories: prompts left-padded, completions right-padded, so the completion of
    every row starts at column ``P``.

    Attributes:
        prompt_ids: ``[B, P]`` int64, left-padded.
        prompt_mask: ``[B, P]`` int64, 1 at real prompt tokens.
        completion_ids: ``[B, T]`` int64, right-padded.
        completion_mask: ``[B, T]`` int64, 1 at real completion tokens (sampled or forced).
        loss_mask: ``[B, T]`` int64, 1 at sampled tokens only (the tokens trained on).
        sampling_logprobs: ``[B, T]`` float32 or ``None`` when any trajectory lacks them.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    loss_mask: torch.Tensor
    sampling_logprobs: torch.Tensor | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        """Prompt and completion side by side. ``[B, P + T]``"""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """``[B, P + T]``"""
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions that ignore left padding. ``[B, P + T]``"""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    def select(self, index: torch.Tensor | slice) -> TrajectoryBatch:
        """Rows ``index`` of every tensor."""
        return TrajectoryBatch(
            self.prompt_ids[index],
            self.prompt_mask[index],
            self.completion_ids[index],
            self.completion_mask[index],
            self.loss_mask[index],
            None if self.sampling_logprobs is None else self.sampling_logprobs[index],
        )

    def to(self, device: torch.device | str) -> TrajectoryBatch:
        """A copy on ``device``."""
        return TrajectoryBatch(
            *(
                t.to(device)
                for t in (self.prompt_ids, self.prompt_mask, self.completion_ids, self.completion_mask, self.loss_mask)
            ),
            None if self.sampling_logprobs is None else self.sampling_logprobs.to(device),
        )


def collate_trajectories(trajectories: Sequence[Trajectory], pad_token_id: int) -> TrajectoryBatch:
    """Pad trajectories into a :class:`TrajectoryBatch` (prompts on the left, completions on the right)."""
    if not trajectories:
        raise ValueError("cannot collate an empty list of trajectories")
    b = len(trajectories)
    p = max(t.prompt_ids.numel() for t in trajectories)
    t_len = max(max(t.completion_ids.numel() for t in trajectories), 1)
    prompt_ids = torch.full((b, p), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((b, p), dtype=torch.long)
    completion_ids = torch.full((b, t_len), pad_token_id, dtype=torch.long)
    completion_mask = torch.zeros((b, t_len), dtype=torch.long)
    loss_mask = torch.zeros((b, t_len), dtype=torch.long)
    have_logprobs = all(t.sampling_logprobs is not None for t in trajectories)
    logprobs = torch.zeros((b, t_len), dtype=torch.float32) if have_logprobs else None
    for i, t in enumerate(trajectories):
        n_p, n_c = t.prompt_ids.numel(), t.completion_ids.numel()
        prompt_ids[i, p - n_p :] = t.prompt_ids
        prompt_mask[i, p - n_p :] = 1
        completion_ids[i, :n_c] = t.completion_ids
        completion_mask[i, :n_c] = 1
        loss_mask[i, :n_c] = t.loss_mask
        if logprobs is not None:
            logprobs[i, :n_c] = t.sampling_logprobs  # type: ignore[assignment]
    return TrajectoryBatch(prompt_ids, prompt_mask, completion_ids, completion_mask, loss_mask, logprobs)
