"""Rollout throughput: sampled tokens/s of tool-interleaved rollouts with ``RolloutEngine`` against pure generation
and against CoRT's round-synchronous loop.

Every contender samples from the same tiny policy (the tests' small warm start on code-integrated calculator traces,
cached on disk, so it really writes code calls) on the same prompts, ``--samples`` trajectories each, with the same
limits and sampling; torch uses ``--threads`` intra-op threads. Contenders:

* **engine (async)**: ``RolloutEngine`` with the ``async`` schedule, ``HFBackend`` and ``LocalSandbox`` (sessions).
* **engine (rounds)**: the same engine with ``schedule="rounds"`` (waits for the whole batch's executions every round)
  on the same ``LocalSandbox``: separates the gain of the schedule from the gain of the sandbox.
* **(b) CoRT/ToRA loop**: round-synchronous (the engine's ``rounds`` schedule, so the limits are identical by
  construction) with CoRT's executor: every round a *fresh* process pool (``multiprocessing`` fork pool of
  ``min(calls, --tool-workers)`` workers, as CoRT's ``batch_apply``) ``exec``-s each call's program with stdout
  captured, the state of a trajectory kept by re-running its earlier blocks (CoRT's "jupyter-like" replay).
* **(a) pure generation**: one ``model.generate`` call over the same prompts with no tools and no stop strings,
  ``min_new_tokens = max_new_tokens`` = the async engine's mean sampled tokens per trajectory (so the same number of
  tokens is sampled, none wasted on padding).

Tool latency varies across trajectories: every executed program (in every contender) starts with
``time.sleep(d)``, ``d`` drawn uniformly from ``[0, --latency-ms]`` by a seeded generator (the same sequence for every
contender, in the order executions are submitted). The sleep runs inside the sandbox, so it occupies one of the
``--tool-workers`` execution slots that both the LocalSandbox and the fresh pool are given.

Throughput counts sampled tokens (``loss_mask == 1``; interpreter output excluded) over the wall time of the whole
``generate`` call. Contenders are interleaved across repeats (order rotated each repeat); medians are reported, and
ratios are medians of the per-repeat ratios. Also measured: the async engine with other ``batch_wait`` values
(``--batch-waits``), and the async engine against (b) at other tool latencies and concurrencies (``--sweep``).

Prints a markdown section; the full run also writes it into docs/benchmarks.md (replacing its "## Rollout" section).

    python benchmarks/rollout.py            # full run (~4 minutes on 2 cores), writes docs/benchmarks.md
    python benchmarks/rollout.py --quick    # smoke run (< 1 minute), prints only
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import contextlib
import io
import multiprocessing
import platform
import random
import statistics
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from _docs import write_section  # benchmarks/ is on sys.path when run as a script

from lightning_cort.formats import CoRTFormat
from lightning_cort.formats.base import result_text
from lightning_cort.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingConfig
from lightning_cort.sandbox import LocalSandbox
from lightning_cort.sandbox.base import ExecutionError, ExecutionResult
from lightning_cort.sandbox.local import cort_replay_program


# -- simulated tool latency ----------------------------------------------------------------------------------------
class Latency:
    """Seeded delays in ``[0, max_s]``, drawn in the order executions are submitted (thread-safe)."""

    def __init__(self, max_s: float, seed: int) -> None:
        self.max_s = max_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def prefix(self) -> str:
        with self.lock:
            d = self.rng.uniform(0.0, self.max_s)
        return f"import time as _t; _t.sleep({d:.4f})\n"


class DelayedSandbox:
    """A sandbox whose every execution first sleeps a :class:`Latency` delay (inside the sandbox)."""

    def __init__(self, inner: LocalSandbox, latency: Latency) -> None:
        self.inner = inner
        self.latency = latency

    def run_many(
        self, codes: Sequence[str], *, sessions: Sequence[str | None] | None = None, timeout: float | None = None
    ) -> list[ExecutionResult]:
        return self.inner.run_many([self.latency.prefix() + c for c in codes], sessions=sessions, timeout=timeout)

    def run(self, code: str, *, session: str | None = None, timeout: float | None = None) -> ExecutionResult:
        return self.run_many([code], sessions=[session], timeout=timeout)[0]

    def open_session(self) -> str:
        return self.inner.open_session()

    def close_session(self, session: str) -> None:
        self.inner.close_session(session)


# -- (b): CoRT's executor, a fresh process pool per round -----------------------------------------------------------
def _exec_program(program: str) -> tuple[str, str, tuple[str, str, str] | None, float]:
    """Runs in a pool worker: ``exec`` with stdout captured (CoRT's ``GenericRuntime`` with an empty namespace)."""
    out = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(program, "<cell>", "exec"), {"__name__": "__main__"})
    except Exception as e:
        # The traceback of the program's own frames (as LocalSandbox reports it), so that both sandboxes show the
        # model outputs of similar length.
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None))
        return "error", "", (type(e).__name__, str(e), tb), time.perf_counter() - start
    return "ok", out.getvalue(), None, time.perf_counter() - start


class FreshPoolSandbox:
    """CoRT's ``PythonExecutor.batch_apply``: a new process pool for every batch, ``exec`` per program, a timeout per
    task, state by replaying a trajectory's earlier blocks. Each program first sleeps a :class:`Latency` delay."""

    def __init__(self, workers: int, latency: Latency, timeout: float = 5.0) -> None:
        self.workers = workers
        self.latency = latency
        self.timeout = timeout
        self.history: dict[str, list[tuple[str, str]]] = {}
        self.pool_s = 0.0  # time spent starting and stopping pools

    def run_many(
        self, codes: Sequence[str], *, sessions: Sequence[str | None] | None = None, timeout: float | None = None
    ) -> list[ExecutionResult]:
        sessions = list(sessions) if sessions is not None else [None] * len(codes)
        programs = [
            self.latency.prefix() + cort_replay_program(self.history.get(s, []) if s else [], c)
            for c, s in zip(codes, sessions)
        ]
        timeout = timeout or self.timeout
        t = time.perf_counter()
        pool = multiprocessing.get_context("fork").Pool(processes=min(len(codes), self.workers))
        self.pool_s += time.perf_counter() - t
        results = []
        try:
            handles = [pool.apply_async(_exec_program, (p,)) for p in programs]
            for h in handles:
                try:
                    status, stdout, err, dt = h.get(timeout=timeout)
                except multiprocessing.TimeoutError:
                    results.append(ExecutionResult("timeout", duration_s=timeout))
                    continue
                error = ExecutionError(*err) if err else None
                results.append(ExecutionResult(status, stdout=stdout, error=error, duration_s=dt))  # type: ignore[arg-type]
        finally:
            t = time.perf_counter()
            pool.terminate()
            pool.join()
            self.pool_s += time.perf_counter() - t
        for c, s, r in zip(codes, sessions, results):
            if s:
                self.history[s].append((c, result_text(r)))
        return results

    def run(self, code: str, *, session: str | None = None, timeout: float | None = None) -> ExecutionResult:
        return self.run_many([code], sessions=[session], timeout=timeout)[0]

    def open_session(self) -> str:
        sid = uuid.uuid4().hex
        self.history[sid] = []
        return sid

    def close_session(self, session: str) -> None:
        self.history.pop(session, None)


# -- measurement ----------------------------------------------------------------------------------------------------
class CountingBackend(HFBackend):
    """``HFBackend`` that records every call: rows, decoding steps, context tokens, seconds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[dict[str, float]] = []

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop_strings: Sequence[str]) -> Any:
        t = time.perf_counter()
        outs = super().generate(prompts, sampling, stop_strings)
        self.log.append(
            {
                "rows": len(prompts),
                "steps": max(len(o.token_ids) for o in outs),  # every row is decoded for as long as the longest
                "sampled": sum(len(o.token_ids) for o in outs),
                "context": sum(len(p) for p in prompts),
                "seconds": time.perf_counter() - t,
            }
        )
        return outs


@dataclass
class Run:
    seconds: float
    sampled: int
    trajectories: int
    calls: int = 0
    tool_tokens: int = 0
    log: list[dict[str, float]] = field(default_factory=list)
    pool_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.sampled / self.seconds


@dataclass
class Setup:
    model: Any
    tokenizer: Any
    prompts: list[list[int]]
    samples: int
    config: RolloutConfig
    latency_s: float
    tool_workers: int
    sandbox: LocalSandbox

    def engine(self, sandbox: Any, schedule: str, batch_wait: float = 0.0) -> RolloutEngine:
        config = replace(self.config, schedule=schedule, batch_wait=batch_wait)  # type: ignore[arg-type]
        return RolloutEngine(CountingBackend(self.model, self.tokenizer), self.tokenizer, CoRTFormat(), sandbox, config)


def run_engine(s: Setup, schedule: str, fresh_pool: bool, seed: int, batch_wait: float = 0.0) -> Run:
    latency = Latency(s.latency_s, seed)
    sandbox: Any = (
        FreshPoolSandbox(s.tool_workers, latency, timeout=s.config.timeout or 5.0)
        if fresh_pool
        else DelayedSandbox(s.sandbox, latency)
    )
    engine = s.engine(sandbox, schedule, batch_wait)
    torch.manual_seed(seed)
    t = time.perf_counter()
    trajs = engine.generate(s.prompts, n=s.samples)
    seconds = time.perf_counter() - t
    return Run(
        seconds=seconds,
        sampled=sum(tr.num_model_tokens for tr in trajs),
        trajectories=len(trajs),
        calls=sum(len(tr.tool_calls) for tr in trajs),
        tool_tokens=sum(tr.num_tool_tokens for tr in trajs),
        log=engine.backend.log,  # type: ignore[attr-defined]
        pool_s=getattr(sandbox, "pool_s", 0.0),
    )


@torch.no_grad()
def run_pure(s: Setup, tokens_per_row: int, seed: int) -> Run:
    """(a): the same prompts, one ``generate`` call, exactly ``tokens_per_row`` sampled tokens per row, no tools."""
    rows = [p for p in s.prompts for _ in range(s.samples)]
    width = max(len(p) for p in rows)
    pad = s.tokenizer.pad_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(rows):
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    sampling = s.config.sampling
    torch.manual_seed(seed)
    t = time.perf_counter()
    out = s.model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=tokens_per_row,
        min_new_tokens=tokens_per_row,
        do_sample=True,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        pad_token_id=pad,
    )
    seconds = time.perf_counter() - t
    sampled = (out[:, width:] != pad).sum().item()
    return Run(seconds=seconds, sampled=int(sampled), trajectories=len(rows))


CONTENDERS = ["engine (async)", "engine (rounds)", "(b) CoRT/ToRA loop", "(a) pure generation"]


def bench(s: Setup, repeats: int, waits: Sequence[float]) -> tuple[dict[str, list[Run]], dict[float, list[Run]]]:
    """Every contender ``repeats`` times, interleaved; then the async engine with each ``batch_wait`` in ``waits``."""
    runs: dict[str, list[Run]] = {c: [] for c in CONTENDERS}
    wait_runs: dict[float, list[Run]] = {w: [] for w in waits}
    for rep in range(repeats):
        seed = 1000 + rep
        tools = CONTENDERS[:3]
        for name in tools[rep % 3 :] + tools[: rep % 3]:  # the order rotates each repeat
            if name == "engine (async)":
                runs[name].append(run_engine(s, "async", fresh_pool=False, seed=seed))
            elif name == "engine (rounds)":
                runs[name].append(run_engine(s, "rounds", fresh_pool=False, seed=seed))
            else:
                runs[name].append(run_engine(s, "rounds", fresh_pool=True, seed=seed))
        # (a) samples as many tokens per trajectory as this repeat's async engine did.
        engine = runs["engine (async)"][-1]
        runs[CONTENDERS[3]].append(run_pure(s, round(engine.sampled / engine.trajectories), seed))
        for w in waits:
            wait_runs[w].append(run_engine(s, "async", fresh_pool=False, seed=seed, batch_wait=w))
    return runs, wait_runs


def bench_sweep(
    s: Setup, configs: Sequence[tuple[int, int]], repeats: int
) -> list[tuple[int, int, list[Run], list[Run]]]:
    """The async engine and (b) at other ``(latency ms, executions at once)`` settings, interleaved."""
    out = []
    for latency_ms, workers in configs:
        with LocalSandbox(timeout=5.0, workers=workers) as sandbox:
            c = replace(s, latency_s=latency_ms / 1000, tool_workers=workers, sandbox=sandbox)
            run_engine(replace(c, prompts=c.prompts[:2], samples=2), "async", fresh_pool=False, seed=0)  # warm up
            engine: list[Run] = []
            cort: list[Run] = []
            for rep in range(repeats):
                seed = 1000 + rep
                for fresh_pool in (False, True) if rep % 2 == 0 else (True, False):
                    if fresh_pool:
                        cort.append(run_engine(c, "rounds", fresh_pool=True, seed=seed))
                    else:
                        engine.append(run_engine(c, "async", fresh_pool=False, seed=seed))
            out.append((latency_ms, workers, engine, cort))
    return out


# -- report ---------------------------------------------------------------------------------------------------------
def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(a: list[Run], b: list[Run]) -> float:
    """Median over repeats of the throughput ratio a / b (paired by repeat)."""
    return med([x.rate / y.rate for x, y in zip(a, b)])


def generation_stats(runs: list[Run]) -> dict[str, float]:
    calls = [c for r in runs for c in r.log]
    gen_s = sum(c["seconds"] for c in calls)
    wall = sum(r.seconds for r in runs)
    return {
        "calls": len(calls) / len(runs),
        "rows": statistics.mean(c["rows"] for c in calls),
        "gen_share": gen_s / wall,
        "useful": sum(c["sampled"] for c in calls) / sum(c["rows"] * c["steps"] for c in calls),
        "context": sum(c["context"] for c in calls) / len(runs),
        "gen_rate": sum(c["sampled"] for c in calls) / gen_s,
    }


def versions() -> str:
    import importlib.metadata as md

    return ", ".join(f"{n} {md.version(n)}" for n in ("torch", "transformers"))


def report(
    s: Setup,
    runs: dict[str, list[Run]],
    wait_runs: dict[float, list[Run]],
    sweep: list[tuple[int, int, list[Run], list[Run]]],
    args: Any,
    elapsed: float,
) -> str:
    cfg = s.config
    engine = runs["engine (async)"]
    n_params = sum(p.numel() for p in s.model.parameters())
    lines = [
        f"## Rollout ({os.cpu_count()} cores, Python {platform.python_version()})",
        "",
        f"Command: `{' '.join(['python benchmarks/rollout.py', *args.argv])}` ({elapsed:.0f} s; {versions()}; "
        f"torch threads {torch.get_num_threads()})",
        "",
        f"Tiny Qwen2 ({n_params / 1e6:.2f}M parameters, float32), briefly warm-started on code traces (the tests' "
        f"policy, from the cache); {len(s.prompts)} calculator prompts × {s.samples} samples = "
        f"{len(s.prompts) * s.samples} trajectories per rollout; temperature {cfg.sampling.temperature:g}; at most "
        f"{cfg.max_calls} executions, {cfg.max_total_tokens} completion tokens and {cfg.max_tokens_per_call} tokens "
        f"per round per trajectory. Every executed program first sleeps a seeded random 0–{args.latency_ms} ms (the "
        f"same sequence of delays for every contender), inside the sandbox; both the `LocalSandbox` and the fresh "
        f"pool run at most {s.tool_workers} executions at once. {len(engine)} repeats, contenders interleaved; "
        "medians. Throughput counts sampled tokens (interpreter output excluded) over the wall time of the rollout.",
        "",
        "| contender | sampled tokens | tool calls | wall s | sampled tokens/s (min – max) | engine (async) is |",
        "|---|---|---|---|---|---|",
    ]
    for name in CONTENDERS:
        rs = runs[name]
        rates = [r.rate for r in rs]
        vs = "—" if name == CONTENDERS[0] else f"{ratio(engine, rs):.2f}x"
        calls = "0" if name == CONTENDERS[3] else f"{med([r.calls for r in rs]):.0f}"
        lines.append(
            f"| {name} | {med([r.sampled for r in rs]):.0f} | {calls} | {med([r.seconds for r in rs]):.2f} | "
            f"{med(rates):,.0f} ({min(rates):,.0f} – {max(rates):,.0f}) | {vs} |"
        )
    ra, rb = ratio(engine, runs[CONTENDERS[3]]), ratio(engine, runs[CONTENDERS[2]])
    lines += [
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| tool-interleaved ≥ 0.8x pure generation (a) | {ra:.2f}x | {'met' if ra >= 0.8 else '**not met**'} |",
        f"| ≥ 2x the round-synchronous fresh-pool loop (b) | {rb:.2f}x | {'met' if rb >= 2 else '**not met**'} |",
        "",
        "Where the time goes (per rollout, averaged over repeats; *useful* = sampled tokens / (rows × decoding steps) "
        "of the backend calls: HF `generate` keeps decoding every row of a call until its longest row stops):",
        "",
        "| contender | backend calls | rows per call | generating | useful | context tokens prefilled | "
        "tokens/s while generating |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in CONTENDERS[:3]:
        g = generation_stats(runs[name])
        lines.append(
            f"| {name} | {g['calls']:.1f} | {g['rows']:.1f} | {100 * g['gen_share']:.0f}% of the wall time | "
            f"{100 * g['useful']:.0f}% | {g['context']:,.0f} | {g['gen_rate']:,.0f} |"
        )
    pure = runs[CONTENDERS[3]]
    lines.append(
        f"| {CONTENDERS[3]} | 1 | {pure[0].trajectories} | 100% | 100% | "
        f"{sum(len(p) for p in s.prompts) * s.samples:,} | {med([r.rate for r in pure]):,.0f} |"
    )
    pool_s = med([r.pool_s for r in runs[CONTENDERS[2]]])
    lines += ["", f"- (b) spent {pool_s:.2f} s per rollout starting and stopping its per-round pools."]
    if sweep:
        lines += [
            "",
            "The async engine against (b) at other tool latencies and execution concurrencies (the same for both "
            f"contenders), {len(sweep[0][2])} repeats each, interleaved:",
            "",
            "| tool latency | executions at once | engine (async) tokens/s | (b) tokens/s | engine (async) is | "
            "(b) generating |",
            "|---|---|---|---|---|---|",
        ]
        for latency_ms, workers, e, b in [(args.latency_ms, s.tool_workers, engine, runs[CONTENDERS[2]]), *sweep]:
            e_rate, b_rate = med([r.rate for r in e]), med([r.rate for r in b])
            lines.append(
                f"| 0–{latency_ms} ms | {workers} | {e_rate:,.0f} | {b_rate:,.0f} | {ratio(e, b):.2f}x | "
                f"{100 * generation_stats(b)['gen_share']:.0f}% of the wall time |"
            )
    if wait_runs:
        lines += [
            "",
            "Other `RolloutConfig.batch_wait` values for the async engine (how long it waits for more executions to "
            "come back before generating for the trajectories already ready; the default 0 generates at once), same "
            "prompts and seeds:",
            "",
            "| batch_wait | sampled tokens/s | vs 0 | backend calls | rows per call | generating |",
            "|---|---|---|---|---|---|",
        ]
        g = generation_stats(engine)
        lines.append(
            f"| 0 (default) | {med([r.rate for r in engine]):,.0f} | 1.00x | {g['calls']:.1f} | {g['rows']:.1f} | "
            f"{100 * g['gen_share']:.0f}% |"
        )
        for w, rs in wait_runs.items():
            g = generation_stats(rs)
            lines.append(
                f"| {w * 1000:.0f} ms | {med([r.rate for r in rs]):,.0f} | {ratio(rs, engine):.2f}x | "
                f"{g['calls']:.1f} | {g['rows']:.1f} | {100 * g['gen_share']:.0f}% |"
            )
    lines += ["", *analysis(s, runs, sweep)]
    return "\n".join(lines) + "\n"


def analysis(s: Setup, runs: dict[str, list[Run]], sweep: list[tuple[int, int, list[Run], list[Run]]]) -> list[str]:
    """What the figures say about the two targets, from this run's numbers."""
    e, b = generation_stats(runs[CONTENDERS[0]]), generation_stats(runs[CONTENDERS[2]])
    pure = runs[CONTENDERS[3]]
    rows = pure[0].trajectories
    pure_context = sum(len(p) for p in s.prompts) * s.samples
    best = max(
        [(ratio(runs[CONTENDERS[0]], runs[CONTENDERS[2]]), generation_stats(runs[CONTENDERS[2]])["gen_share"])]
        + [(ratio(en, co), generation_stats(co)["gen_share"]) for _, _, en, co in sweep]
    )
    return [
        "What the figures say:",
        "",
        f"- **(a) pure generation.** The async engine spends {100 * e['gen_share']:.0f}% of its wall time "
        f"generating and {100 - 100 * e['gen_share']:.0f}% waiting with every trajectory's code running (the "
        "programs sleep up to 300 ms each). Even its generating time is slow against pure generation because of "
        f"how HF generates with tools: its backend calls average {e['rows']:.1f} rows (pure generation: one call "
        f"of {rows}), only "
        f"{100 * e['useful']:.0f}% of the decoded row-steps are sampled tokens (HF `generate` is static batching: a "
        "row that closes a code call after a few dozen tokens keeps being decoded until the call's longest row "
        f"stops, up to {s.config.max_tokens_per_call} tokens), and it prefills {e['context']:,.0f} context tokens "
        f"per rollout against {pure_context:,} (each round re-encodes the whole context: no KV cache survives a tool "
        f"call). While generating it samples {e['gen_rate']:,.0f} tokens/s against "
        f"{med([r.rate for r in pure]):,.0f} for one {rows}-row call. A schedule cannot recover this; a backend "
        "can: continuous batching (a row leaves the batch when it stops and joins when its output is back, "
        "mid-call) with the KV cache kept across tool calls (prefix caching), e.g. vLLM's or SGLang's asynchronous "
        "engine API behind the same engine loop. That is a backend change, not made here.",
        f"- **(b) round-synchronous, fresh pool per round.** (b) generates {100 * b['gen_share']:.0f}% of its wall "
        "time; the rest it waits on tools: each round on its slowest execution (or on the round's total tool time / "
        "execution slots, when calls outnumber slots), plus pool start-up. The async engine overlaps that with "
        "generation, so it needs about max(G, tool time / slots) where (b) needs G + its waits: the gain is large "
        "when (b)'s waits are long against its generation (slow or very uneven tools, many slots) and small when "
        "generation dominates, as with this HF backend at short latencies — unless the async engine also "
        f"generated faster, which it does not here. Best ratio in this run: {best[0]:.2f}x, where (b) generated "
        f"{100 * best[1]:.0f}% of its wall time.",
    ]


def load_policy(tokenizer: Any) -> Any:
    from lightning_cort.recipes._common import ModelConfig, WarmupConfig, warm_start
    from lightning_cort.tasks import CalculatorTask

    # The tests' small warm start (tests/conftest.py SMALL_WARMUP; cached): a policy that writes code calls.
    warmup = WarmupConfig(examples=1200, epochs=3, lr=3e-3, batch_size=32)
    model, _ = warm_start(tokenizer, ModelConfig(), warmup, CalculatorTask(digits=3, seed=0), CoRTFormat(), 0, False)
    return model.eval()


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small batch, one repeat; prints only")
    ap.add_argument("--no-docs", action="store_true", help="print only, do not update docs/benchmarks.md")
    ap.add_argument("--prompts", type=int, default=8, help="distinct prompts per rollout")
    ap.add_argument("--samples", type=int, default=8, help="trajectories per prompt")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of every contender")
    ap.add_argument("--latency-ms", type=int, default=300, help="executions sleep a random 0..this many ms")
    ap.add_argument(
        "--tool-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="executions at once, for LocalSandbox and for the fresh pool (default: cores, as CoRT's pool)",
    )
    ap.add_argument(
        "--batch-waits",
        default="0.05,0.3",
        help="comma-separated other batch_wait values (seconds) to measure for the async engine ('' for none)",
    )
    ap.add_argument(
        "--sweep",
        default="1000:2,1000:16,300:16",
        help="other LATENCY_MS:TOOL_WORKERS settings at which to compare the async engine with (b) ('' for none)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: with 2 threads on a shared 2-core machine HF generation is erratic)",
    )
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.prompts, args.samples, args.repeats = 4, 4, 1
    waits = [float(w) for w in args.batch_waits.split(",") if w.strip()] if not args.quick else []
    sweep_configs = [tuple(int(v) for v in c.split(":")) for c in args.sweep.split(",") if c.strip()]
    sweep_configs = [] if args.quick else sweep_configs

    from lightning_cort.models.tiny import tiny_tokenizer
    from lightning_cort.tasks import CalculatorTask, build_prompt

    started = time.perf_counter()
    tokenizer = tiny_tokenizer()
    model = load_policy(tokenizer)
    problems = CalculatorTask(digits=3, seed=0).problems("test", args.prompts)
    config = RolloutConfig(
        max_calls=3,
        max_total_tokens=256,
        max_tokens_per_call=128,
        timeout=5.0,
        sampling=SamplingConfig(temperature=1.0),
    )
    with LocalSandbox(timeout=5.0, workers=args.tool_workers) as sandbox:
        s = Setup(model, tokenizer, [], args.samples, config, args.latency_ms / 1000, args.tool_workers, sandbox)
        s.prompts = s.engine(sandbox, "async").encode_prompts([build_prompt(p.question) for p in problems])
        warm = replace(s, prompts=s.prompts[:2], samples=2)
        run_engine(warm, "async", fresh_pool=False, seed=0)  # warm up torch and the sandbox
        runs, wait_runs = bench(s, args.repeats, waits)
    sweep = bench_sweep(s, sweep_configs, args.repeats)  # type: ignore[arg-type]
    section = report(s, runs, wait_runs, sweep, args, time.perf_counter() - started)
    log(section)
    if not args.quick and not args.no_docs:
        write_section("Rollout", section)
        log("(written to docs/benchmarks.md)")


if __name__ == "__main__":
    main()
