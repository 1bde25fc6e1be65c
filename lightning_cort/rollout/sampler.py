"""The seam between rollouts and training: the batch of an RL step and the sampler that fills it.

The dataloader of an RL run yields :class:`RolloutBatch` objects holding prompt rows only.
:class:`~lightning_cort.callbacks.RolloutCallback` fills each batch's ``trajectories`` (and the temperature they were
sampled at) just before Lightning hands the same batch to ``training_step``, so everything a step trains on arrives in
its argument. Modules that sample on their own schedule (RFT samples once per round) call the same
:class:`RolloutSampler`, which the callback connects to every :class:`~lightning_cort.modules.base.RolloutModule`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lightning_cort.rollout.backends.base import SamplingConfig

if TYPE_CHECKING:
    import torch

    from lightning_cort.rollout.engine import RolloutEngine
    from lightning_cort.trajectory import Trajectory

#: ``(model, version)``: load the weights of optimizer step ``version`` into the generation backend.
WeightSync = Callable[["torch.nn.Module", int], None]


@dataclass
class RolloutBatch:
    """The batch of one RL step.

    Attributes:
        rows: Dataset rows, each with a ``prompt`` (the user message) and what the reward needs (``answer``).
        trajectories: ``samples per prompt × len(rows)`` trajectories grouped by prompt, filled by the rollout
            callback; ``None`` until then.
        temperature: The sampling temperature of ``trajectories`` (training log-probs are computed at it).
        policy_version: The optimizer step whose weights sampled them.
        reserve: Further prompt rows that dynamic sampling draws from, ``len(rows)`` at a time, when groups are
            dropped (:func:`sample_informative_groups`); empty without it.
    """

    rows: list[dict[str, Any]]
    trajectories: list[Trajectory] | None = None
    temperature: float = 1.0
    policy_version: int | None = None
    reserve: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


def collate_prompts(rows: Sequence[Mapping[str, Any]], prompts: int | None = None) -> RolloutBatch:
    """``collate_fn`` of an RL dataloader: rows (each with a ``prompt``) into a :class:`RolloutBatch`. With
    ``prompts`` (``functools.partial(collate_prompts, prompts=P)``), the first ``P`` rows are the step's prompts and
    the rest its reserve for dynamic sampling."""
    out = [dict(r) for r in rows]
    missing = [i for i, r in enumerate(out) if "prompt" not in r]
    if missing:
        raise ValueError(f"rows {missing[:10]} of the batch have no 'prompt' field (the user message)")
    if prompts is None:
        return RolloutBatch(out)
    return RolloutBatch(out[:prompts], reserve=out[prompts:])


class RolloutSampler:
    """Samples trajectories with the current weights: syncs them into the backend when it holds a copy (vLLM; the
    only weight-sync path of the toolkit), switches the policy to eval mode, generates, and switches it back.

    A sampler can be made before its engine exists (the rollout callback connects it to the module at setup and
    starts it when the fit starts, once the model is configured).

    Args:
        engine: The rollout engine (or later, :meth:`start`).
        sync: Loads a policy's weights into the engine's backend (``None`` when the backend generates with the
            trained model itself, as :class:`~lightning_cort.rollout.HFBackend` does).
        synced_version: The version the backend already holds (e.g. the weights it was started from).
    """

    def __init__(
        self, engine: RolloutEngine | None = None, sync: WeightSync | None = None, synced_version: int | None = None
    ) -> None:
        self._engine = engine
        self.sync = sync
        self._synced = synced_version

    def start(self, engine: RolloutEngine, sync: WeightSync | None = None, synced_version: int | None = None) -> None:
        """Give the sampler its engine (and how to sync weights into its backend)."""
        self._engine, self.sync, self._synced = engine, sync, synced_version

    @property
    def engine(self) -> RolloutEngine:
        """The rollout engine."""
        if self._engine is None:
            raise RuntimeError("the rollout sampler has no engine yet: RolloutCallback starts it when the fit starts")
        return self._engine

    @property
    def sampling(self) -> SamplingConfig:
        """The engine's default sampling (the training-time sampling of the run)."""
        return self.engine.config.sampling

    def sample(
        self,
        policy: torch.nn.Module,
        rows: Sequence[Mapping[str, Any]],
        n: int,
        version: int,
        sampling: SamplingConfig | None = None,
    ) -> list[Trajectory]:
        """``n`` trajectories per row, grouped by row, sampled by the weights of optimizer step ``version``.

        Args:
            policy: The trained policy (synced into the backend first when the backend keeps its own copy).
            rows: Rows with a ``prompt``.
            n: Samples per prompt.
            version: The optimizer step of ``policy``'s weights.
            sampling: Overrides the engine's sampling.
        """
        engine = self.engine
        engine.policy_version = version
        if self.sync is not None and self._synced != version:
            self.sync(policy, version)
            self._synced = version
        was_training = policy.training
        policy.eval()
        try:
            prompts = engine.encode_prompts([r["prompt"] for r in rows])
            return engine.generate(prompts, rows, n=n, sampling=sampling)
        finally:
            policy.train(was_training)

    def fill(self, batch: RolloutBatch, policy: torch.nn.Module, n: int, version: int) -> None:
        """Sample ``n`` trajectories per row of ``batch`` into it (with the temperature they were sampled at)."""
        batch.trajectories = self.sample(policy, batch.rows, n, version)
        batch.temperature = self.sampling.temperature
        batch.policy_version = version


def sample_informative_groups(
    sampler: RolloutSampler,
    policy: torch.nn.Module,
    batch: RolloutBatch,
    rewards: torch.Tensor,
    score: Callable[[Sequence[Trajectory]], torch.Tensor],
    *,
    n: int,
    version: int,
    max_rounds: int,
) -> tuple[list[Trajectory], torch.Tensor, dict[str, float]]:
    """DAPO's dynamic sampling (Yu et al., 2025): drop the groups whose rewards are all equal (their advantages are 0,
    so they carry no gradient), and sample groups for the batch's reserve prompts, ``len(batch.rows)`` at a time,
    until ``len(batch.rows)`` groups are kept or ``max_rounds`` further rounds are spent. Extra kept groups are cut,
    as DAPO does.

    Args:
        sampler: Samples the further rounds (with the current weights).
        policy: The trained policy.
        batch: The step's batch, its first round sampled (``trajectories``, grouped by row).
        rewards: ``[len(trajectories)]`` the first round's rewards.
        score: Rewards of further trajectories.
        n: Trajectories per prompt.
        version: The optimizer step of ``policy``'s weights.
        max_rounds: Further sampling rounds at most.

    Returns:
        ``(trajectories, rewards, stats)``: the kept groups (regrouped ``0, 1, ...``) and their rewards, or the first
        round unchanged when no group of any round was kept (every advantage is then 0); ``stats`` counts
        ``kept_groups``, ``dropped_groups`` and further ``rounds``.
    """
    import torch

    assert batch.trajectories is not None
    wanted = len(batch.rows)
    kept: list[tuple[list[Trajectory], torch.Tensor]] = []
    dropped = rounds = 0
    trajectories, scores, reserve = batch.trajectories, rewards, list(batch.reserve)
    while True:
        for g in range(len(trajectories) // n):
            group_rewards = scores[g * n : (g + 1) * n]
            if bool((group_rewards == group_rewards[0]).all()):
                dropped += 1
            else:
                kept.append((trajectories[g * n : (g + 1) * n], group_rewards))
        if len(kept) >= wanted or rounds >= max_rounds or not reserve:
            break
        rows, reserve = reserve[:wanted], reserve[wanted:]
        trajectories = sampler.sample(policy, rows, n, version)
        scores = score(trajectories)
        rounds += 1
    stats = {"kept_groups": float(min(len(kept), wanted)), "dropped_groups": float(dropped), "rounds": float(rounds)}
    if not kept:
        return batch.trajectories, rewards, stats
    kept = kept[:wanted]
    out = [replace(t, group=i) for i, (group, _) in enumerate(kept) for t in group]
    return out, torch.cat([r for _, r in kept]), stats
