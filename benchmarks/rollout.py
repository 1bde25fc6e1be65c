"""Rollout throughput: sampled tokens/s of tool-interleaved rollouts with ``RolloutEngine`` against pure generation
and against CoRT's round-synchronous loop.

Every contender samples from the same tiny policy (the tests' small warm start on code-integrated calculator traces,
cached on disk, so it really writes code calls) on the same prompts, ``--samples`` trajectories each, with the same
limits and sampling; torch uses ``--threads`` intra-op threads. Contenders:

* **engine (continuous)**: ``RolloutEngine`` with the ``continuous`` schedule (the default for ``HFBackend``):
  token-level batching on ``HFDecodeStream``, KV caches kept across tool calls, ``LocalSandbox`` sessions.
* **engine (async)**: the same engine with ``schedule="async"``: one ``generate`` call per batch of ready
  trajectories (what the engine did before the decode stream; still the schedule of backends without one).
* **(b) CoRT/ToRA loop**: round-synchronous (the engine's ``rounds`` schedule, so the limits are identical by
  construction) with CoRT's executor: every round a *fresh* process pool (``multiprocessing`` fork pool of
  ``min(calls, --tool-workers)`` workers, as CoRT's ``batch_apply``) ``exec``-s each call's program with stdout
  captured, the state of a trajectory kept by re-running its earlier blocks (CoRT's "jupyter-like" replay).
* **(a) pure generation**: the same prompts with no tools and no stop strings, on the same decode stream, each row
  sampling exactly as many tokens as its trajectory in this repeat's continuous rollout has (EOS does not end a row
  early): **same lengths** samples the trajectory's whole completion (sampled and interpreter tokens, compared in
  completion tokens/s: the rollout delivers as many tokens to the trainer), **sampled lengths** only its sampled
  tokens (compared in sampled tokens/s: the stricter reading, which charges the engine for encoding the interpreter
  output).
* **(a') one generate call**: one ``model.generate`` over the same prompts with every row sampling the *mean*
  length (``min_new_tokens = max_new_tokens``): perfectly even rows, the most favourable case for static batching.

Tool latency: by default (``--latency-ms 0``) the executions are the model's programs as they are, in the sandbox.
With ``--latency-ms L`` (and in ``--sweep``), every executed program (in every contender) first sleeps ``d`` drawn
uniformly from ``[0, L]`` by a seeded generator (the same sequence for every contender, in the order executions are
submitted); the sleep runs inside the sandbox, so it occupies one of the ``--tool-workers`` execution slots that
both the LocalSandbox and the fresh pool are given.

Throughput counts sampled tokens (``loss_mask == 1``; interpreter output excluded) over the wall time of the whole
``generate`` call. Contenders are interleaved across repeats (order rotated each repeat); medians are reported, and
ratios are medians of the per-repeat ratios.

Prints a markdown section; the full run also writes it into docs/benchmarks.md (replacing its "## Rollout" section).

    python benchmarks/rollout.py            # full run (~5 minutes on 2 cores), writes docs/benchmarks.md
    python benchmarks/rollout.py --quick    # smoke run (< 1 minute), prints only
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from _docs import write_section  # benchmarks/ is on sys.path when run as a script
from _tools import DelayedSandbox, FreshPoolSandbox, Latency

from lightning_cort.formats import CoRTFormat
from lightning_cort.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingConfig
from lightning_cort.sandbox import LocalSandbox


# -- measurement ----------------------------------------------------------------------------------------------------
class CountingBackend(HFBackend):
    """``HFBackend`` that records every ``generate`` call (rows, decoding steps, context tokens, seconds) and the
    statistics of its decode streams."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[dict[str, float]] = []
        self.streams: list[Any] = []

    def open_stream(self, sampling: SamplingConfig) -> Any:
        stream = super().open_stream(sampling)
        stream.seconds = 0.0
        step = stream.step

        def timed_step() -> Any:
            t = time.perf_counter()
            try:
                return step()
            finally:
                stream.seconds += time.perf_counter() - t

        stream.step = timed_step
        self.streams.append(stream)
        return stream

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
    lengths: list[int] = field(default_factory=list)  # sampled tokens per trajectory
    completion_lengths: list[int] = field(default_factory=list)  # sampled and interpreter tokens per trajectory
    stream: dict[str, float] = field(default_factory=dict)  # decode-stream statistics
    tool_seconds: float = 0.0  # summed durations of the executions (the sandbox's own timing)

    @property
    def rate(self) -> float:
        """Sampled tokens per second."""
        return self.sampled / self.seconds

    @property
    def completion_rate(self) -> float:
        """Completion tokens (sampled and interpreter output) per second."""
        return (self.sampled + self.tool_tokens) / self.seconds


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

    def engine(
        self, sandbox: Any, schedule: str, batch_wait: float = 0.0, timeout: float | None = None
    ) -> RolloutEngine:
        config = replace(self.config, schedule=schedule, batch_wait=batch_wait, timeout=timeout or self.config.timeout)  # type: ignore[arg-type]
        return RolloutEngine(CountingBackend(self.model, self.tokenizer), self.tokenizer, CoRTFormat(), sandbox, config)


def run_engine(s: Setup, schedule: str, fresh_pool: bool, seed: int, batch_wait: float = 0.0) -> Run:
    latency = Latency(s.latency_s, seed)
    # The policy now and then writes a runaway program (``pow(6236, 58313257865884)``); one timeout stalls a whole
    # rollout for as long as the timeout, in every contender, so it is kept short: 1 s beyond the added latency.
    timeout = 1.0 + s.latency_s
    sandbox: Any = (
        FreshPoolSandbox(s.tool_workers, latency, timeout=timeout) if fresh_pool else DelayedSandbox(s.sandbox, latency)
    )
    engine = s.engine(sandbox, schedule, batch_wait, timeout)
    torch.manual_seed(seed)
    t = time.perf_counter()
    trajs = engine.generate(s.prompts, n=s.samples)
    seconds = time.perf_counter() - t
    backend: CountingBackend = engine.backend  # type: ignore[assignment]
    return Run(
        seconds=seconds,
        sampled=sum(tr.num_model_tokens for tr in trajs),
        trajectories=len(trajs),
        calls=sum(len(tr.tool_calls) for tr in trajs),
        tool_tokens=sum(tr.num_tool_tokens for tr in trajs),
        log=backend.log,
        pool_s=getattr(sandbox, "pool_s", 0.0),
        lengths=[tr.num_model_tokens for tr in trajs],
        completion_lengths=[tr.completion_ids.numel() for tr in trajs],
        tool_seconds=sum(c.result.duration_s for tr in trajs for c in tr.tool_calls),
        stream=stream_stats(backend.streams[0]) if backend.streams else {},
    )


def stream_stats(stream: Any) -> dict[str, float]:
    return {
        "steps": stream.steps,
        "forwards": stream.forwards,
        "fed": stream.fed_tokens,
        "seconds": stream.seconds,
        "compactions": stream.compactions,
    }


@torch.no_grad()
def run_pure_stream(s: Setup, lengths: Sequence[int], seed: int) -> Run:
    """(a): the same prompts on the same decode stream without tools or stop strings, row ``i`` sampling exactly
    ``lengths[i]`` tokens (a row that samples EOS early is resumed, so its length is what was asked)."""
    rows = [p for p in s.prompts for _ in range(s.samples)]
    backend = CountingBackend(s.model, s.tokenizer)
    torch.manual_seed(seed)
    t = time.perf_counter()
    stream = backend.open_stream(s.config.sampling)
    left = {}
    for prompt, n in zip(rows, lengths):
        if n > 0:
            handle = stream.add(prompt)
            left[handle] = n
            stream.resume(handle, [], n, ())
    sampled = 0
    while stream.generating:
        for handle, out in stream.step():
            sampled += len(out.token_ids)
            left[handle] -= len(out.token_ids)
            if left[handle] > 0:
                stream.resume(handle, [], left[handle], ())
            else:
                stream.release(handle)
    seconds = time.perf_counter() - t
    return Run(seconds=seconds, sampled=sampled, trajectories=len(rows), stream=stream_stats(stream))


@torch.no_grad()
def run_pure(s: Setup, tokens_per_row: int, seed: int) -> Run:
    """(a'): the same prompts, one ``generate`` call, exactly ``tokens_per_row`` sampled tokens per row, no tools."""
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


CONTENDERS = [
    "engine (continuous)",
    "engine (async)",
    "(b) CoRT/ToRA loop",
    "(a) pure generation, same lengths",
    "(a) pure generation, sampled lengths",
    "(a') one generate call",
]
MAIN, ASYNC, CORT, PURE, PURE_SAMPLED, GENERATE = CONTENDERS


def bench(s: Setup, repeats: int) -> dict[str, list[Run]]:
    """Every contender ``repeats`` times, interleaved (the tool-using ones in an order rotated each repeat; the pure
    ones after them, with this repeat's continuous rollout's lengths)."""
    runs: dict[str, list[Run]] = {c: [] for c in CONTENDERS}
    for rep in range(repeats):
        seed = 1000 + rep
        tools = CONTENDERS[:3]
        for name in tools[rep % 3 :] + tools[: rep % 3]:
            if name == MAIN:
                runs[name].append(run_engine(s, "continuous", fresh_pool=False, seed=seed))
            elif name == ASYNC:
                runs[name].append(run_engine(s, "async", fresh_pool=False, seed=seed))
            else:
                runs[name].append(run_engine(s, "rounds", fresh_pool=True, seed=seed))
        main = runs[MAIN][-1]
        runs[PURE].append(run_pure_stream(s, main.completion_lengths, seed))
        runs[PURE_SAMPLED].append(run_pure_stream(s, main.lengths, seed))
        runs[GENERATE].append(run_pure(s, round(main.sampled / main.trajectories), seed))
    return runs


def bench_sweep(
    s: Setup, configs: Sequence[tuple[int, int]], repeats: int
) -> list[tuple[int, int, list[Run], list[Run], list[Run]]]:
    """The continuous engine, the async engine and (b) at other ``(latency ms, executions at once)`` settings."""
    out = []
    for latency_ms, workers in configs:
        with LocalSandbox(timeout=5.0, workers=workers) as sandbox:
            c = replace(s, latency_s=latency_ms / 1000, tool_workers=workers, sandbox=sandbox)
            run_engine(replace(c, prompts=c.prompts[:2], samples=2), "continuous", fresh_pool=False, seed=0)  # warm-up
            runs: dict[str, list[Run]] = {MAIN: [], ASYNC: [], CORT: []}
            for rep in range(repeats):
                seed = 1000 + rep
                order = [MAIN, ASYNC, CORT]
                for name in order[rep % 3 :] + order[: rep % 3]:
                    schedule = {MAIN: "continuous", ASYNC: "async", CORT: "rounds"}[name]
                    runs[name].append(run_engine(c, schedule, fresh_pool=name == CORT, seed=seed))
            out.append((latency_ms, workers, runs[MAIN], runs[ASYNC], runs[CORT]))
    return out


# -- report ---------------------------------------------------------------------------------------------------------
def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(a: list[Run], b: list[Run]) -> float:
    """Median over repeats of the sampled-token throughput ratio a / b (paired by repeat)."""
    return med([x.rate / y.rate for x, y in zip(a, b)])


def completion_ratio(a: list[Run], b: list[Run]) -> float:
    """Median over repeats of the completion-token throughput ratio a / b (paired by repeat)."""
    return med([x.completion_rate / y.completion_rate for x, y in zip(a, b)])


def generation_stats(runs: list[Run]) -> dict[str, float]:
    calls = [c for r in runs for c in r.log]
    gen_s = sum(c["seconds"] for c in calls)
    wall = sum(r.seconds for r in runs)
    return {
        "calls": len(calls) / len(runs),
        "forwards": sum(c["steps"] for c in calls) / len(runs),  # one per decoding step (prefill included)
        "per_forward": sum(c["sampled"] for c in calls) / sum(c["steps"] for c in calls),
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
    sweep: list[tuple[int, int, list[Run], list[Run], list[Run]]],
    args: Any,
    elapsed: float,
) -> str:
    cfg = s.config
    main = runs[MAIN]
    n_params = sum(p.numel() for p in s.model.parameters())
    latency = (
        "The executions are the model's own programs, run as they are (no added latency)"
        if not args.latency_ms
        else f"Every executed program first sleeps a seeded random 0–{args.latency_ms} ms (the same sequence of "
        "delays for every contender), inside the sandbox"
    )
    lines = [
        f"## Rollout ({os.cpu_count()} cores, Python {platform.python_version()})",
        "",
        f"Command: `{' '.join(['python benchmarks/rollout.py', *args.argv])}` ({elapsed:.0f} s; {versions()}; "
        f"torch threads {torch.get_num_threads()}; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())})",
        "",
        f"Tiny Qwen2 ({n_params / 1e6:.2f}M parameters, float32), briefly warm-started on code traces (the tests' "
        f"policy, from the cache); {len(s.prompts)} calculator prompts × {s.samples} samples = "
        f"{len(s.prompts) * s.samples} trajectories per rollout; temperature {cfg.sampling.temperature:g}; at most "
        f"{cfg.max_calls} executions, {cfg.max_total_tokens} completion tokens and {cfg.max_tokens_per_call} tokens "
        f"per round per trajectory. {latency}; both the `LocalSandbox` and the fresh pool run at most "
        f"{s.tool_workers} executions at once, with a timeout of 1 s beyond the added latency (the policy now and "
        "then writes a runaway program such as `pow(6236, 58313257865884)`, which stalls the rollout it is in for "
        f"the whole timeout, whatever the schedule). {len(main)} repeats, contenders interleaved; medians. "
        "Throughput counts sampled tokens (interpreter output excluded), or completion tokens (sampled and "
        "interpreter output), over the wall time of the rollout.",
        "",
        "| contender | sampled tokens | interpreter tokens | tool calls | wall s | sampled tokens/s (min – max) | "
        "completion tokens/s | engine (continuous) is, in sampled / completion tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in CONTENDERS:
        rs = runs[name]
        rates = [r.rate for r in rs]
        vs = "—" if name == MAIN else f"{ratio(main, rs):.2f}x / {completion_ratio(main, rs):.2f}x"
        tools = name in (MAIN, ASYNC, CORT)
        calls = f"{med([r.calls for r in rs]):.0f}" if tools else "0"
        tool_tokens = f"{med([r.tool_tokens for r in rs]):,.0f}" if tools else "0"
        lines.append(
            f"| {name} | {med([r.sampled for r in rs]):,.0f} | {tool_tokens} | {calls} | "
            f"{med([r.seconds for r in rs]):.2f} | {med(rates):,.0f} ({min(rates):,.0f} – {max(rates):,.0f}) | "
            f"{med([r.completion_rate for r in rs]):,.0f} | {vs} |"
        )
    ra, ra_sampled = completion_ratio(main, runs[PURE]), ratio(main, runs[PURE_SAMPLED])
    varied = [(lat, w, ratio(m, c)) for lat, w, m, _, c in sweep if lat > 0]
    if args.latency_ms:
        varied.insert(0, (args.latency_ms, s.tool_workers, ratio(main, runs[CORT])))
    rb_text = "; ".join(f"{r:.2f}x at 0–{lat} ms, {w} slots" for lat, w, r in varied) or "not measured"
    rb_met = bool(varied) and all(r >= 2 for _, _, r in varied)
    lines += [
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| tool-interleaved ≥ 0.8x pure generation (a), same lengths, completion tokens/s | {ra:.2f}x | "
        f"{'met' if ra >= 0.8 else '**not met**'} |",
        f"| the same, stricter: sampled lengths, sampled tokens/s | {ra_sampled:.2f}x | "
        f"{'met' if ra_sampled >= 0.8 else '**not met**'} |",
        f"| ≥ 2x the round-synchronous fresh-pool loop (b) when tool latency varies | {rb_text} | "
        f"{'met' if rb_met else '**not met**' if varied else ''} |",
        "",
        "Where the time goes (per rollout, averaged over repeats):",
        "",
        "| contender | model forwards | sampled tokens per forward | other tokens encoded | in the model |",
        "|---|---|---|---|---|",
    ]
    for name in (MAIN, PURE, PURE_SAMPLED):
        st = [r.stream for r in runs[name]]
        forwards = statistics.mean(x["forwards"] for x in st)
        sampled = statistics.mean(r.sampled for r in runs[name])
        other = statistics.mean(x["fed"] for x in st) - sampled  # prompts and interpreter output (± a token a row)
        share = sum(x["seconds"] for x in st) / sum(r.seconds for r in runs[name])
        lines.append(
            f"| {name} | {forwards:.0f} ({statistics.mean(x['steps'] for x in st):.0f} steps) | "
            f"{sampled / forwards:.1f} | {max(other, 0):,.0f} | {100 * share:.0f}% of the wall time |"
        )
    for name in (ASYNC, CORT):
        g = generation_stats(runs[name])
        lines.append(
            f"| {name} | {g['forwards']:.0f} ({g['calls']:.1f} `generate` calls of {g['rows']:.1f} rows) | "
            f"{g['per_forward']:.1f} | {g['context']:,.0f} (each call re-encodes its rows' context) | "
            f"{100 * g['gen_share']:.0f}% of the wall time |"
        )
    pool_s = med([r.pool_s for r in runs[CORT]])
    lines += ["", f"- (b) spent {pool_s:.2f} s per rollout starting and stopping its per-round pools."]
    if sweep:
        lines += [
            "",
            "At other tool latencies and execution concurrencies (the same for every contender), "
            f"{len(sweep[0][2])} repeats each, interleaved ((a): completion tokens/s against this run's pure "
            "generation of the same lengths above; *tool bound*: the rollout's summed execution time divided by the "
            "execution slots, a floor no schedule can go under):",
            "",
            "| tool latency | executions at once | continuous tokens/s | async tokens/s | (b) tokens/s | "
            "continuous vs (b) | continuous vs (a) | (b) generating | continuous wall / tool bound |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        pure_rate = med([r.completion_rate for r in runs[PURE]])
        rows = [(args.latency_ms, s.tool_workers, main, runs[ASYNC], runs[CORT]), *sweep]
        for lat, w, m, a, c in rows:
            m_rate = med([r.rate for r in m])
            m_completion = med([r.completion_rate for r in m])
            lines.append(
                f"| {'0–' + str(lat) + ' ms' if lat else 'none added'} | {w} | {m_rate:,.0f} | "
                f"{med([r.rate for r in a]):,.0f} | {med([r.rate for r in c]):,.0f} | {ratio(m, c):.2f}x | "
                f"{m_completion / pure_rate:.2f}x | {100 * generation_stats(c)['gen_share']:.0f}% of the wall time | "
                f"{med([r.seconds / (r.tool_seconds / w) for r in m]):.2f} |"
            )
    lines += ["", *analysis(s, runs, sweep)]
    return "\n".join(lines) + "\n"


def analysis(
    s: Setup, runs: dict[str, list[Run]], sweep: list[tuple[int, int, list[Run], list[Run], list[Run]]]
) -> list[str]:
    """What the figures say about the two targets, from this run's numbers."""
    main, pure, pure_sampled = runs[MAIN], runs[PURE], runs[PURE_SAMPLED]
    st = [r.stream for r in main]
    sampled = statistics.mean(r.sampled for r in main)
    tool_tokens = statistics.mean(r.tool_tokens for r in main)
    steps = statistics.mean(x["steps"] for x in st)
    in_model = sum(x["seconds"] for x in st) / sum(r.seconds for r in main)
    slowest = [
        (
            lat,
            w,
            med([r.completion_rate for r in m]) / med([r.completion_rate for r in pure]),
            med([r.seconds / (r.tool_seconds / w) for r in m]),
            ratio(m, c),
        )
        for lat, w, m, _, c in sweep
        if lat
    ]
    out = [
        "What the figures say:",
        "",
        f"- **(a) pure generation.** With the model's own programs as tools, a continuous rollout delivers its "
        f"completion tokens at {completion_ratio(main, pure):.2f}x the rate of pure generation of the same lengths. "
        f"Counted in sampled tokens only, against pure generation of only the sampled lengths, it is "
        f"{ratio(main, pure_sampled):.2f}x: besides its {sampled:,.0f} sampled tokens the rollout encodes "
        f"{tool_tokens:,.0f} tokens of interpreter output (this briefly trained policy often prints tracebacks) and "
        "attends over contexts that hold them. On this CPU a tiny model's forward costs about the same per token "
        "whether it samples or encodes, so those tokens cost nearly what sampling them would; on a GPU, decoding is "
        "memory-bound and encoding a block of forced tokens costs about one decoding step. The engine took "
        f"{steps:.0f} decode steps against {statistics.mean(r.stream['steps'] for r in pure_sampled):.0f} for the "
        "sampled lengths without tools (each resume encodes only the new output, on the sequence's kept KV cache), "
        f"and spent {100 * in_model:.0f}% of its wall time in the model; the rest is the engine's bookkeeping and "
        "moments when every unfinished trajectory was waiting for its execution. Against (a'), one `generate` call "
        f"whose rows are all exactly the mean sampled length, it reaches {ratio(main, runs[GENERATE]):.2f}x: that "
        "baseline has no tail (the rollouts' lengths vary from a few tokens to the budget, and whatever samples "
        "them, with or without tools, decodes for as many steps as the longest).",
    ]
    if slowest:
        worst = min(slowest, key=lambda x: x[2])
        out.append(
            f"- **Slow tools.** With added latency the rollout is bounded by the tools, not by generation: at "
            f"0–{worst[0]} ms and {worst[1]} slots the continuous engine reaches {worst[2]:.2f}x pure generation, and "
            f"its wall time is {worst[3]:.2f}x the tool bound (summed execution time / slots), under which no "
            f"schedule can go; (b) is {worst[4]:.2f}x slower there. Where the slots are saturated, the gain over (b) "
            "is capped by how much of the slots' time (b) leaves idle waiting for each round's slowest execution."
        )
    out.append(
        "- **(b) round-synchronous, fresh pool per round.** (b) waits for the slowest execution of every round (or "
        "the round's total tool time / slots), starts a pool each round, and each of its `generate` calls decodes "
        "every row until the call's longest row stops, re-encoding the whole context. The continuous engine "
        "overlaps the tools with decoding and encodes each token once."
    )
    return out


def load_policy(tokenizer: Any) -> Any:
    from lightning_cort.models.tiny import TinyConfig
    from lightning_cort.recipes._steps import warm_start
    from lightning_cort.recipes.config import WarmupConfig
    from lightning_cort.tasks import CalculatorTask

    # The tests' small warm start (tests/conftest.py SMALL_WARMUP; cached): a policy that writes code calls.
    warmup = WarmupConfig(examples=1200, epochs=3, lr=3e-3, batch_size=32)
    model, _ = warm_start(tokenizer, TinyConfig(), warmup, CalculatorTask(digits=3, seed=0), CoRTFormat(), 0, False)
    return model.eval()


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small batch, one repeat; prints only")
    ap.add_argument("--no-docs", action="store_true", help="print only, do not update docs/benchmarks.md")
    ap.add_argument("--prompts", type=int, default=8, help="distinct prompts per rollout")
    ap.add_argument("--samples", type=int, default=8, help="trajectories per prompt")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of every contender")
    ap.add_argument(
        "--latency-ms", type=int, default=0, help="executions first sleep a random 0..this many ms (0: none added)"
    )
    ap.add_argument(
        "--tool-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="executions at once, for LocalSandbox and for the fresh pool (default: cores, as CoRT's pool)",
    )
    ap.add_argument(
        "--sweep",
        default="300:2,1000:2,300:16,1000:16",
        help="other LATENCY_MS:TOOL_WORKERS settings at which to compare the engine with (b) ('' for none)",
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
        for schedule in ("continuous", "async"):
            run_engine(warm, schedule, fresh_pool=False, seed=0)  # warm up torch and the sandbox
        runs = bench(s, args.repeats)
    sweep = bench_sweep(s, sweep_configs, args.repeats)  # type: ignore[arg-type]
    section = report(s, runs, sweep, args, time.perf_counter() - started)
    log(section)
    if not args.quick and not args.no_docs:
        write_section("Rollout", section)
        log("(written to docs/benchmarks.md)")


if __name__ == "__main__":
    main()
