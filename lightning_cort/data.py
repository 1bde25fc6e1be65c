"""Turning text traces into token-exact training examples, and small dataset helpers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from lightning_cort.trajectory import Segment, Trajectory

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lightning_cort.formats.base import CodeFormat


def encode_prompt(tokenizer: PreTrainedTokenizerBase, message: str) -> list[int]:
    """Chat-template one user message, with the generation prompt (``...<｜Assistant｜><think>\\n``)."""
    enc = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True)
    return list(enc["input_ids"] if isinstance(enc, Mapping) else enc)


def trajectory_from_text(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    completion: str,
    code_format: CodeFormat,
    *,
    row: Mapping[str, Any] | None = None,
    add_eos: bool = True,
) -> Trajectory:
    """Build a training example from a text trace, with the same token boundaries a rollout produces.

    Model text and interpreter-output blocks are tokenized separately and concatenated, exactly as the rollout engine
    appends separately encoded output after the sampled ids; interpreter blocks get ``loss_mask = 0``.

    Args:
        tokenizer: Tokenizer with a chat template.
        prompt: The user message.
        completion: The assistant text after the generation prompt (thinking, code, outputs, answer).
        code_format: Identifies the interpreter-output blocks.
        row: Dataset row kept on the example.
        add_eos: Append the EOS token (trained on) so the model learns to stop.
    """
    pieces: list[tuple[str, str]] = []
    for block in code_format.parse(completion):
        kind = "tool" if block.kind == "output" else "model"
        text = code_format.join([block])
        if pieces and pieces[-1][0] == kind:
            pieces[-1] = (kind, pieces[-1][1] + text)
        else:
            pieces.append((kind, text))
    ids: list[int] = []
    mask: list[int] = []
    segments: list[Segment] = []
    for kind, text in pieces:
        piece_ids = tokenizer.encode(text, add_special_tokens=False)
        if kind == "model" and add_eos and (kind, text) == pieces[-1]:
            piece_ids = [*piece_ids, tokenizer.eos_token_id]
            text = text + tokenizer.eos_token
        segments.append(Segment(kind, len(ids), len(ids) + len(piece_ids), text))  # type: ignore[arg-type]
        ids.extend(piece_ids)
        mask.extend([1 if kind == "model" else 0] * len(piece_ids))
    if add_eos and pieces and pieces[-1][0] == "tool":
        segments.append(Segment("model", len(ids), len(ids) + 1, tokenizer.eos_token))
        ids.append(tokenizer.eos_token_id)
        mask.append(1)
    return Trajectory(
        prompt_ids=torch.tensor(encode_prompt(tokenizer, prompt), dtype=torch.long),
        completion_ids=torch.tensor(ids, dtype=torch.long),
        loss_mask=torch.tensor(mask, dtype=torch.long),
        segments=segments,
        tool_calls=[],
        finish_reason="eos" if add_eos else "length",
        prompt_text=prompt,
        row=dict(row or {}),
    )


class ListDataset(Dataset):
    """A map-style dataset over an in-memory list (trajectories for SFT, rows for RL)."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


def collate_rows(rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Keep a batch of dataset rows as a list of dicts (RL prompts are not tensors until rollout)."""
    return [dict(r) for r in rows]
