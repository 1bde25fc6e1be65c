"""Connects rollout generation to the training modules: builds the engine, and fills each step's batch."""

from __future__ import annotations

import tempfile
import warnings
from typing import Any, Literal

import lightning as L
from typing_extensions import override

from lightning_cort.callbacks.sandbox import SandboxCallback
from lightning_cort.formats.base import CodeFormat
from lightning_cort.metrics import no_answer_diagnosis, rollout_statistics
from lightning_cort.modules.base import RolloutModule
from lightning_cort.rollout.backends.hf import HFBackend
from lightning_cort.rollout.engine import RolloutConfig, RolloutEngine
from lightning_cort.rollout.sampler import RolloutBatch, RolloutSampler
from lightning_cort.trajectory import Trajectory


class RolloutCallback(L.Callback):
    """Rollouts for a :class:`~lightning_cort.modules.base.RolloutModule` (GRPO, RFT).

    At setup it connects a :class:`~lightning_cort.rollout.sampler.RolloutSampler` to the module; when the fit starts
    it builds the engine on the sandbox of ``sandbox`` (the Trainer's
    :class:`~lightning_cort.callbacks.SandboxCallback`). Before every training step whose batch is a
    :class:`~lightning_cort.rollout.sampler.RolloutBatch` (GRPO's dataloader yields them; see
    :func:`~lightning_cort.rollout.sampler.collate_prompts`) it samples the module's ``samples_per_prompt``
    trajectories per row with the current weights into that batch, which ``training_step`` then receives. RFT samples
    once per round through the same sampler.

    Logs ``rollout/tokens_per_s``, ``rollout/interpreter_time_share``, ``rollout/calls_per_trajectory``,
    ``rollout/truncation_rate``, ``rollout/answer_rate`` and ``rollout/infrastructure_failure_rate``, and warns once
    when a step's responses have no final answer at all (the reward then carries no signal, e.g. a thinking model
    that never closes its thinking within the token limit).

    Backends: ``hf`` generates with the module's live model (nothing to sync); ``vllm`` starts a colocated vLLM
    engine from an export of the policy when the fit starts, and the sampler syncs the weights into it before every
    sampling that follows an optimizer step (LoRA merged on the fly, FSDP2 gathered); the engine checks the policy
    version, so sampling with stale weights is an error.

    Args:
        code_format: The code format of the policy.
        config: Rollout limits and sampling.
        sandbox: The sandbox callback whose sandbox runs the code (also in the Trainer's callbacks).
        backend: ``hf`` or ``vllm``.
        vllm_kwargs: Arguments of :class:`~lightning_cort.rollout.backends.vllm.VLLMBackend` (``dtype``,
            ``kv_cache_memory_bytes``, ``gpu_memory_utilization``, ``tensor_parallel_size``, ...).
    """

    def __init__(
        self,
        code_format: CodeFormat,
        config: RolloutConfig | None = None,
        *,
        sandbox: SandboxCallback,
        backend: Literal["hf", "vllm"] = "hf",
        vllm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if backend not in ("hf", "vllm"):
            raise ValueError(f"backend must be 'hf' or 'vllm', got {backend!r}")
        self.code_format = code_format
        self.sandbox = sandbox
        self.config = config or RolloutConfig()
        self.backend = backend
        self.vllm_kwargs = dict(vllm_kwargs or {})
        self.sampler = RolloutSampler()
        self._warned = False
        self._export_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def engine(self) -> RolloutEngine:
        """The rollout engine (built when the fit starts)."""
        return self.sampler.engine

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(pl_module, RolloutModule):
            raise TypeError(
                "RolloutCallback serves RolloutModule subclasses (GRPOModule, RFTModule), not "
                f"{type(pl_module).__name__}"
            )
        if self.sandbox not in trainer.callbacks:
            raise RuntimeError("RolloutCallback's SandboxCallback must be in the Trainer's callbacks too")
        pl_module.connect_rollouts(self.sampler)  # started at fit start: the engine needs the configured model

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, RolloutModule)
        model, tokenizer = pl_module.model, pl_module.tokenizer
        if self.backend == "hf":
            backend: Any = HFBackend(model, tokenizer)
            sync = None
        else:
            backend = self._start_vllm(trainer, model, tokenizer)
            sync = backend.sync_weights
        engine = RolloutEngine(backend, tokenizer, self.code_format, self.sandbox.sandbox, self.config)
        self.sampler.start(engine, sync, synced_version=trainer.global_step)

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(batch, RolloutBatch) or batch.trajectories is not None:
            return  # RFT trains on its round's trajectories; a batch filled already is kept
        assert isinstance(pl_module, RolloutModule)
        self.sampler.fill(batch, pl_module.model, pl_module.samples_per_prompt, trainer.global_step)
        assert batch.trajectories is not None
        self._log(pl_module, batch.trajectories)
        self._warn_without_answers(trainer, batch.trajectories)

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
