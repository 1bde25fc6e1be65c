"""Rejection fine-tuning (RFT) and expert iteration: sample with the current policy, keep what passes the filters,
train on it with the SFT loss."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_cort.data import ListDataset
from lightning_cort.filters import (
    CORT_FILTERS,
    TrajectoryFilter,
    code_decision_weights,
    correct,
    select_trajectories,
)
from lightning_cort.modules.base import RolloutModule
from lightning_cort.modules.sft import SFTModule, SFTSettings
from lightning_cort.trajectory import Trajectory, TrajectoryBatch, collate_trajectories

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class RFTSettings(SFTSettings):
    """What :class:`RFTModule` samples, keeps and trains with: the SFT settings (optimizer, schedule, masking) and
    the round's (the recipe's ``rft`` section adds how many rounds and prompts).

    Attributes:
        samples_per_prompt: Trajectories sampled per problem (``k``).
        filters: ``cort`` (correct, no delayed computation, no result distrust) or ``correct``.
        per_prompt: Most trajectories kept per problem (0: all that pass).
        shortest: Keep the shortest passing trajectories first.
        code_decision_weighting: Weight kept samples by the value of their decision to use code (AutoCode).
        temperature: Sampling temperature of the rounds.
        top_p: Nucleus mass of the rounds.
        epochs_per_round: Passes over each round's kept data.
        batch_size: Training batch size.
        allow_empty_rounds: A first round that keeps nothing ends the run with the policy unchanged (with a warning)
            instead of an error, for studies that report how many samples RFT kept.
    """

    lr: float = 1e-4
    warmup_ratio: float = 0.0
    lr_schedule: Literal["cosine", "constant"] = "constant"
    samples_per_prompt: int = 4
    filters: Literal["cort", "correct"] = "cort"
    per_prompt: int = 1
    shortest: bool = True
    code_decision_weighting: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    epochs_per_round: int = 1
    batch_size: int = 16
    allow_empty_rounds: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("samples_per_prompt", "batch_size", "epochs_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.per_prompt < 0:
            raise ValueError(f"per_prompt must be >= 0 (0: keep all that pass), got {self.per_prompt}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (RFT keeps sampled trajectories), got {self.temperature}")


class RFTModule(SFTModule, RolloutModule):
    """Rejection fine-tuning: every training epoch is one round of *sample → filter → train*.

    At the start of each round (when Lightning builds the epoch's dataloader) the module samples
    ``config.samples_per_prompt`` trajectories per prompt with the current policy through the sampler that
    :class:`~lightning_cort.callbacks.RolloutCallback` connects (with a
    :class:`~lightning_cort.callbacks.SandboxCallback`), keeps those passing every filter (``cort``: correct answer,
    no delayed computation, no result distrust, see :data:`lightning_cort.filters.CORT_FILTERS`), at most
    ``per_prompt`` per prompt (shortest first when ``shortest``), and trains on them with the SFT loss, interpreter
    output masked. One round is a classic offline RFT; several rounds (``max_epochs > 1`` with
    ``reload_dataloaders_every_n_epochs=1``) are expert iteration. ``code_decision_weighting`` weights each kept
    sample by the value of its decision to use code (AutoCode; :func:`~lightning_cort.filters.code_decision_weights`).

    Under DDP/FSDP each rank samples its share of the prompts; the kept trajectories are gathered on every rank, so
    the distributed sampler shards one common dataset.

    Args:
        model: The policy.
        tokenizer: Its tokenizer.
        prompts: Dataset rows, each with a ``prompt`` (the user message) and what the filters need (``answer``).
        config: The round and training settings (the recipe passes its ``rft`` section whole).
        filters: Custom filters ``(trajectory, row) -> bool``, all of which must pass, instead of
            ``config.filters``.
        seed: Shuffling seed of the kept data.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        prompts: Sequence[Mapping[str, Any]],
        config: RFTSettings | None = None,
        *,
        filters: Sequence[TrajectoryFilter] | None = None,
        seed: int = 0,
    ) -> None:
        config = config if config is not None else RFTSettings()
        super().__init__(model, tokenizer, config)
        self.config: RFTSettings = config
        rows = list(prompts)
        if not rows:
            raise ValueError("RFTModule: prompts is empty")
        bad = [i for i, r in enumerate(rows) if not isinstance(r, Mapping) or "prompt" not in r]
        if bad:
            raise ValueError(f"RFTModule: rows {bad[:10]} have no 'prompt' field (the user message)")
        self.prompts = rows
        if filters is None:
            filters = CORT_FILTERS if config.filters == "cort" else (correct,)
        self.filters = tuple(filters)
        self.seed = seed
        #: Statistics of each round: sampled, kept, prompts_with_data, accuracy.
        self.rounds: list[dict[str, float]] = []
        #: The kept trajectories of the current round (on this rank, after gathering).
        self.kept: list[Trajectory] = []
        self._previous: list[tuple[Trajectory, float]] = []

    @property
    @override
    def samples_per_prompt(self) -> int:
        return self.config.samples_per_prompt

    @override
    def setup(self, stage: str) -> None:
        RolloutModule.setup(self, stage)
        if stage != "fit":
            return
        trainer = self.trainer
        if (trainer.max_epochs or 1) > 1 and trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                "RFTModule samples a new round every epoch: give the Trainer reload_dataloaders_every_n_epochs=1 "
                f"(got {trainer.reload_dataloaders_every_n_epochs}) or max_epochs=1 for a single offline round"
            )

    # -- one round -------------------------------------------------------------------------------------------------
    def sample_round(self) -> list[tuple[Trajectory, float]]:
        """Sample, filter and weight one round on this rank's share of the prompts; returns ``(trajectory,
        weight)`` pairs gathered from every rank."""
        if self.rollout_sampler is None:
            raise RuntimeError(
                "RFTModule samples through the rollout sampler: add lightning_cort.callbacks.RolloutCallback and "
                "SandboxCallback to the Trainer's callbacks"
            )
        rank, world = self.global_rank, self.trainer.world_size if self._trainer is not None else 1
        rows = self.prompts[rank::world]
        sampler = self.rollout_sampler
        sampling = replace(sampler.sampling, temperature=self.config.temperature, top_p=self.config.top_p)
        samples = sampler.sample(self.model, rows, self.samples_per_prompt, self.trainer.global_step, sampling=sampling)
        k = self.samples_per_prompt
        groups = [samples[i * k : (i + 1) * k] for i in range(len(rows))]
        c = self.config
        kept_groups = select_trajectories(groups, self.filters, per_prompt=c.per_prompt or None, shortest=c.shortest)
        pairs: list[tuple[Trajectory, float]] = []
        n_correct = 0
        for group, kept in zip(groups, kept_groups):
            successes = [self.is_correct(t) if "answer" in t.row else False for t in group]
            n_correct += sum(successes)
            weights = code_decision_weights(group, successes) if c.code_decision_weighting else [1.0] * len(group)
            by_id = {id(t): w for t, w in zip(group, weights)}
            pairs.extend((t, by_id[id(t)]) for t in kept)
        local = {
            "sampled": float(len(samples)),
            "kept": float(len(pairs)),
            "prompts_with_data": float(sum(1 for kept in kept_groups if kept)),
            "correct": float(n_correct),
        }
        pairs, totals = _gather(pairs, local, world)
        stats = {
            "sampled": totals["sampled"],
            "kept": totals["kept"],
            "prompts_with_data": totals["prompts_with_data"],
            "accuracy": totals["correct"] / max(1.0, totals["sampled"]),
        }
        self.rounds.append(stats)
        return pairs

    @override
    def train_dataloader(self) -> DataLoader:
        pairs = self.sample_round()
        stats = self.rounds[-1]
        if not pairs and self._previous:
            rank_zero_warn(
                f"RFT round {len(self.rounds)}: none of {int(stats['sampled'])} sampled trajectories passed the "
                "filters; training on the previous round's data again"
            )
            pairs = self._previous
        if not pairs and self.config.allow_empty_rounds:
            rank_zero_warn(
                f"RFT round {len(self.rounds)}: none of {int(stats['sampled'])} sampled trajectories passed the "
                "filters; nothing to train on this round"
            )
        elif not pairs:
            raise RuntimeError(
                f"round {len(self.rounds)}: none of {int(stats['sampled'])} sampled trajectories passed the filters "
                f"(accuracy {stats['accuracy']:.3f}); warm the policy up with SFT first, sample more per prompt, or "
                "relax the filters"
            )
        self.kept = [t for t, _ in pairs]
        self._previous = pairs
        items = []
        rng = random.Random(self.seed + len(self.rounds))
        for _ in range(self.config.epochs_per_round):
            shuffled = list(pairs)
            rng.shuffle(shuffled)
            items.extend(shuffled)
        pad = self.tokenizer.pad_token_id
        return DataLoader(
            ListDataset(items), batch_size=self.config.batch_size, shuffle=False, collate_fn=lambda b: _collate(b, pad)
        )

    @override
    def on_train_epoch_start(self) -> None:
        if self.rounds:
            for key, value in self.rounds[-1].items():
                self.log(f"rft/{key}", value, on_step=False, on_epoch=True, batch_size=1)


def _collate(items: list[tuple[Trajectory, float]], pad_token_id: int) -> tuple[TrajectoryBatch, torch.Tensor]:
    trajectories = [t for t, _ in items]
    weights = torch.tensor([w for _, w in items], dtype=torch.float32)  # [B]
    return collate_trajectories(trajectories, pad_token_id), weights


def _gather(
    pairs: list[tuple[Trajectory, float]], stats: dict[str, float], world: int
) -> tuple[list[tuple[Trajectory, float]], dict[str, float]]:
    """All ranks' kept pairs and summed statistics (identity on one process)."""
    import torch.distributed as dist

    if world <= 1 or not (dist.is_available() and dist.is_initialized()):
        return pairs, stats
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (pairs, stats))
    all_pairs = [p for rank_pairs, _ in gathered for p in rank_pairs]
    totals = {k: sum(s[k] for _, s in gathered) for k in stats}
    return all_pairs, totals
