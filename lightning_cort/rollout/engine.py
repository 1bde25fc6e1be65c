"""The multi-turn rollout loop: generate until a code call closes, execute it, append the output as forced tokens,
continue — with per-trajectory limits and exact token provenance.

Scheduling (:attr:`RolloutConfig.schedule`):
    ``continuous`` batches at the token level on a backend's decode stream (:class:`HFBackend` has one): every
    trajectory in a generation round gains one token per step; one whose code call closed pauses, keeping its KV
    cache, while its code runs, and resumes with the output appended as forced tokens (only those are encoded); a
    finished one frees its slot for the next waiting trajectory. Nothing waits for anything but its own execution,
    and no context is encoded twice.
    ``async`` has no batch-wide waiting either, on any backend, but batches per backend call: a call goes to the
    sandbox the moment the generation that closed it returns, and runs while the other trajectories keep generating.
    Each backend call generates for every trajectory that is ready (not waiting on the interpreter); a trajectory
    whose output is back joins the next call, a finished one leaves. When no trajectory is ready, the engine waits
    for the first execution to finish, not for all of them. Each call encodes its rows' whole context again.
    ``rounds`` is the round-synchronous loop of CoRT and ToRA: generate for every active trajectory, execute all
    their calls, wait for the slowest, repeat. It is kept for comparison.
    ``auto`` (the default) is ``continuous`` when the backend has a decode stream that can serve its model (see
    ``HFBackend.streamable``), else ``async``.
All apply the same per-trajectory steps and limits in the same order, so a backend whose output for a row does not
depend on the other rows of its batch gives identical trajectories under each.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from lightning_cort.rollout.backends.base import (
    GenerationBackend,
    GenerationOutput,
    SamplingConfig,
    StalePolicyError,
    StreamingBackend,
)
from lightning_cort.sandbox.base import result_text
from lightning_cort.trajectory import FinishReason, Segment, ToolCall, Trajectory

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lightning_cort.formats.base import CodeFormat
    from lightning_cort.sandbox.base import ExecutionResult, Sandbox


@dataclass(frozen=True)
class RolloutConfig:
    """Limits, sampling and scheduling for rollouts.

    Attributes:
        max_calls: Code executions allowed per trajectory. After the last one, generation continues without the code
            stop (CoRT: ``max_func_call - 1`` executions).
        max_total_tokens: Completion budget per trajectory, counting sampled *and* interpreter-output tokens. An
            output block that would not fit is dropped and the trajectory ends (CoRT's rule).
        max_tokens_per_call: Most tokens sampled in one generation round.
        budget_notice: Append the format's notice (CoRT's ``[SYSTEM]`` text) to the last allowed execution's output.
        timeout: Sandbox timeout per execution in seconds (``None``: the sandbox's default).
        schedule: ``continuous``: token-level batching on the backend's decode stream, KV caches kept across tool
            calls; ``async``: trajectories keep generating while others' code runs, one backend call per batch of
            ready trajectories; ``rounds``: CoRT's round-synchronous loop, which waits for the whole batch's
            executions every round; ``auto``: ``continuous`` if the backend can, else ``async`` (see the module
            docstring).
        batch_wait: With ``async`` only, seconds to wait for more executions to finish before generating for the
            trajectories already ready, so that they share one backend call (``0``: generate at once, which kept
            both the backend and the sandbox busiest in ``benchmarks/rollout.py``).
        sampling: Temperature, top-p, ... (``max_new_tokens`` is set per round from the limits above).
        max_output_tokens: Cut interpreter output to this many tokens of the policy's tokenizer (the first and last
            halves around ``...``, as CoRT cuts 800 characters to 400 + 400) instead of the format's character limit;
            empty: the format's limit (CoRT's 800 characters). The budget that matters is tokens: 800 characters of
            digits and of prose cost very different amounts of context.
    """

    max_calls: int = 4
    max_total_tokens: int = 512
    max_tokens_per_call: int = 256
    budget_notice: bool = True
    timeout: float | None = None
    schedule: Literal["auto", "continuous", "async", "rounds"] = "auto"
    batch_wait: float = 0.0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        errors = []
        if self.max_output_tokens is not None and self.max_output_tokens < 2:
            errors.append(f"max_output_tokens must be >= 2 or empty, got {self.max_output_tokens}")
        if self.max_calls < 0:
            errors.append(f"max_calls must be >= 0, got {self.max_calls}")
        if self.max_total_tokens < 1:
            errors.append(f"max_total_tokens must be >= 1, got {self.max_total_tokens}")
        if self.max_tokens_per_call < 1:
            errors.append(f"max_tokens_per_call must be >= 1, got {self.max_tokens_per_call}")
        if self.schedule not in ("auto", "continuous", "async", "rounds"):
            errors.append(f"schedule must be 'auto', 'continuous', 'async' or 'rounds', got {self.schedule!r}")
        if self.batch_wait < 0:
            errors.append(f"batch_wait must be >= 0, got {self.batch_wait}")
        if errors:
            raise ValueError("invalid RolloutConfig: " + "; ".join(errors))


@dataclass(eq=False)  # compared and hashed by identity: states are members of the scheduler's sets
class _State:
    prompt_ids: list[int]
    row: Mapping[str, Any]
    group: int
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    segments: list[tuple[str, int, int, str]] = field(default_factory=list)  # kind, start, end, text
    calls: list[ToolCall] = field(default_factory=list)
    since_tool: str = ""  # model text since the last interpreter output (where a call is searched)
    session: str | None = None
    prefix: str = ""  # forced text continued from (a call it opens is completed by the model)
    rounds: int = 0
    finish: FinishReason = "active"
    generation_s: float = 0.0
    tool_s: float = 0.0
    handle: int = -1  # in the decode stream (``continuous`` schedule)
    budget: int = 0  # of the current round (``continuous`` schedule)
    dropped_end: bool = False  # the round's end-of-turn token was dropped to run the call before it


class RolloutEngine:
    """Samples code-interleaved trajectories.

    Args:
        backend: Generates continuations of token-id prompts (:class:`~lightning_cort.rollout.HFBackend`, ...).
        tokenizer: Encodes interpreter output and decodes text views.
        code_format: Where calls are and how output is rendered.
        sandbox: Executes the code; one session per trajectory, so state persists across its calls. With the
            ``async`` schedule it is called from several threads at once (the :class:`~lightning_cort.sandbox.Sandbox`
            protocol requires that to be safe).
        config: Limits, sampling and scheduling.

    ``policy_version`` is the version of the weights that should sample (the trainer's optimizer step); a backend
    that tracks the version of the weights it holds (``backend.policy_version``, as
    :class:`~lightning_cort.rollout.backends.vllm.VLLMBackend` does) must match it, else
    :class:`~lightning_cort.rollout.backends.base.StalePolicyError` is raised.
    """

    def __init__(
        self,
        backend: GenerationBackend,
        tokenizer: PreTrainedTokenizerBase,
        code_format: CodeFormat,
        sandbox: Sandbox,
        config: RolloutConfig | None = None,
    ) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.format = code_format
        self.sandbox = sandbox
        self.config = config or RolloutConfig()
        self.policy_version = 0
        self._special_ids = frozenset(getattr(tokenizer, "all_special_ids", ()) or ())

    def encode_prompts(self, messages: Sequence[str]) -> list[list[int]]:
        """Chat-template user messages into prompt ids, generation prompt included
        (:func:`~lightning_cort.data.encode_prompt`)."""
        from lightning_cort.data import encode_prompt

        return [encode_prompt(self.tokenizer, m, tools=self.format.tools) for m in messages]

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        rows: Sequence[Mapping[str, Any]] | None = None,
        n: int = 1,
        sampling: SamplingConfig | None = None,
        prefixes: Sequence[str] | None = None,
    ) -> list[Trajectory]:
        """Sample ``n`` trajectories per prompt.

        Args:
            prompts: Prompt token ids (already chat-templated).
            rows: The dataset rows of the prompts (kept on the trajectories for scoring).
            n: Samples per prompt.
            sampling: Overrides the config's sampling for this call (e.g. greedy evaluation).
            prefixes: Per prompt, assistant text to continue from (Hint-Engineering continues a reasoning trace cut
                at a hint). It is encoded once and appended to the prompt ids, so it is context, not completion; a
                code block it opens (a hint ending in ```` ```python\n ````) is completed by the model and executed.

        Returns:
            ``len(prompts) * n`` trajectories, grouped by prompt (``[p0 × n, p1 × n, ...]``).
        """
        held = getattr(self.backend, "policy_version", None)
        if held is not None and held != self.policy_version:
            raise StalePolicyError(
                f"the generation backend holds policy version {held} but version {self.policy_version} should sample: "
                "sync the weights (backend.sync_weights) after every optimizer step"
            )
        sampling = sampling or self.config.sampling
        rows = rows if rows is not None else [{} for _ in prompts]
        if prefixes is not None and len(prefixes) != len(prompts):
            raise ValueError(f"got {len(prefixes)} prefixes for {len(prompts)} prompts")
        pre = list(prefixes) if prefixes is not None else [""] * len(prompts)
        pre_ids = [self.tokenizer.encode(t, add_special_tokens=False) if t else [] for t in pre]
        states = [
            _State([*prompts[g], *pre_ids[g]], rows[g], g, prefix=pre[g], since_tool=pre[g])
            for g in range(len(prompts))
            for _ in range(n)
        ]
        try:
            schedule = self.config.schedule
            if schedule == "auto":
                can = isinstance(self.backend, StreamingBackend) and getattr(self.backend, "streamable", True)
                schedule = "continuous" if can else "async"
            if schedule == "rounds":
                self._run_rounds(states, sampling)
            elif schedule == "continuous":
                self._run_continuous(states, sampling)
            else:
                self._run_async(states, sampling)
        finally:
            for s in states:
                if s.session is not None:
                    self.sandbox.close_session(s.session)
        return [self._finish(s, sampling.logprobs) for s in states]

    # -- schedules -------------------------------------------------------------------------------------------------
    def _run_rounds(self, states: list[_State], sampling: SamplingConfig) -> None:
        """CoRT's loop: generate for every active trajectory, execute all their calls, wait for all of them."""
        while active := self._active(states):
            calls = self._generate(active, sampling)
            if calls:
                sessions = [self._session(s) for s, _ in calls]
                codes = [code for _, code in calls]
                results = self.sandbox.run_many(codes, sessions=sessions, timeout=self.config.timeout)
                for (s, code), result in zip(calls, results):
                    self._append_output(s, code, result)

    def _run_async(self, states: list[_State], sampling: SamplingConfig) -> None:
        """Generate for whoever is ready while the others' code runs; wait only when nobody is ready.

        ``ready`` holds the trajectories that can generate now, ``running`` the executions in flight (at most one per
        trajectory, so one thread per trajectory never queues an execution behind another).
        """
        ready: set[_State] = set(states)
        running: dict[Future[ExecutionResult], tuple[_State, str]] = {}
        pool = ThreadPoolExecutor(max_workers=max(1, len(states)), thread_name_prefix="rollout-exec")
        try:
            while ready or running:
                batch = self._active([s for s in states if s in ready])  # in input order, for stable batches
                calls = self._generate(batch, sampling) if batch else []
                for s, code in calls:
                    running[pool.submit(self._execute, self._session(s), code)] = (s, code)
                waiting = {s for s, _ in calls}
                ready = {s for s in batch if s.finish == "active" and s not in waiting}  # e.g. a non-call stop
                if not running:
                    continue
                if not ready:
                    wait(running, return_when=FIRST_COMPLETED)  # nothing to generate: wait for the first output only
                done, _ = wait(running, timeout=self.config.batch_wait, return_when=ALL_COMPLETED)  # all that are back
                for fut in done:
                    s, code = running.pop(fut)
                    self._append_output(s, code, fut.result())
                    if s.finish == "active":
                        ready.add(s)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # sessions are closed after their executions ended

    def _run_continuous(self, states: list[_State], sampling: SamplingConfig) -> None:
        """Token-level scheduling on a :class:`~lightning_cort.rollout.backends.base.DecodeStream`: every trajectory
        in a round gains one token per step; one whose call closed pauses (keeping its KV cache) while its code runs
        and resumes with the output as forced tokens; a finished one frees its slot for the next waiting one."""
        if not isinstance(self.backend, StreamingBackend):
            raise TypeError(
                f"schedule='continuous' needs a backend with open_stream() (e.g. HFBackend); "
                f"{type(self.backend).__name__} has none: use schedule='async'"
            )
        stream = self.backend.open_stream(sampling)
        capacity = stream.capacity or len(states)
        queue = list(reversed(states))  # admitted in input order
        by_handle: dict[int, _State] = {}
        in_round: set[_State] = set()
        running: dict[Future[ExecutionResult], tuple[_State, str]] = {}

        def start_round(s: _State, forced: Sequence[int]) -> None:
            if not self._active([s]):  # no budget left: ends on ``length``
                stream.release(s.handle)
                return
            s.budget, stops = self._round_limits(s)
            stream.resume(s.handle, forced, s.budget, stops)
            in_round.add(s)

        pool = ThreadPoolExecutor(max_workers=max(1, len(states)), thread_name_prefix="rollout-exec")
        try:
            while queue or in_round or running:
                while queue and stream.size < capacity:
                    s = queue.pop()
                    s.handle = stream.add(s.prompt_ids)
                    by_handle[s.handle] = s
                    start_round(s, [])
                if in_round:
                    t0 = time.perf_counter()
                    ended = stream.step()
                    share = (time.perf_counter() - t0) / len(in_round)
                    for s in in_round:
                        s.generation_s += share
                    for handle, out in ended:
                        s = by_handle[handle]
                        in_round.discard(s)
                        code = self._after_round(s, out, s.budget)
                        if s.dropped_end:
                            stream.drop_last(handle)  # the end-of-turn token never enters the context
                            s.dropped_end = False
                        if code is not None:
                            running[pool.submit(self._execute, self._session(s), code)] = (s, code)
                        elif s.finish == "active":
                            start_round(s, [])  # a stop that closed something else than a call: go on
                        else:
                            stream.release(handle)
                elif running:
                    wait(running, return_when=FIRST_COMPLETED)  # nothing to decode: wait for the first output
                for fut in [f for f in running if f.done()]:
                    s, code = running.pop(fut)
                    before = len(s.ids)
                    self._append_output(s, code, fut.result())
                    if s.finish == "active":
                        start_round(s, s.ids[before:])  # the output's tokens, exactly as appended
                    else:
                        stream.release(s.handle)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- steps -----------------------------------------------------------------------------------------------------
    def _active(self, states: list[_State]) -> list[_State]:
        """The trajectories that may generate: still active and with budget left (the others end on ``length``)."""
        for s in states:
            if s.finish == "active" and len(s.ids) >= self.config.max_total_tokens:
                s.finish = "length"
        return [s for s in states if s.finish == "active"]

    def _generate(self, batch: list[_State], sampling: SamplingConfig) -> list[tuple[_State, str]]:
        """One generation round for ``batch``; returns the code calls that closed, as ``(state, code)``."""
        with_stop = [s for s in batch if len(s.calls) < self.config.max_calls]
        without_stop = [s for s in batch if len(s.calls) >= self.config.max_calls]  # the final round: no code stop
        calls: list[tuple[_State, str]] = []
        for group, stops in ((with_stop, self.format.stop_strings), (without_stop, ())):
            if group:
                calls.extend(self._generate_group(group, sampling, stops))
        return calls

    def _generate_group(
        self, group: list[_State], sampling: SamplingConfig, stops: Sequence[str]
    ) -> list[tuple[_State, str]]:
        budgets = [self._round_limits(s)[0] for s in group]
        round_sampling = SamplingConfig(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_new_tokens=max(budgets),
            logprobs=sampling.logprobs,
        )
        t0 = time.perf_counter()
        outs = self.backend.generate([s.prompt_ids + s.ids for s in group], round_sampling, stops)
        share = (time.perf_counter() - t0) / len(group)
        calls = []
        for s, out, budget in zip(group, outs, budgets):
            s.generation_s += share
            code = self._after_round(s, out, budget)
            if code is not None:
                calls.append((s, code))
        return calls

    def _after_round(self, s: _State, out: GenerationOutput, budget: int) -> str | None:
        """Append a round's sampled tokens and decide what comes next: the code of the call it closed, or ``None``
        (the trajectory ended, or a stop closed something other than a code call and it keeps generating)."""
        s.rounds += 1
        out = self._clip(out, budget)
        self._append_model(s, out)
        if out.finish == "eos":
            code = self._call_before_end_of_turn(s, out)
            if code is not None:
                return code
            s.finish = "eos"
        elif out.finish == "length":
            s.finish = "length"
        elif s.rounds >= 2 * self.config.max_calls + 2:
            s.finish = "max_rounds"
        else:
            call = self.format.find_call(s.since_tool)
            if call is not None:
                return call.code
        return None

    def _call_before_end_of_turn(self, s: _State, out: GenerationOutput) -> str | None:
        """The code of a call closed right before the model ended its turn (a fence, then ``<|im_end|>``), or
        ``None``. Chat models end a code block that way when they expect a user to run it; the call is executed like
        one closed by the stop string, and the end-of-turn token is dropped from the trajectory (it was sampled as the
        round's stop, like a stop token that is not part of the output), so the turn continues after the output."""
        if len(s.calls) >= self.config.max_calls or not s.segments or s.segments[-1][0] != "model":
            return None
        end_token = bool(out.token_ids) and out.token_ids[-1] in self._special_ids
        _, start, _, _ = s.segments[-1]
        ids = s.ids[start:-1] if end_token else s.ids[start:]
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        call = self.format.find_call(text if s.calls else s.prefix + text)
        if call is None:
            return None
        if end_token:
            for buf in (s.ids, s.mask, s.logprobs):
                buf.pop()
            s.segments[-1] = ("model", start, len(s.ids), text)
            s.dropped_end = True
        s.since_tool = text if s.calls else s.prefix + text
        return call.code

    def _round_limits(self, s: _State) -> tuple[int, Sequence[str]]:
        """The next round's token budget and stop strings (none in the final round, after the last allowed call)."""
        cfg = self.config
        budget = min(cfg.max_tokens_per_call, cfg.max_total_tokens - len(s.ids))
        return budget, (self.format.stop_strings if len(s.calls) < cfg.max_calls else ())

    def _session(self, s: _State) -> str:
        if s.session is None:
            s.session = self.sandbox.open_session()
        return s.session

    def _execute(self, session: str, code: str) -> ExecutionResult:
        # Through run_many, as the round-synchronous loop does, so sandbox wrappers that hook it see every execution.
        return self.sandbox.run_many([code], sessions=[session], timeout=self.config.timeout)[0]

    def _append_output(self, s: _State, code: str, result: ExecutionResult) -> None:
        """Append an execution's rendered output as forced tokens, or end the trajectory if it does not fit."""
        cfg = self.config
        s.tool_s += result.duration_s
        last = len(s.calls) + 1 >= cfg.max_calls
        notice = cfg.budget_notice and last
        if cfg.max_output_tokens is None:
            rendered = self.format.render_result(result, budget_notice=notice)
        else:
            text = middle_truncate_tokens(result_text(result), self.tokenizer, cfg.max_output_tokens)
            rendered = self.format.render_output(text, budget_notice=notice, truncate=False)
        if self.format.output_on_new_line and s.since_tool and not s.since_tool.endswith("\n"):
            # The model's text stops right at the close (ReTool's `</code>` stop, or a fence that ended the turn):
            # the output starts on its own line, as the formats' traces write it.
            rendered = "\n" + rendered
        out_ids = self.tokenizer.encode(rendered, add_special_tokens=False)
        if len(s.ids) + len(out_ids) >= cfg.max_total_tokens:
            s.finish = "budget"  # the output does not fit: end on the model's closing delimiter, as CoRT does
            return
        start = len(s.ids)
        s.ids.extend(out_ids)
        s.mask.extend([0] * len(out_ids))
        s.logprobs.extend([0.0] * len(out_ids))
        s.segments.append(("tool", start, len(s.ids), rendered))
        s.calls.append(ToolCall(code=code, result=result, rendered=rendered, segment=len(s.segments) - 1))
        s.since_tool = ""

    # -- helpers ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _clip(out: GenerationOutput, budget: int) -> GenerationOutput:
        if len(out.token_ids) <= budget:
            return out
        lp = out.logprobs[:budget] if out.logprobs is not None else None
        return GenerationOutput(out.token_ids[:budget], lp, "length")

    def _append_model(self, s: _State, out: GenerationOutput) -> None:
        if not out.token_ids:
            return
        if s.segments and s.segments[-1][0] == "model":
            _, start, _, _ = s.segments.pop()  # consecutive rounds without a call form one model span
        else:
            start = len(s.ids)
        s.ids.extend(out.token_ids)
        s.mask.extend([1] * len(out.token_ids))
        s.logprobs.extend(out.logprobs if out.logprobs is not None else [0.0] * len(out.token_ids))
        text = self.tokenizer.decode(s.ids[start:], skip_special_tokens=False)
        s.segments.append(("model", start, len(s.ids), text))
        s.since_tool = text if s.calls else s.prefix + text

    def _finish(self, s: _State, logprobs: bool) -> Trajectory:
        traj = Trajectory(
            prompt_ids=torch.tensor(s.prompt_ids, dtype=torch.long),
            completion_ids=torch.tensor(s.ids, dtype=torch.long),
            loss_mask=torch.tensor(s.mask, dtype=torch.long),
            segments=[Segment(k, a, b, t) for k, a, b, t in s.segments],  # type: ignore[arg-type]
            tool_calls=s.calls,
            finish_reason=s.finish,
            sampling_logprobs=torch.tensor(s.logprobs, dtype=torch.float32) if logprobs else None,
            prompt_text=self.tokenizer.decode(s.prompt_ids, skip_special_tokens=False),
            row=dict(s.row),
            group=s.group,
            policy_version=self.policy_version,
            generation_s=s.generation_s,
            tool_s=s.tool_s,
        )
        return traj


def middle_truncate_tokens(text: str, tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> str:
    """``text`` (stripped) cut to its first and last ``max_tokens // 2`` tokens with ``...`` between when it is longer
    than ``max_tokens`` tokens: CoRT's middle truncation, counted in tokens. The halves are decoded, so the output
    block is encoded again with the rest of the block; a cut inside a multi-byte character decodes to U+FFFD."""
    text = text.strip()
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text
    half = max_tokens // 2
    return tokenizer.decode(ids[:half]) + "..." + tokenizer.decode(ids[len(ids) - half :])
