"""Turning text traces into token-exact training examples, and small dataset helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_cort.trajectory import Segment, Trajectory

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lightning_cort.formats.base import CodeFormat


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, message: str, *, tools: Sequence[Mapping[str, Any]] = ()
) -> list[int]:
    """Chat-template one user message, with the generation prompt (``...<｜Assistant｜><think>\\n``), and the
    tool schemas ``tools`` when given (a format that calls code as a chat tool,
    :class:`~lightning_cort.formats.HermesFormat`). A tokenizer without a chat template (a base model, e.g.
    Gemma-3-270M) gets the message as plain text after its start tokens."""
    if not getattr(tokenizer, "chat_template", None):
        return list(tokenizer(message)["input_ids"])
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": message}], tools=list(tools) or None, add_generation_prompt=True
    )
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
    prompt_ids = encode_prompt(tokenizer, prompt, tools=code_format.tools)
    return Trajectory(
        prompt_ids=torch.tensor(prompt_ids, dtype=torch.long),
        completion_ids=torch.tensor(ids, dtype=torch.long),
        loss_mask=torch.tensor(mask, dtype=torch.long),
        segments=segments,
        tool_calls=[],
        finish_reason="eos" if add_eos else "length",
        prompt_text=tokenizer.decode(prompt_ids, skip_special_tokens=False),  # as a rollout's: the templated prompt
        row=dict(row or {}),
    )


def read_table(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``.jsonl``, ``.json`` (a list of objects) or ``.parquet`` file.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Lines that are not JSON objects (all listed, with the file and line numbers), or a suffix that is
            not one of the three.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such data file: {p}")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()
    if p.suffix == ".json":
        try:
            rows = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from e
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{p}: expected a JSON list of objects")
        return rows
    if p.suffix != ".jsonl":
        raise ValueError(f"{p}: unsupported data file type {p.suffix!r} (use .jsonl, .json or .parquet)")
    from lightning_cort.hints.jsonl import read_jsonl

    return [row for _, row in read_jsonl(p)]


def trace_examples(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    code_format: CodeFormat,
    *,
    source: str = "data",
) -> list[Trajectory]:
    """Training examples from trace rows: ``prompt`` + ``completion`` (text in ``code_format``), or chat
    ``messages`` (user, then assistant and ``tool`` turns, as :func:`lightning_cort.hints.to_messages` writes them).

    Raises:
        ValueError: Listing every malformed row (index and what is missing), nothing is dropped silently.
    """
    from lightning_cort.hints.convert import from_messages

    examples, errors = [], []
    for i, row in enumerate(rows):
        prompt, completion = row.get("prompt"), row.get("completion")
        if (prompt is None or completion is None) and isinstance(row.get("messages"), list):
            try:
                prompt, completion = from_messages(row["messages"], code_format)
            except ValueError as e:
                errors.append(f"row {i}: {e}")
                continue
        if not isinstance(prompt, str) or not isinstance(completion, str) or not completion:
            errors.append(
                f"row {i}: needs a string 'prompt' and a non-empty 'completion', or 'messages'; has {sorted(row)}"
            )
            continue
        examples.append(trajectory_from_text(tokenizer, prompt, completion, code_format, row=row))
    if errors:
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise ValueError(f"{source}: {len(errors)} malformed trace row(s): " + "; ".join(errors[:10]) + more)
    return examples


class ListDataset(Dataset):
    """A map-style dataset over an in-memory list (trajectories for SFT, rows for RL)."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


class EpochSampler(torch.utils.data.Sampler[int]):
    """Indices of one epoch: a permutation determined by ``(seed, epoch)`` (or the identity without shuffling).

    Unlike ``RandomSampler``, whose order comes from the global RNG, the order of an epoch can be recreated after a
    restart, which is what lets :class:`ResumableDataLoader` skip exactly the batches already trained on. Lightning
    calls :meth:`set_epoch` at the start of each epoch.
    """

    def __init__(self, size: int, *, shuffle: bool = True, seed: int = 0) -> None:
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())

    def __len__(self) -> int:
        return self.size


class LengthGroupedSampler(EpochSampler):
    """Shuffled indices arranged so that each batch holds examples of similar length (less padding, faster SFT).

    Each epoch: a seeded permutation, cut into windows of ``batch_size × window`` examples, each window sorted by
    length and cut into batches, and the batches shuffled (seeded). Reproducible per ``(seed, epoch)`` like
    :class:`EpochSampler`, so it resumes mid-epoch with :class:`ResumableDataLoader` (pass it as ``sampler=``).

    Args:
        lengths: Length of each example (e.g. prompt + completion tokens).
        batch_size: The loader's batch size.
        window: Batches per sorting window (larger: less padding, less randomness).
        seed: Shuffling seed.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, window: int = 50, seed: int = 0) -> None:
        super().__init__(len(lengths), shuffle=True, seed=seed)
        if batch_size < 1 or window < 1:
            raise ValueError(f"batch_size and window must be >= 1, got {batch_size} and {window}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.window = window

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        span = self.batch_size * self.window
        batches: list[list[int]] = []
        for start in range(0, self.size, span):
            chunk = sorted(order[start : start + span], key=lambda i: self.lengths[i], reverse=True)
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        # Keep a short last batch last, so batches stay aligned with the loader's batch_size.
        full = [b for b in batches if len(b) == self.batch_size]
        rest = [b for b in batches if len(b) != self.batch_size]
        full = [full[i] for i in torch.randperm(len(full), generator=g).tolist()]
        return iter([i for b in [*full, *rest] for i in b])


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` that resumes mid-epoch: its position is saved in Lightning checkpoints and, after a restart
    from one, the batches already trained on in that epoch are skipped, so none is skipped or repeated.

    Lightning stores ``state_dict()`` of stateful training dataloaders in its checkpoints and restores it with
    ``load_state_dict()``. The order must be reproducible: with ``shuffle=True`` the loader uses an
    :class:`EpochSampler` (seeded by ``seed`` and the epoch); under DDP Lightning's ``DistributedSampler`` is seeded
    and epoch-based too. Skipped batches are drawn and dropped (cheap for in-memory datasets).

    Args:
        dataset: The dataset.
        batch_size: Examples per batch.
        shuffle: Shuffle each epoch (reproducibly).
        seed: Shuffling seed.
        **kwargs: Other ``DataLoader`` arguments (``collate_fn``, ``num_workers``, ...).
    """

    def __init__(self, dataset: Any, batch_size: int = 1, shuffle: bool = False, seed: int = 0, **kwargs: Any) -> None:
        if "sampler" not in kwargs and "batch_sampler" not in kwargs:
            kwargs["sampler"] = EpochSampler(len(dataset), shuffle=shuffle, seed=seed)
        # A DataLoader draws a base seed each time it is iterated, from the global generator unless it has its own;
        # its own keeps a resumed run's global random streams (restored from the checkpoint) untouched.
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        super().__init__(dataset, batch_size=batch_size, **kwargs)
        self.shuffle = shuffle  # kept so Lightning can re-create the loader with a distributed sampler
        self.seed = seed
        self._position = {"epoch": -1, "yielded": 0, "exhausted": False}
        self._resume: dict[str, int] | None = None

    def _epoch(self) -> int:
        sampler = self.batch_sampler.sampler if self.batch_sampler is not None else self.sampler
        return int(getattr(sampler, "epoch", getattr(self.sampler, "epoch", 0)))

    def __iter__(self) -> Iterator[Any]:
        epoch = self._epoch()
        skip = 0
        if self._resume is not None and self._resume["epoch"] == epoch:
            skip = self._resume["batches"]
        self._resume = None
        self._position = {"epoch": epoch, "yielded": skip, "exhausted": False}
        iterator = super().__iter__()
        for _ in range(skip):
            next(iterator, None)
        for batch in iterator:
            self._position["yielded"] += 1
            yield batch
        self._position["exhausted"] = True

    def state_dict(self) -> dict[str, int]:
        """How many batches of which epoch have been trained on.

        Lightning fetches one batch ahead only when the loader has no length (to detect the last batch); then the
        batch drawn last is not counted until the epoch is exhausted.
        """
        yielded, exhausted = self._position["yielded"], self._position["exhausted"]
        try:
            len(self)
            ahead = 0
        except TypeError:
            ahead = 1
        done = yielded if exhausted else max(0, yielded - ahead)
        return {"epoch": int(self._position["epoch"]), "batches": int(done)}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Skip the saved number of batches when the saved epoch is iterated next."""
        self._resume = {"epoch": int(state_dict["epoch"]), "batches": int(state_dict["batches"])}
