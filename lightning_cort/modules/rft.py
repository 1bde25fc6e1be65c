"""Rejection fine-tuning (RFT) and expert iteration: sample with the current policy, keep what passes the filters,
train on it with the SFT loss."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_cort.data import ListDataset
from lightning_cort.filters import TrajectoryFilter, code_decision_weights, correct, select_trajectories
from lightning_cort.modules.base import RolloutModule
from lightning_cort.modules.sft import SFTModule
from lightning_cort.trajectory import Trajectory, TrajectoryBatch, collate_trajectories

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from lightning_cort.rollout.backends.base import SamplingConfig


class RFTModule(SFTModule, RolloutModule):
    """Rejection fine-tuning: every training epoch is one round of *sample → filter → train*.

    At the start of each round (when Lightning builds the epoch's dataloader) the module samples
    ``samples_per_prompt`` trajectories per prompt with the current policy through the sampler that
    :class:`~lightning_cort.callbacks.RolloutCallback` connects (with a
    :class:`~lightning_cort.callbacks.SandboxCallback`),
    keeps those passing every filter (by default: correct answer; CoRT adds no delayed computation and no result
    distrust, see :data:`lightning_cort.filters.CORT_FILTERS`), at most ``per_prompt`` per prompt (shortest first
    when ``shortest``), and trains on them with the SFT loss, interpreter output masked. One round is a classic
    offline RFT; several rounds (``max_epochs > 1`` with ``reload_dataloaders_every_n_epochs=1``) are expert
    iteration. ``code_decision_weighting`` weights each kept sample by the value of its decision to use code
    (AutoCode; :func:`~lightning_cort.filters.code_decision_weights`).

    Under DDP/FSDP each rank samples its share of the prompts; the kept trajectories are gathered on every rank, so
    the distributed sampler shards one common dataset.

    Args:
        model: The policy.
        tokenizer: Its tokenizer.
        prompts: Dataset rows, each with a ``prompt`` (the user message) and what the filters need (``answer``).
        samples_per_prompt: ``k``.
        filters: Callables ``(trajectory, row) -> bool``; all must pass.
        per_prompt: Most trajectories kept per prompt (``None``: all that pass).
        shortest: Prefer the shortest passing trajectories.
        code_decision_weighting: AutoCode-style per-sample weights.
        batch_size: Training batch size.
        epochs_per_round: Passes over each round's kept data.
        sampling: Sampling settings of the rounds (default: the rollout callback's).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        mask_tool_output: Exclude interpreter output from the loss.
        warmup_steps: Linear warm-up steps.
        lr_schedule: ``constant`` or ``cosine``.
        min_lr_ratio: Floor of the cosine schedule.
        seed: Shuffling seed of the kept data.
        allow_empty_rounds: When a round keeps nothing and there is no earlier round to reuse, train on nothing
            (with a warning) instead of raising, for studies that report how many samples RFT kept. Lightning ends
            the fit at an epoch without batches, so no further round is sampled and the policy is unchanged.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        prompts: Sequence[Mapping[str, Any]],
        samples_per_prompt: int = 4,
        filters: Sequence[TrajectoryFilter] = (correct,),
        per_prompt: int | None = 1,
        shortest: bool = True,
        code_decision_weighting: bool = False,
        batch_size: int = 8,
        epochs_per_round: int = 1,
        sampling: SamplingConfig | None = None,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        mask_tool_output: bool = True,
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        min_lr_ratio: float = 0.05,
        seed: int = 0,
        allow_empty_rounds: bool = False,
    ) -> None:
        super().__init__(
            model,
            tokenizer,
            lr=lr,
            weight_decay=weight_decay,
            mask_tool_output=mask_tool_output,
            warmup_steps=warmup_steps,
            lr_schedule=lr_schedule,
            min_lr_ratio=min_lr_ratio,
        )
        errors = []
        rows = list(prompts)
        if not rows:
            errors.append("prompts is empty")
        bad = [i for i, r in enumerate(rows) if not isinstance(r, Mapping) or "prompt" not in r]
        if bad:
            errors.append(f"rows {bad[:10]} have no 'prompt' field (the user message)")
        if samples_per_prompt < 1 or batch_size < 1 or epochs_per_round < 1:
            errors.append("samples_per_prompt, batch_size and epochs_per_round must be >= 1")
        if per_prompt is not None and per_prompt < 1:
            errors.append(f"per_prompt must be >= 1 or None, got {per_prompt}")
        if errors:
            raise ValueError("invalid RFTModule arguments: " + "; ".join(errors))
        self.prompts = rows
        self._samples_per_prompt = samples_per_prompt
        self.filters = tuple(filters)
        self.per_prompt = per_prompt
        self.shortest = shortest
        self.code_decision_weighting = code_decision_weighting
        self.batch_size = batch_size
        self.epochs_per_round = epochs_per_round
        self.sampling = sampling
        self.seed = seed
        self.allow_empty_rounds = allow_empty_rounds
        #: Statistics of each round: sampled, kept, prompts_with_data, accuracy.
        self.rounds: list[dict[str, float]] = []
        #: The kept trajectories of the current round (on this rank, after gathering).
        self.kept: list[Trajectory] = []
        self._previous: list[tuple[Trajectory, float]] = []

    @property
    @override
    def samples_per_prompt(self) -> int:
        return self._samples_per_prompt

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
        samples = self.rollout_sampler.sample(
            self.model, rows, self.samples_per_prompt, self.trainer.global_step, sampling=self.sampling
        )
        k = self.samples_per_prompt
        groups = [samples[i * k : (i + 1) * k] for i in range(len(rows))]
        kept_groups = select_trajectories(groups, self.filters, per_prompt=self.per_prompt, shortest=self.shortest)
        pairs: list[tuple[Trajectory, float]] = []
        n_correct = 0
        for group, kept in zip(groups, kept_groups):
            successes = [self.is_correct(t) if "answer" in t.row else False for t in group]
            n_correct += sum(successes)
            weights = code_decision_weights(group, successes) if self.code_decision_weighting else [1.0] * len(group)
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
        if not pairs and self.allow_empty_rounds:
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
        for _ in range(self.epochs_per_round):
            shuffled = list(pairs)
            rng.shuffle(shuffled)
            items.extend(shuffled)
        pad = self.tokenizer.pad_token_id
        return DataLoader(
            ListDataset(items), batch_size=self.batch_size, shuffle=False, collate_fn=lambda b: _collate(b, pad)
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
