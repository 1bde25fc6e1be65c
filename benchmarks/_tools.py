"""The tool side of ``benchmarks/rollout.py``: seeded tool latency, and CoRT's executor (a fresh process pool per
round), contender (b)."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import random
import threading
import time
import traceback
import uuid
from collections.abc import Sequence

from lightning_cort.formats.base import result_text
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
