"""The rollout engine: the multi-turn loop, limits, and exact token provenance."""

from __future__ import annotations

import threading
import time
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
        self.batches: list[int] = []  # rows per call

    def generate(self, prompts, sampling, stop_strings):
        outs = super().generate(prompts, sampling, stop_strings)
        self.sampled.extend(o.token_ids for o in outs)
        self.batches.append(len(prompts))
        return outs

    def open_stream(self, sampling):
        stream = super().open_stream(sampling)
        step = stream.step

        def recording_step():
            ended = step()
            self.sampled.extend(o.token_ids for _, o in ended)
            return ended

        stream.step = recording_step
        return stream


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
@pytest.mark.parametrize("schedule", ["async", "continuous"])
def test_provenance_with_a_real_model(trained_policy, tokenizer, sandbox, schedule):
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
            RolloutConfig(max_calls=2, max_total_tokens=200, schedule=schedule, sampling=sampling),
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


class RowScriptedBackend:
    """Scripted continuations for several trajectories batched together: each row's script is picked by a ``[key]``
    in its prompt. Records every call (start time, keys of its rows, stop strings)."""

    def __init__(self, tokenizer, scripts: dict[str, list[tuple[str, str]]], fail_on: tuple[str, int] | None = None):
        self.tokenizer = tokenizer
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.sampled: dict[str, list[list[int]]] = {k: [] for k in scripts}
        self.stops: dict[str, list[tuple[str, ...]]] = {k: [] for k in scripts}
        self.calls: list[tuple[float, list[str]]] = []
        self.fail_on = fail_on  # (key, round): raise when that row reaches that round

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop_strings: Sequence[str]):
        keys = [self._key(p) for p in prompts]
        self.calls.append((time.perf_counter(), keys))
        outs = []
        for key in keys:
            if self.fail_on == (key, len(self.sampled[key])):
                raise RuntimeError("backend failure")
            text, finish = self.scripts[key].pop(0)
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if finish == "eos":
                ids.append(self.tokenizer.eos_token_id)
            if len(ids) > sampling.max_new_tokens:
                ids, finish = ids[: sampling.max_new_tokens], "length"
            self.sampled[key].append(ids)
            self.stops[key].append(tuple(stop_strings))
            # Log-probabilities that differ per token and per round, so a mix-up between rows or rounds would show.
            outs.append(GenerationOutput(ids, [-0.01 * (k + len(self.sampled[key])) for k in range(len(ids))], finish))
        return outs

    def _key(self, prompt: Sequence[int]) -> str:
        text = self.tokenizer.decode(list(prompt))
        (key,) = [k for k in self.scripts if f"[{k}]" in text]
        return key


class TrackingSandbox:
    """Delegates to a real sandbox and records session lifetimes and executions in flight; the first execution can
    be made ``first_delay`` seconds slower."""

    def __init__(self, inner, first_delay: float = 0.0) -> None:
        self.inner = inner
        self.first_delay = first_delay
        self.lock = threading.Lock()
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.in_flight = 0
        self.in_flight_at_close: list[int] = []

    def run_many(self, codes, *, sessions=None, timeout=None):
        with self.lock:
            self.in_flight += 1
            delay, self.first_delay = self.first_delay, 0.0
        time.sleep(delay)
        try:
            return self.inner.run_many(codes, sessions=sessions, timeout=timeout)
        finally:
            with self.lock:
                self.in_flight -= 1

    def open_session(self) -> str:
        sid = self.inner.open_session()
        self.opened.append(sid)
        return sid

    def close_session(self, session: str) -> None:
        with self.lock:
            self.in_flight_at_close.append(self.in_flight)
        self.closed.append(session)
        self.inner.close_session(session)


def test_fast_trajectories_keep_generating_while_slow_code_runs(tokenizer, sandbox):
    """No batch-wide waiting: while one trajectory's code sleeps 1.5 s, another runs all its remaining rounds."""
    scripts = {
        "slow": [
            ("```python\nimport time\ntime.sleep(1.5)\nprint('slow')\n```\n", "stop"),
            ("</think>\\boxed{1}", "eos"),
        ],
        "fast": [
            ("```python\nx = 1\nprint(x)\n```\n", "stop"),
            ("```python\nprint(x + 1)\n```\n", "stop"),
            ("```python\nprint(x + 2)\n```\n", "stop"),
            ("</think>\\boxed{3}", "eos"),
        ],
    }
    backend = RowScriptedBackend(tokenizer, scripts)
    engine = _engine(tokenizer, backend, sandbox, max_calls=4)
    start = time.perf_counter()
    slow, fast = engine.generate(engine.encode_prompts(["[slow] q", "[fast] q"]))
    assert backend.calls[0][1] == ["slow", "fast"]  # the first round is one batch
    fast_calls = [t - start for t, keys in backend.calls if "fast" in keys]
    slow_calls = [t - start for t, keys in backend.calls if "slow" in keys]
    # All four fast rounds ran before the slow output could possibly be back (its code sleeps 1.5 s) ...
    assert len(fast_calls) == 4 and max(fast_calls) < 1.5 <= slow_calls[1]
    assert [keys for _, keys in backend.calls] == [["slow", "fast"], ["fast"], ["fast"], ["fast"], ["slow"]]
    # ... and both trajectories are exactly what they would be on their own.
    assert [c.result.stdout for c in fast.tool_calls] == ["1\n", "2\n", "3\n"] and fast.finish_reason == "eos"
    assert [c.result.stdout for c in slow.tool_calls] == ["slow\n"] and slow.finish_reason == "eos"
    _check_provenance(slow, tokenizer, backend.sampled["slow"])
    _check_provenance(fast, tokenizer, backend.sampled["fast"])


#: Trajectories exercising every rule of the loop, with tool latencies that make the two schedules batch differently.
MIXED_SCRIPTS = {
    "two-calls": [
        ("```python\nimport time\ntime.sleep(0.3)\nv = 6 * 7\nprint(v)\n```\n", "stop"),
        ("Again.\n```python\nprint(v + 1)\n```\n", "stop"),
        ("</think>\\boxed{43}", "eos"),
    ],
    "non-call-stop": [
        ("A table:\n```\na b\n```\n", "stop"),
        ("```python\nimport time\ntime.sleep(0.1)\nprint(5)\n```\n", "stop"),
        ("</think>\\boxed{5}", "eos"),
    ],
    "over-budget": [("```python\nprint('y' * 2000)\n```\n", "stop")],
    "all-calls": [
        ("```python\nprint(1)\n```\n", "stop"),
        ("```python\nprint(2)\n```\n", "stop"),
        ("```python\nimport time\ntime.sleep(0.2)\nprint(3)\n```\n", "stop"),
        ("No more code.</think>\\boxed{3}", "eos"),
    ],
    "error": [("```python\n1/0\n```\n", "stop"), ("oops</think>", "eos")],
    "at-once": [("</think>\\boxed{0}", "eos")],
    "too-long": [("```python\nprint(7)\n```\n", "stop"), ("la " * 200, "stop")],
}


def _summary(traj, logprobs: bool = True) -> tuple:
    return (
        traj.group,
        traj.finish_reason,
        traj.completion_ids.tolist(),
        traj.loss_mask.tolist(),
        traj.sampling_logprobs.tolist() if logprobs else None,
        [(s.kind, s.start, s.end, s.text) for s in traj.segments],
        [(c.code, c.rendered, c.result.status, c.result.stdout, c.segment) for c in traj.tool_calls],
        traj.prompt_text,
        traj.row,
    )


def test_async_and_round_synchronous_schedules_give_identical_trajectories(tokenizer, sandbox):
    keys = list(MIXED_SCRIPTS)
    results, backends = {}, {}
    for schedule in ("rounds", "async"):
        backend = RowScriptedBackend(tokenizer, MIXED_SCRIPTS)
        engine = _engine(
            tokenizer,
            backend,
            sandbox,
            max_calls=3,
            max_total_tokens=200,
            max_tokens_per_call=100,
            schedule=schedule,
            sampling=SamplingConfig(logprobs=True),
        )
        results[schedule] = engine.generate(engine.encode_prompts([f"[{k}] q" for k in keys]))
        backends[schedule] = backend
    rounds, async_ = results["rounds"], results["async"]
    assert [_summary(t) for t in async_] == [_summary(t) for t in rounds]  # token for token, in the same order
    assert (
        backends["async"].sampled == backends["rounds"].sampled and backends["async"].stops == backends["rounds"].stops
    )
    by_key = dict(zip(keys, async_))
    assert {k: t.finish_reason for k, t in by_key.items()} == {
        "two-calls": "eos",
        "non-call-stop": "eos",
        "over-budget": "budget",
        "all-calls": "eos",
        "error": "eos",
        "at-once": "eos",
        "too-long": "length",
    }
    assert CORT_BUDGET_NOTICE in by_key["all-calls"].tool_calls[-1].rendered
    assert backends["async"].stops["all-calls"][-1] == ()  # the final round without the code stop
    for k, t in by_key.items():
        _check_provenance(t, tokenizer, backends["async"].sampled[k])
    # The schedules really did batch differently: the async one did not wait for the 0.3 s execution.
    assert [keys for _, keys in backends["async"].calls] != [keys for _, keys in backends["rounds"].calls]


@pytest.mark.parametrize("schedule", ["async", "continuous"])
def test_sessions_are_closed_after_their_executions_when_generation_fails(tokenizer, sandbox, schedule):
    scripts = {
        "slow": [("```python\nimport time\ntime.sleep(0.5)\nprint(1)\n```\n", "stop"), ("</think>", "eos")],
        "fast": [("```python\nprint(2)\n```\n", "stop"), ("</think>", "eos")],
    }
    tracking = TrackingSandbox(sandbox)
    # The failure comes from a backend call (async) or from the decode stream's resume (continuous).
    backend = StreamingScriptedBackend(tokenizer, scripts, fail_on=("fast", 1))
    engine = _engine(tokenizer, backend, tracking, max_calls=2, schedule=schedule)
    with pytest.raises(RuntimeError, match="backend failure"):
        engine.generate(engine.encode_prompts(["[slow] q", "[fast] q"]))
    assert len(tracking.opened) == 2 and sorted(tracking.closed) == sorted(tracking.opened)
    assert tracking.in_flight_at_close == [0, 0]  # the slow execution had ended before any session was closed
    assert len(backend.streams) == (schedule == "continuous")  # each schedule took its own path


def test_invalid_schedule_is_reported_with_other_errors():
    with pytest.raises(
        ValueError, match=r"schedule must be 'auto', 'continuous', 'async' or 'rounds'.*batch_wait must be >= 0"
    ):
        RolloutConfig(schedule="eager", batch_wait=-1)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_greedy_rollouts_with_a_real_model_are_the_same_under_both_schedules(trained_policy, tokenizer, sandbox):
    """The async schedule batches rows differently (a row joins the next backend call as soon as its output is back),
    yet greedy decoding gives the round-synchronous trajectories token for token."""
    problems = CalculatorTask(seed=0).problems("test", 6)
    rows = [p.to_row() for p in problems]
    out, batches = {}, {}
    for schedule in ("rounds", "async"):
        backend = RecordingBackend(trained_policy, tokenizer)
        config = RolloutConfig(
            max_calls=2, max_total_tokens=200, schedule=schedule, sampling=SamplingConfig(temperature=0, logprobs=True)
        )
        slow_first = TrackingSandbox(sandbox, first_delay=0.3)  # so the async schedule surely batches differently
        engine = RolloutEngine(backend, tokenizer, CoRTFormat(), slow_first, config)
        out[schedule] = engine.generate(engine.encode_prompts([build_prompt(p.question) for p in problems]), rows)
        batches[schedule] = backend.batches
    assert [_summary(t, logprobs=False) for t in out["async"]] == [_summary(t, logprobs=False) for t in out["rounds"]]
    for a, r in zip(out["async"], out["rounds"]):  # log-probabilities up to float rounding of other batch shapes
        torch.testing.assert_close(a.sampling_logprobs, r.sampling_logprobs, atol=1e-4, rtol=0)
    assert sum(len(t.tool_calls) for t in out["async"]) >= 3
    assert batches["async"] != batches["rounds"]  # the schedules did batch differently


def test_prefix_is_context_and_a_call_it_opens_is_completed_and_run(tokenizer, sandbox):
    prefix = "Multiplying by hand: 123 * 4 = 492, then It looks tedious, so\n```python\n"
    script = [
        ("print(123 * 456)\n```\n", "stop"),  # the model closes the block the prefix opened
        ("</think>\n\n\\boxed{56088}", "eos"),
    ]
    backend = ScriptedBackend(tokenizer, script)
    engine = _engine(tokenizer, backend, sandbox, max_calls=3)
    prompts = engine.encode_prompts(["What is 123 * 456?"])
    (traj,) = engine.generate(prompts, prefixes=[prefix])
    _check_provenance(traj, tokenizer, backend.sampled)
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False)
    assert traj.prompt_ids.tolist() == prompts[0] + prefix_ids  # the prefix is context, not completion
    assert [c.code for c in traj.tool_calls] == ["print(123 * 456)"]
    assert traj.tool_calls[0].result.stdout == "56088\n"
    with pytest.raises(ValueError, match="prefixes"):
        engine.generate(prompts, prefixes=["a", "b"])


# -- the continuous schedule (token-level batching on a decode stream) ------------------------------------------------
class ScriptedStream:
    """A :class:`~lightning_cort.rollout.backends.base.DecodeStream` over a :class:`RowScriptedBackend`: a resume
    takes the row's next scripted continuation (as a backend call would) and steps emit it one token at a time."""

    def __init__(self, backend: RowScriptedBackend, capacity: int | None) -> None:
        self.backend = backend
        self.capacity = capacity
        self.rows: dict[int, dict] = {}
        self.contexts: dict[int, list[int]] = {}  # what the stream holds for each sequence, token for token
        self.per_step: list[list[str]] = []  # keys of the rows that got a token, per step
        self.most_held = 0

    def add(self, prompt_ids):
        handle = len(self.contexts)
        self.rows[handle] = {"prompt": list(prompt_ids), "out": None, "emitted": 0}
        self.contexts[handle] = list(prompt_ids)
        self.most_held = max(self.most_held, len(self.rows))
        return handle

    def resume(self, handle, forced_ids, max_new_tokens, stop_strings):
        row = self.rows[handle]
        assert row["out"] is None, "resumed while in a round"
        self.contexts[handle].extend(forced_ids)
        sampling = SamplingConfig(max_new_tokens=max_new_tokens, logprobs=True)
        (row["out"],) = self.backend.generate([row["prompt"]], sampling, stop_strings)
        row["emitted"] = 0

    def step(self):
        ended, keys = [], []
        for handle, row in self.rows.items():
            out = row["out"]
            if out is None:
                continue
            keys.append(self.backend._key(row["prompt"]))
            self.contexts[handle].append(out.token_ids[row["emitted"]])
            row["emitted"] += 1
            if row["emitted"] == len(out.token_ids):
                ended.append((handle, out))
                row["out"] = None
        self.per_step.append(keys)
        return ended

    def release(self, handle):
        del self.rows[handle]

    def drop_last(self, handle):
        self.contexts[handle].pop()

    @property
    def generating(self):
        return sum(1 for r in self.rows.values() if r["out"] is not None)

    @property
    def size(self):
        return len(self.rows)


class StreamingScriptedBackend(RowScriptedBackend):
    def __init__(self, *args, capacity: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity
        self.streams: list[ScriptedStream] = []

    def open_stream(self, sampling):
        self.streams.append(ScriptedStream(self, self.capacity))
        return self.streams[-1]


@pytest.mark.parametrize("capacity", [None, 3])
def test_continuous_schedule_gives_the_round_synchronous_trajectories(tokenizer, sandbox, capacity):
    keys = list(MIXED_SCRIPTS)
    config = dict(max_calls=3, max_total_tokens=200, max_tokens_per_call=100, sampling=SamplingConfig(logprobs=True))
    rounds_backend = RowScriptedBackend(tokenizer, MIXED_SCRIPTS)
    engine = _engine(tokenizer, rounds_backend, sandbox, schedule="rounds", **config)
    rounds = engine.generate(engine.encode_prompts([f"[{k}] q" for k in keys]))
    backend = StreamingScriptedBackend(tokenizer, MIXED_SCRIPTS, capacity=capacity)
    engine = _engine(tokenizer, backend, sandbox, schedule="continuous", **config)
    prompts = engine.encode_prompts([f"[{k}] q" for k in keys])
    continuous = engine.generate(prompts)
    assert [_summary(t) for t in continuous] == [_summary(t) for t in rounds]  # token for token, in the same order
    assert backend.sampled == rounds_backend.sampled and backend.stops == rounds_backend.stops
    (stream,) = backend.streams
    assert stream.most_held == (capacity or len(keys))  # a finished trajectory's slot went to a waiting one
    for k, t in zip(keys, continuous):
        _check_provenance(t, tokenizer, backend.sampled[k])
        # What the stream decoded from is exactly the prompt and the trajectory's completion (forced output included).
        handle = keys.index(k)
        assert stream.contexts[handle] == t.prompt_ids.tolist() + t.completion_ids.tolist()
    if capacity is None:
        # Token-level batching: while "two-calls" sleeps 0.3 s in its first execution, "all-calls" gets tokens.
        slow_resumed = next(i for i, ks in enumerate(stream.per_step) if i and "two-calls" in ks and
                            "two-calls" not in stream.per_step[i - 1])  # fmt: skip
        assert any("all-calls" in ks for ks in stream.per_step[1:slow_resumed])


END_OF_TURN_SCRIPTS = {
    # A chat model closes its fence and ends its turn, expecting a user to run the code.
    "end-of-turn": [("Let me run it.\n```python\nprint(6 * 7)\n```", "eos"), ("</think>\\boxed{42}", "eos")],
    # A `py` tag; the call's output is the last allowed one, then an end of turn after a fence is not a call.
    "py-tag": [("```py\nprint(2)\n```\n", "stop"), ("```python\nprint(3)\n```", "eos")],
    # Text after the closing fence: the model went on, so the end of turn ends the trajectory.
    "not-a-call": [("```python\nprint(1)\n``` is the program.", "eos")],
}


@pytest.mark.parametrize("schedule", ["rounds", "async", "continuous"])
def test_a_call_closed_right_before_the_end_of_turn_runs(tokenizer, sandbox, schedule):
    keys = list(END_OF_TURN_SCRIPTS)
    backend = StreamingScriptedBackend(tokenizer, END_OF_TURN_SCRIPTS)
    engine = _engine(
        tokenizer, backend, sandbox, schedule=schedule, max_calls=1, budget_notice=False,
        sampling=SamplingConfig(logprobs=True),
    )  # fmt: skip
    prompts = engine.encode_prompts([f"[{k}] q" for k in keys])
    trajectories = dict(zip(keys, engine.generate(prompts)))
    eos = tokenizer.eos_token_id

    t = trajectories["end-of-turn"]
    assert [c.code for c in t.tool_calls] == ["print(6 * 7)"] and t.finish_reason == "eos"
    first, second = backend.sampled["end-of-turn"]
    assert first[-1] == eos
    _check_provenance(t, tokenizer, [first[:-1], second])  # the end-of-turn token before the output was dropped
    assert t.tool_calls[0].rendered.startswith("\n```output\n42")  # the output starts on its own line
    assert t.completion_text.endswith("```\n```output\n42\n```\n</think>\\boxed{42}" + tokenizer.eos_token)
    assert len(t.sampling_logprobs) == len(t.completion_ids)

    t = trajectories["py-tag"]
    assert [c.code for c in t.tool_calls] == ["print(2)"]  # the second block comes after the last allowed call
    assert t.finish_reason == "eos" and t.completion_ids.tolist()[-1] == eos

    t = trajectories["not-a-call"]
    assert not t.tool_calls and t.finish_reason == "eos" and t.completion_ids.tolist()[-1] == eos
    if schedule == "continuous":
        (stream,) = backend.streams
        for k, t in trajectories.items():  # the stream's context is the trajectory, token for token
            assert stream.contexts[keys.index(k)] == t.prompt_ids.tolist() + t.completion_ids.tolist()


def test_retool_output_starts_on_its_own_line_as_in_the_traces(tokenizer, sandbox):
    """ReTool pauses on `</code>`, before the newline its traces write: the interpreter block adds it."""
    from lightning_cort.formats import ReToolFormat

    script = [("<code>\n```python\nprint(6 * 7)\n```\n</code>", "stop"), ("<answer>\\boxed{42}</answer>", "eos")]
    backend = ScriptedBackend(tokenizer, script)
    engine = RolloutEngine(backend, tokenizer, ReToolFormat(), sandbox, RolloutConfig(max_calls=2))
    (t,) = engine.generate(engine.encode_prompts(["What is 6 * 7?"]))
    assert t.tool_calls[0].rendered == "\n<interpreter>\n42\n</interpreter>\n"
    fmt = ReToolFormat()
    assert fmt.render_call("print(6 * 7)") + fmt.render_output("42") in t.completion_text  # the trace's shape


@pytest.mark.parametrize("max_output_tokens", [None, 24])
def test_interpreter_output_is_cut_by_characters_or_by_tokens(tokenizer, sandbox, max_output_tokens):
    """CoRT's rule cuts a long output to 400 + ``...`` + 400 characters; ``max_output_tokens`` cuts it to the first
    and last halves of that many tokens instead, whatever the characters cost."""
    from lightning_cort.rollout.engine import middle_truncate_tokens

    script = [("```python\nprint(' '.join(str(i) for i in range(2000)))\n```\n", "stop"), ("</think>\\boxed{1}", "eos")]
    backend = ScriptedBackend(tokenizer, script)
    engine = _engine(
        tokenizer, backend, sandbox, max_calls=2, max_total_tokens=4000, max_output_tokens=max_output_tokens
    )
    (traj,) = engine.generate(engine.encode_prompts(["q"]))
    _check_provenance(traj, tokenizer, backend.sampled)
    stdout = traj.tool_calls[0].result.stdout.strip()
    body = traj.tool_calls[0].rendered.removeprefix("```output\n").split("\n```")[0]
    if max_output_tokens is None:
        assert body == stdout[:400] + "..." + stdout[-400:]
    else:
        ids = tokenizer.encode(stdout, add_special_tokens=False)
        assert body == tokenizer.decode(ids[:12]) + "..." + tokenizer.decode(ids[-12:])
        assert len(tokenizer.encode(body, add_special_tokens=False)) <= max_output_tokens + 3  # + "..." and joins
        assert len(body) < 200  # far under CoRT's 800 characters for the same output
    assert middle_truncate_tokens("42\n", tokenizer, 24) == "42"  # short outputs stay whole


def test_hermes_tool_calls_get_a_tool_turn_right_after_the_close(tokenizer, sandbox):
    """Chat-template tool calls: the tool turn continues the text at ``</tool_call>`` (no newline of its own), the
    session persists across calls, and a ``<tool_call>`` for another tool is text, not an execution."""
    from lightning_cort.formats import HermesFormat

    fmt = HermesFormat()
    script = [
        (fmt.render_call("x = 6 * 7\nprint(x)"), "stop"),
        ('<tool_call>\n{"name": "search", "arguments": {"q": "x"}}\n</tool_call>', "stop"),
        (fmt.render_call("print(x + 1)"), "stop"),
        ("\\boxed{43}", "eos"),
    ]
    backend = ScriptedBackend(tokenizer, script)
    engine = RolloutEngine(backend, tokenizer, fmt, sandbox, RolloutConfig(max_calls=3))
    (t,) = engine.generate(engine.encode_prompts(["What is 6 * 7 + 1?"]))
    _check_provenance(t, tokenizer, backend.sampled)
    assert [c.result.stdout for c in t.tool_calls] == ["42\n", "43\n"]
    assert (
        t.tool_calls[0].rendered
        == fmt.render_output("42")
        == ("<|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    )
    assert fmt.render_call("x = 6 * 7\nprint(x)") + fmt.render_output("42") in t.completion_text
    assert backend.stops[0] == ("</tool_call>",)
