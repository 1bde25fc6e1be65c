"""The rollout engine: the multi-turn loop, limits, and exact token provenance."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from lightning_cort.formats import CORT_BUDGET_NOTICE, CoRTFormat
from lightning_cort.rollout import GenerationOutput, HFBackend, RolloutConfig, RolloutEngine, SamplingConfig
from lightning_cort.tasks import CalculatorTask, build_prompt
from lightning_cort.trajectory import collate_trajectories


class ScriptedBackend:
    """Returns pre-written continuations, one per call (for a single trajectory), as a model would sample them."""

    def __init__(self, tokenizer, script: list[tuple[str, str]]) -> None:
        self.tokenizer = tokenizer
        self.script = list(script)
        self.sampled: list[list[int]] = []
        self.stops: list[tuple[str, ...]] = []

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop_strings: Sequence[str]):
        assert len(prompts) == 1
        text, finish = self.script.pop(0)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if finish == "eos":
            ids.append(self.tokenizer.eos_token_id)
        self.sampled.append(ids)
        self.stops.append(tuple(stop_strings))
        return [GenerationOutput(ids, [-0.5] * len(ids), finish)]


class RecordingBackend(HFBackend):
    """The real HF backend, recording exactly what it sampled."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sampled: list[list[int]] = []

    def generate(self, prompts, sampling, stop_strings):
        outs = super().generate(prompts, sampling, stop_strings)
        self.sampled.extend(o.token_ids for o in outs)
        return outs


def _check_provenance(traj, tokenizer, sampled: list[list[int]]) -> None:
    traj.validate()
    ids = traj.completion_ids.tolist()
    model_ids = [i for s in traj.segments if s.kind == "model" for i in ids[s.start : s.end]]
    assert model_ids == [i for chunk in sampled for i in chunk]  # every unmasked token was sampled, in order
    tool_segments = [s for s in traj.segments if s.kind == "tool"]
    assert len(tool_segments) == len(traj.tool_calls)
    for seg, call in zip(tool_segments, traj.tool_calls):
        assert tokenizer.decode(ids[seg.start : seg.end]) == call.rendered  # masked span = rendered output, exactly
        assert traj.loss_mask[seg.start : seg.end].sum() == 0
    for seg in traj.segments:
        if seg.kind == "model":
            assert bool(traj.loss_mask[seg.start : seg.end].all())


def _engine(tokenizer, backend, sandbox, **cfg):
    return RolloutEngine(backend, tokenizer, CoRTFormat(), sandbox, RolloutConfig(**cfg))


def test_scripted_loop_executes_and_appends_masked_output(tokenizer, sandbox):
    script = [
        ("Let me compute.\n```python\nx = 6 * 7\nprint(x)\n```\n", "stop"),
        ("So x is 42.\n```python\nprint(x + 1)\n```\n", "stop"),
        ("</think>\n\n\\boxed{43}", "eos"),
    ]
    backend = ScriptedBackend(tokenizer, script)
    engine = _engine(tokenizer, backend, sandbox, max_calls=4)
    (traj,) = engine.generate(engine.encode_prompts(["What is 6 * 7 + 1?"]))
    _check_provenance(traj, tokenizer, backend.sampled)
    assert [c.result.stdout for c in traj.tool_calls] == ["42\n", "43\n"]  # the session kept x
    assert traj.finish_reason == "eos"
    assert traj.completion_text.endswith("\\boxed{43}<｜end▁of▁sentence｜>")
    assert "```output\n42\n```\n" in traj.completion_text


def test_budget_notice_and_final_round_without_stop(tokenizer, sandbox):
    script = [
        ("```python\nprint(1)\n```\n", "stop"),
        ("```python\nprint(2)\n```\n", "stop"),
        ("I cannot run code now.</think>\\boxed{2}", "eos"),
    ]
    backend = ScriptedBackend(tokenizer, script)
    engine = _engine(tokenizer, backend, sandbox, max_calls=2)
    (traj,) = engine.generate(engine.encode_prompts(["q"]))
    _check_provenance(traj, tokenizer, backend.sampled)
    assert CORT_BUDGET_NOTICE not in traj.tool_calls[0].rendered
    assert traj.tool_calls[1].rendered == "```output\n2" + CORT_BUDGET_NOTICE + "\n```\n"
    assert backend.stops[0] and backend.stops[1] and backend.stops[2] == ()  # last round: no code stop


def test_stop_on_a_non_code_block_keeps_generating(tokenizer, sandbox):
    script = [
        ("Here is a table:\n```\na b\n```\n", "stop"),  # the closing fence fired the stop, but no python call
        ("Now code:\n```python\nprint(5)\n```\n", "stop"),
        ("done</think>\\boxed{5}", "eos"),
    ]
    backend = ScriptedBackend(tokenizer, script)
    engine = _engine(tokenizer, backend, sandbox, max_calls=3)
    (traj,) = engine.generate(engine.encode_prompts(["q"]))
    _check_provenance(traj, tokenizer, backend.sampled)
    assert len(traj.tool_calls) == 1 and traj.tool_calls[0].code == "print(5)"
    assert [s.kind for s in traj.segments] == ["model", "tool", "model"]


def test_output_that_does_not_fit_the_budget_is_dropped(tokenizer, sandbox):
    script = [("```python\nprint('y' * 300)\n```\n", "stop")]
    backend = ScriptedBackend(tokenizer, script)
    engine = _engine(tokenizer, backend, sandbox, max_calls=3, max_total_tokens=60)
    (traj,) = engine.generate(engine.encode_prompts(["q"]))
    assert traj.finish_reason == "budget" and not traj.tool_calls
    assert traj.completion_ids.numel() <= 60 and bool(traj.loss_mask.all())


def test_failing_code_is_reported_to_the_model(tokenizer, sandbox):
    backend = ScriptedBackend(tokenizer, [("```python\n1/0\n```\n", "stop"), ("oops</think>", "eos")])
    engine = _engine(tokenizer, backend, sandbox)
    (traj,) = engine.generate(engine.encode_prompts(["q"]))
    call = traj.tool_calls[0]
    assert call.result.status == "error"
    assert call.rendered.startswith("```output\nTraceback") and "ZeroDivisionError" in call.rendered


@pytest.mark.slow
def test_provenance_with_a_real_model(trained_policy, tokenizer, sandbox):
    """Sampling with a tiny trained policy: ids are exactly the sampled ids plus separately encoded outputs."""
    problems = CalculatorTask(seed=0).problems("test", 6)
    total_calls = 0
    for i, p in enumerate(problems):
        backend = RecordingBackend(trained_policy, tokenizer)
        sampling = SamplingConfig(temperature=0.0 if i % 2 == 0 else 1.0, logprobs=True)
        engine = RolloutEngine(
            backend,
            tokenizer,
            CoRTFormat(),
            sandbox,
            RolloutConfig(max_calls=2, max_total_tokens=200, sampling=sampling),
        )
        torch.manual_seed(i)
        (traj,) = engine.generate(engine.encode_prompts([build_prompt(p.question)]), [p.to_row()])
        _check_provenance(traj, tokenizer, backend.sampled)
        assert traj.sampling_logprobs is not None and traj.sampling_logprobs.shape == traj.completion_ids.shape
        assert bool((traj.sampling_logprobs[traj.loss_mask == 1] <= 0).all())
        total_calls += len(traj.tool_calls)
    assert total_calls >= 3  # the policy does write code calls


@pytest.mark.slow
def test_batched_generation_groups_and_collates(trained_policy, tokenizer, sandbox):
    problems = CalculatorTask(seed=0).problems("test", 3)
    engine = RolloutEngine(
        HFBackend(trained_policy, tokenizer),
        tokenizer,
        CoRTFormat(),
        sandbox,
        RolloutConfig(max_calls=2, max_total_tokens=200, sampling=SamplingConfig(temperature=1.0)),
    )
    rows = [p.to_row() for p in problems]
    trajs = engine.generate(engine.encode_prompts([build_prompt(p.question) for p in problems]), rows, n=4)
    assert [t.group for t in trajs] == [0] * 4 + [1] * 4 + [2] * 4
    assert all(t.row["id"] == rows[t.group]["id"] for t in trajs)
    for t in trajs:
        t.validate()
    batch = collate_trajectories(trajs, tokenizer.pad_token_id)
    assert batch.completion_ids.shape[0] == 12 and batch.prompt_ids.shape[0] == 12
    for i, t in enumerate(trajs):
        n = t.completion_ids.numel()
        assert torch.equal(batch.completion_ids[i, :n], t.completion_ids)
        assert torch.equal(batch.loss_mask[i, :n], t.loss_mask) and batch.loss_mask[i, n:].sum() == 0
        assert torch.equal(batch.prompt_ids[i, -t.prompt_ids.numel() :], t.prompt_ids)


def test_a_non_call_stop_at_the_budget_ends_the_trajectory(tokenizer, sandbox):
    text = "```\na\n```\n"
    n = len(tokenizer.encode(text, add_special_tokens=False))
    backend = ScriptedBackend(tokenizer, [(text, "stop")])
    engine = _engine(tokenizer, backend, sandbox, max_calls=2, max_total_tokens=n)
    (traj,) = engine.generate(engine.encode_prompts(["q"]))
    assert traj.finish_reason == "length" and traj.completion_ids.numel() == n
