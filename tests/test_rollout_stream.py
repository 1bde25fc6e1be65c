"""Rollouts on a decode stream (the continuous schedule): agreement with the round-synchronous loop on a real
model, log-probs, sampling settings, sliding-window models, and reproducibility whatever the sandbox timing."""

from __future__ import annotations

import time

import pytest
import torch
from test_rollout import RowScriptedBackend, _check_provenance, _engine, _summary

from lightning_cort.formats import CoRTFormat
from lightning_cort.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingConfig
from lightning_cort.tasks import CalculatorTask, build_prompt


def test_continuous_schedule_needs_a_streaming_backend(tokenizer, sandbox):
    engine = _engine(tokenizer, RowScriptedBackend(tokenizer, {"a": []}), sandbox, schedule="continuous")
    with pytest.raises(TypeError, match=r"open_stream.*RowScriptedBackend.*schedule='async'"):
        engine.generate(engine.encode_prompts(["[a] q"]))


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("capacity", [0, 5])
def test_greedy_continuous_rollouts_with_a_real_model_equal_the_round_synchronous_ones(
    trained_policy, tokenizer, sandbox, capacity
):
    """The HF decode stream (KV cache kept across tool calls, rows paused and resumed, slots reused, the cache
    compacted) gives the trajectories of separate ``generate`` calls, token for token."""
    from lightning_cort.rollout.backends import hf

    problems = CalculatorTask(seed=0).problems("test", 8)
    rows = [p.to_row() for p in problems]
    out, streams = {}, []
    for schedule in ("rounds", "continuous"):
        backend = HFBackend(trained_policy, tokenizer, batch_size=capacity if schedule == "continuous" else 0)

        def open_stream(sampling, b=backend):  # compacts often, to exercise it
            streams.append(hf.HFDecodeStream(b, sampling, capacity=b.batch_size or None, compact_ratio=1.2))
            return streams[-1]

        backend.open_stream = open_stream
        config = RolloutConfig(
            max_calls=2, max_total_tokens=200, schedule=schedule, sampling=SamplingConfig(temperature=0, logprobs=True)
        )
        engine = RolloutEngine(backend, tokenizer, CoRTFormat(), sandbox, config)
        out[schedule] = engine.generate(engine.encode_prompts([build_prompt(p.question) for p in problems]), rows, n=2)
    assert [_summary(t, logprobs=False) for t in out["continuous"]] == [
        _summary(t, logprobs=False) for t in out["rounds"]
    ]
    for a, r in zip(out["continuous"], out["rounds"]):
        torch.testing.assert_close(a.sampling_logprobs, r.sampling_logprobs, atol=1e-4, rtol=0)
    assert sum(len(t.tool_calls) for t in out["continuous"]) >= 4
    (stream,) = streams
    assert stream.compactions >= 1 and stream.size == 0


@pytest.mark.usefixtures("one_torch_thread")
def test_sampled_logprobs_of_continuous_rollouts_equal_a_fresh_forward(trained_policy, tokenizer, sandbox):
    """Sampling (temperature 1): every model token's log-probability from the decode stream equals the policy's
    log-probability of that token given the trajectory's prompt and completion so far, so each sequence was decoded
    exactly on its own tokens (positions, masks, reused KV cache and forced interpreter output included)."""
    problems = CalculatorTask(seed=1).problems("test", 4)
    config = RolloutConfig(
        max_calls=2, max_total_tokens=160, schedule="continuous", sampling=SamplingConfig(logprobs=True)
    )
    engine = RolloutEngine(HFBackend(trained_policy, tokenizer), tokenizer, CoRTFormat(), sandbox, config)
    torch.manual_seed(0)
    trajs = engine.generate(engine.encode_prompts([build_prompt(p.question) for p in problems]), n=4)
    assert sum(len(t.tool_calls) for t in trajs) >= 2
    for t in trajs:
        _check_provenance(t, tokenizer, [[i for s in t.segments if s.kind == "model"
                                          for i in t.completion_ids[s.start : s.end].tolist()]])  # fmt: skip
        ids = torch.cat([t.prompt_ids, t.completion_ids])[None]
        with torch.no_grad():
            logits = trained_policy(input_ids=ids).logits[0, t.prompt_ids.numel() - 1 : -1].float()
        expected = torch.log_softmax(logits, dim=-1).gather(-1, t.completion_ids[:, None]).squeeze(-1)
        model = t.loss_mask.bool()
        torch.testing.assert_close(t.sampling_logprobs[model], expected[model], atol=1e-4, rtol=0)


def test_a_sliding_window_model_is_not_streamed(tokenizer, sandbox):
    """A KV cache with sliding-window layers cannot be laid out by steps: ``auto`` falls back to ``async`` (same
    greedy trajectories as ``rounds``) and ``continuous`` is a clear error."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, use_sliding_window=True, sliding_window=8, max_window_layers=0,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    backend = HFBackend(model, tokenizer)
    assert backend.streamable is False
    out = {}
    for schedule in ("rounds", "auto"):
        engine = _engine(
            tokenizer, backend, sandbox, max_total_tokens=16, schedule=schedule, sampling=SamplingConfig(temperature=0)
        )
        out[schedule] = [t.completion_ids.tolist() for t in engine.generate(engine.encode_prompts(["hi", "yo"]))]
    assert out["auto"] == out["rounds"]
    engine = _engine(tokenizer, backend, sandbox, max_total_tokens=16, schedule="continuous")
    with pytest.raises(ValueError, match=r"not full attention.*schedule='async'"):
        engine.generate(engine.encode_prompts(["hi"]))


def test_stream_sampling_applies_temperature_top_k_and_top_p_like_generate():
    """The decode stream's sampler: top-k and top-p restrict the support exactly as ``generate``'s warpers do
    (temperature first), and the reported log-probabilities are those of ``logits / temperature``, unfiltered."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from lightning_cort.rollout.backends.hf import _sample

    logits = torch.tensor([[2.0, 1.5, 1.0, 0.2, -1.0, -3.0]]).repeat(4000, 1)
    for cfg in (
        SamplingConfig(temperature=0.7, top_k=3, logprobs=True),
        SamplingConfig(temperature=1.3, top_p=0.6, logprobs=True),
        SamplingConfig(temperature=1.0, top_k=4, top_p=0.9, logprobs=True),
    ):
        torch.manual_seed(0)
        tokens, logprobs = _sample(logits, cfg)
        scores = TemperatureLogitsWarper(cfg.temperature)(None, logits[:1].clone())
        if cfg.top_k:
            scores = TopKLogitsWarper(cfg.top_k)(None, scores)
        if cfg.top_p < 1:
            scores = TopPLogitsWarper(cfg.top_p)(None, scores)
        support = set(torch.isfinite(scores[0]).nonzero().flatten().tolist())
        assert set(tokens.tolist()) == support  # every allowed token drawn at least once in 4000, no other
        expected = torch.log_softmax(logits / cfg.temperature, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
        torch.testing.assert_close(logprobs, expected)
        probs = torch.softmax(scores[0], dim=-1)
        freq = torch.bincount(tokens, minlength=logits.shape[1]).float() / len(tokens)
        torch.testing.assert_close(freq, probs, atol=0.03, rtol=0)
    greedy, lp = _sample(logits[:2], SamplingConfig(temperature=0, logprobs=True))
    assert greedy.tolist() == [0, 0]
    torch.testing.assert_close(lp, torch.log_softmax(logits[:2], dim=-1)[:, 0])


class _JitterySandbox:
    """A sandbox whose executions take random wall time: trajectories pause and resume in different orders."""

    def __init__(self, inner, seed: int) -> None:
        import random

        self.inner, self.rng = inner, random.Random(seed)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run_many(self, *args, **kwargs):
        time.sleep(self.rng.uniform(0.0, 0.05))
        return self.inner.run_many(*args, **kwargs)


def test_sampled_continuous_rollouts_are_reproducible_from_the_seed_whatever_the_sandbox_timing(
    trained_policy, tokenizer, sandbox
):
    """Every sequence of the decode stream samples from its own random stream, seeded from the global one when it
    joins, so what it samples does not depend on which others share its steps: the same seed gives the same
    trajectories however long each execution takes (what exact RL resume rests on)."""
    config = RolloutConfig(
        max_calls=2, max_total_tokens=160, schedule="continuous", sampling=SamplingConfig(temperature=1.0)
    )
    rows = [
        {"prompt": build_prompt(p.question), "answer": p.answer} for p in CalculatorTask(seed=5).problems("test", 3)
    ]
    runs = []
    for jitter_seed in (0, 1):
        engine = RolloutEngine(
            HFBackend(trained_policy, tokenizer), tokenizer, CoRTFormat(), _JitterySandbox(sandbox, jitter_seed), config
        )
        torch.manual_seed(0)
        with torch.no_grad():
            out = engine.generate(engine.encode_prompts([r["prompt"] for r in rows]), rows, n=4)
        runs.append([t.completion_ids.tolist() for t in out])
        assert sum(len(t.tool_calls) for t in out) > 0  # the sandbox did run, with its delays
    assert runs[0] == runs[1]
