"""Generates rollouts when the module needs them and hands them over."""

from __future__ import annotations

import tempfile
import warnings
from typing import Any, Literal

import lightning as L
from typing_extensions import override

from lightning_cort.callbacks.sandbox import SandboxCallback
from lightning_cort.formats.base import CodeFormat
from lightning_cort.metrics import no_answer_diagnosis, rollout_statistics
from lightning_cort.rollout.backends.hf import HFBackend
from lightning_cort.rollout.engine import RolloutConfig, RolloutEngine
from lightning_cort.trajectory import Trajectory


class RolloutCallback(L.Callback):
    """At the start of every training step, samples ``group_size`` trajectories per prompt row of the batch with the
    current policy and calls ``pl_module.receive_rollouts(trajectories)`` (RL). A module with a ``rollout_engine``
    attribute instead of ``receive_rollouts`` (RFT) gets the engine and samples once per round itself.

    The batch is a list of rows with a ``prompt`` (the user message). The sandbox comes from the Trainer's
    :class:`SandboxCallback`; generation uses the module's live weights (HF backend), so no weight sync is needed.

    Logs ``rollout/tokens_per_s``, ``rollout/interpreter_time_share``, ``rollout/calls_per_trajectory``,
    ``rollout/truncation_rate``, ``rollout/answer_rate`` and ``rollout/infrastructure_failure_rate``, and warns once
    when a step's responses have no final answer at all (the reward then carries no signal, e.g. a thinking model
    that never closes its thinking within the token limit).

    Backends: ``hf`` generates with the module's live model (nothing to sync); ``vllm`` starts a colocated vLLM
    engine from an export of the policy when the fit starts and syncs the weights into it before every step that
    follows an optimizer step (LoRA merged on the fly, FSDP2 gathered); the engine checks the policy version, so
    sampling with stale weights is an error.

    Args:
        code_format: The code format of the policy.
        config: Rollout limits and sampling.
        group_size: Trajectories per prompt (defaults to the module's ``group_size``).
        backend: ``hf`` or ``vllm``.
        vllm_kwargs: Arguments of :class:`~lightning_cort.rollout.backends.vllm.VLLMBackend` (``dtype``,
            ``gpu_memory_utilization``, ``tensor_parallel_size``, ``enable_sleep_mode``, ...).
    """

    def __init__(
        self,
        code_format: CodeFormat,
        config: RolloutConfig | None = None,
        group_size: int | None = None,
        backend: Literal["hf", "vllm"] = "hf",
        vllm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if backend not in ("hf", "vllm"):
            raise ValueError(f"backend must be 'hf' or 'vllm', got {backend!r}")
        self.code_format = code_format
        self.config = config or RolloutConfig()
        self.group_size = group_size
        self.backend = backend
        self.vllm_kwargs = dict(vllm_kwargs or {})
        self.engine: RolloutEngine | None = None
        self._warned = False
        self._export_dir: tempfile.TemporaryDirectory[str] | None = None

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sandbox_cb = next((cb for cb in trainer.callbacks if isinstance(cb, SandboxCallback)), None)
        if sandbox_cb is None:
            raise RuntimeError("RolloutCallback needs a SandboxCallback in the Trainer's callbacks")
        model, tokenizer = pl_module.model, pl_module.tokenizer  # type: ignore[attr-defined]
        backend: Any = (
            HFBackend(model, tokenizer) if self.backend == "hf" else self._start_vllm(trainer, model, tokenizer)
        )
        self.engine = RolloutEngine(backend, tokenizer, self.code_format, sandbox_cb.sandbox, self.config)
        if hasattr(pl_module, "rollout_engine"):  # modules that sample per round (RFT) drive the engine themselves
            pl_module.rollout_engine = self.engine

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        assert self.engine is not None
        if not hasattr(pl_module, "receive_rollouts"):
            return  # e.g. RFTModule: it samples once per round, when its dataloader is built
        rows = list(batch)
        missing = [i for i, r in enumerate(rows) if "prompt" not in r]
        if missing:
            raise ValueError(f"rows {missing} of the batch have no 'prompt' field (the user message)")
        group = self.group_size or int(getattr(pl_module, "group_size", 1))
        self.sync(trainer, pl_module)
        was_training = pl_module.training
        pl_module.eval()
        try:
            trajectories = self.engine.generate(self.engine.encode_prompts([r["prompt"] for r in rows]), rows, n=group)
        finally:
            pl_module.train(was_training)
        self._log(pl_module, trajectories)
        self._warn_without_answers(trainer, trajectories)
        pl_module.receive_rollouts(trajectories)  # type: ignore[attr-defined]

    def sync(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Make the weights of the current optimizer step the ones that sample (a weight sync for vLLM)."""
        assert self.engine is not None
        self.engine.policy_version = trainer.global_step
        backend = self.engine.backend
        if hasattr(backend, "sync_weights") and backend.policy_version != trainer.global_step:
            backend.sync_weights(pl_module.model, trainer.global_step)  # type: ignore[attr-defined]

    def _start_vllm(self, trainer: L.Trainer, model: Any, tokenizer: Any) -> Any:
        from lightning_cort.models.policy import export_policy, is_peft_model
        from lightning_cort.rollout.backends.vllm import VLLMBackend

        self._export_dir = tempfile.TemporaryDirectory(prefix="lightning_cort_vllm_")
        export_policy(model, tokenizer, self._export_dir.name, mode="merged" if is_peft_model(model) else "full")
        backend = VLLMBackend(self._export_dir.name, tokenizer, **self.vllm_kwargs)
        backend.policy_version = trainer.global_step
        return backend

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._export_dir is not None:
            self._export_dir.cleanup()
            self._export_dir = None

    def _warn_without_answers(self, trainer: L.Trainer, trajectories: list[Trajectory]) -> None:
        """Warn (once per run) when a step's rollouts have no final answer at all: the reward then has no signal."""
        if self._warned:
            return
        diagnosis = no_answer_diagnosis([(t.response_text, t.finish_reason) for t in trajectories])
        if diagnosis is not None:
            self._warned = True
            warnings.warn(f"RL step {trainer.global_step}: {diagnosis}", stacklevel=2)

    def _log(self, pl_module: L.LightningModule, trajectories: list[Trajectory]) -> None:
        stats = rollout_statistics(trajectories)
        names = {"tool_calls_per_response": "calls_per_trajectory"}
        for key, value in stats.items():
            pl_module.log(f"rollout/{names.get(key, key)}", value, batch_size=len(trajectories))
