"""Padding-free batches: the sequences of a :class:`~lightning_cort.trajectory.TrajectoryBatch` packed into rows
without padding between them.

A padded batch computes ``B × (P + T)`` positions however short most sequences are; text-only traces, whose lengths
vary by several times, spend most of a step on padding. Packing places whole sequences one after another in rows of
the longest sequence's length (first fit, longest first), with position ids restarting at 0 for each sequence. The
model's own attention path then keeps them apart: transformers builds a block-diagonal causal mask from restarting
position ids when no attention mask is given (``masking_utils.find_packed_sequence_indices``; flash-attention-2
uses variable-length kernels instead), so no token attends to another sequence. Attention still costs ``L²`` per
row, as a padded row of the longest sequence does; what is saved is every other layer's work on padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lightning_cort.trajectory import TrajectoryBatch


@dataclass
class PackedBatch:
    """A batch packed into rows, and where its completion tokens went.

    Attributes:
        input_ids: ``[R, L]`` the sequences (prompt then completion, no padding), one after another; each row's
            tail after its last sequence is padding, a block of its own.
        position_ids: ``[R, L]`` positions restarting at 0 for each sequence (and for the tail).
        predictors: ``[M]`` flat indices into ``R × L`` of the positions whose next token is a completion token.
        targets: ``[M]`` those completion tokens.
        rows: ``[M]`` and ``columns``: ``[M]`` where each belongs in the padded ``[B, T]`` layout.
        columns: See ``rows``.
        shape: ``(B, T)`` of the padded layout.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    predictors: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor
    columns: torch.Tensor
    shape: tuple[int, int]

    def unpack(self, values: torch.Tensor) -> torch.Tensor:
        """``[M]`` values per completion token into the padded ``[B, T]`` layout (0 at padding)."""
        out = values.new_zeros(self.shape)
        return out.index_put((self.rows, self.columns), values)


def pack_batch(batch: TrajectoryBatch, pad_token_id: int) -> PackedBatch:
    """Pack ``batch`` into rows of its longest sequence's length (see the module docstring)."""
    device = batch.prompt_ids.device
    b, t = batch.completion_ids.shape
    prompt_lengths = batch.prompt_mask.sum(dim=1).tolist()
    completion_lengths = batch.completion_mask.sum(dim=1).tolist()
    lengths = [p + c for p, c in zip(prompt_lengths, completion_lengths)]
    capacity = max(lengths)
    bins: list[list[int]] = []  # sequence indices per row
    room: list[int] = []
    for i in sorted(range(b), key=lambda i: -lengths[i]):  # first fit, longest first
        for r, free in enumerate(room):
            if lengths[i] <= free:
                bins[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    input_ids = torch.full((len(bins), capacity), pad_token_id, dtype=torch.long, device=device)
    position_ids = torch.zeros((len(bins), capacity), dtype=torch.long, device=device)
    predictors, targets, rows, columns = [], [], [], []
    for r, members in enumerate(bins):
        offset = 0
        for i in members:
            p, c = prompt_lengths[i], completion_lengths[i]
            prompt = batch.prompt_ids[i, batch.prompt_ids.shape[1] - p :]  # prompts are left-padded
            completion = batch.completion_ids[i, :c]
            input_ids[r, offset : offset + p + c] = torch.cat([prompt, completion])
            position_ids[r, offset : offset + p + c] = torch.arange(p + c, device=device)
            # Position offset + p - 1 + k predicts completion token k.
            predictors.append(r * capacity + offset + p - 1 + torch.arange(c, device=device))
            targets.append(completion)
            rows.append(torch.full((c,), i, dtype=torch.long, device=device))
            columns.append(torch.arange(c, device=device))
            offset += p + c
        tail = capacity - offset
        position_ids[r, offset:] = torch.arange(tail, device=device)  # a block of its own, after every sequence
    return PackedBatch(
        input_ids,
        position_ids,
        torch.cat(predictors),
        torch.cat(targets),
        torch.cat(rows),
        torch.cat(columns),
        (b, t),
    )


def padding_share(batch: TrajectoryBatch) -> tuple[float, float]:
    """The share of computed positions that are padding: ``(padded, packed)`` for this batch."""
    lengths = (batch.prompt_mask.sum(dim=1) + batch.completion_mask.sum(dim=1)).tolist()
    real = sum(lengths)
    padded = len(lengths) * (batch.prompt_ids.shape[1] + batch.completion_ids.shape[1])
    packed = pack_batch(batch, 0).input_ids.numel()
    return 1.0 - real / padded, 1.0 - real / packed
