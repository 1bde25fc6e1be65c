r"""Many answers checked at once: :class:`AnswerChecker` runs :func:`~lightning_cort.answers.check_answer`'s
math-verify step in a pool of worker processes with a wall-clock limit per item enforced from outside (an item that
overruns has its worker killed and counts as incorrect; the other items are still checked). See
:mod:`lightning_cort.answers` for what is compared and how.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Literal

from lightning_cort.answers import _MODES, Mode, _math_verify, _prepare

__all__ = ["AnswerChecker", "CheckerStats"]

_NO_ITEM = -1
_slot = -1
_running: Any = None  # shared per-slot token of the item being checked (_NO_ITEM: idle)
_started: Any = None  # shared per-slot time.monotonic() at which that item started
_verifier: Callable[[str, str], bool] | None = None


def _init_worker(
    counter: Any, running: Any, started: Any, pids: Any, memory_mb: int, verifier: Callable[[str, str], bool] | None
) -> None:
    global _slot, _running, _started, _verifier
    _verifier = verifier
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled": the pool enforces it
    if memory_mb > 0:
        import resource

        limit = memory_mb << 20
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _math_verify("cort", r"\boxed{\frac{1}{2}}", "$0.5$")  # import and warm math-verify and sympy once
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if slot < len(running):
        _slot, _running, _started = slot, running, started
        pids[slot] = os.getpid()


def _run_chunk(chunk: list[tuple[int, str, str, str]]) -> list[bool]:
    out = []
    for token, mode, text, gold in chunk:
        if _slot >= 0:
            _started[_slot] = time.monotonic()  # before the token: whoever sees the token sees its start
            _running[_slot] = token
        try:
            out.append(bool(_verifier(text, gold)) if _verifier is not None else _math_verify(mode, text, gold))
        except Exception:  # includes MemoryError under the address-space limit
            out.append(False)
    if _slot >= 0:
        _running[_slot] = _NO_ITEM
    return out


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class CheckerStats:
    """Counters of an :class:`AnswerChecker` since it was created."""

    checked: int = 0
    """Items checked."""
    fast_path: int = 0
    """Items decided without math-verify."""
    timeouts: int = 0
    """Items whose worker was killed at the time limit (counted incorrect)."""
    crashes: int = 0
    """Items that crashed their worker twice, the second time alone (counted incorrect)."""
    restarts: int = 0
    """Times the pool was replaced after a worker was killed or died."""


class _Pool:
    """One ProcessPoolExecutor plus the shared slots its workers report their current item in."""

    def __init__(self, workers: int, context: Any, memory_mb: int, verifier: Callable[[str, str], bool] | None) -> None:
        slots = workers + 4
        self.running = context.RawArray("q", [_NO_ITEM] * slots)
        self.started = context.RawArray("d", slots)
        self.pids = context.RawArray("q", slots)
        counter = context.Value("i", 0)
        self.executor = ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(counter, self.running, self.started, self.pids, memory_mb, verifier),
        )

    def running_items(self) -> list[tuple[int, float, int]]:
        """``(token, started, pid)`` of the items being checked now."""
        out = []
        for slot in range(len(self.running)):
            token = self.running[slot]
            started = self.started[slot]
            if token != _NO_ITEM and self.running[slot] == token:
                out.append((token, started, self.pids[slot]))
        return out

    def kill(self, token: int) -> bool:
        """SIGKILL the worker checking ``token``; whether one was."""
        for slot in range(len(self.running)):
            if self.running[slot] == token and self.pids[slot] > 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pids[slot], signal.SIGKILL)
                    return True
        return False

    def shutdown(self, *, kill_running: bool) -> None:
        """Stops the workers; ``kill_running`` first kills those still on an item (which shutdown would wait for).
        Not after a break: those workers are gone, and their pids may already belong to other processes."""
        if kill_running:
            for token, _, _ in self.running_items():
                self.kill(token)
        self.executor.shutdown(wait=True, cancel_futures=True)


class _Batch:
    """Book-keeping of one :meth:`AnswerChecker.check_many` call. Jobs are ``(token, mode, text, gold_for_parse)``."""

    def __init__(self) -> None:
        self.index: dict[int, int] = {}  # token -> item index
        self.todo: deque[tuple[int, str, str, str]] = deque()
        self.suspects: deque[tuple[int, str, str, str]] = deque()  # were running when a worker died by itself
        self.suspected: set[int] = set()
        self.in_flight: dict[Future[list[bool]], list[tuple[int, str, str, str]]] = {}
        self.killed: set[int] = set()  # tokens whose worker was killed at the time limit
        self.verdicts: dict[int, bool] = {}

    def record(self, chunk: list[tuple[int, str, str, str]], values: list[bool]) -> None:
        for (token, *_), value in zip(chunk, values):
            self.verdicts[self.index[token]] = value

    def requeue(self, chunk: list[tuple[int, str, str, str]]) -> None:
        for job in reversed(chunk):
            (self.suspects if job[0] in self.suspected else self.todo).appendleft(job)


class AnswerChecker:
    r"""Checks many ``(generation, gold)`` pairs in a pool of worker processes, each item under a wall-clock limit.

    The fast path (:func:`check_answer`) runs in the calling process; the rest goes to the workers (started with
    ``spawn`` or ``forkserver``, never ``fork``: the caller may be a trainer with threads; each worker imports
    math-verify once). Each worker reports which item it is on and since when in shared memory, so the limit counts
    from the moment an item starts, not while it waits in the queue. A worker still on an item at ``timeout`` is
    killed with SIGKILL (which also stops C code that ignores signals), the item counts as incorrect, the broken pool
    is replaced and the other unfinished items are checked again. A worker that dies by itself (segfault, out of
    memory) makes the items it was on suspects: they are retried one at a time, and one that crashes alone counts as
    incorrect. Results come back in input order.

    Usable from several threads: each call checks its batch with the whole pool, and calls are served one at a time.
    As with any spawned worker, a script that creates one needs an ``if __name__ == "__main__":`` guard.

    Example::

        with AnswerChecker(mode="cort", timeout=5) as checker:
            correct = checker.check_many(zip(generations, golds))

    Args:
        mode: ``"cort"`` (math-verify over the whole generation, CoRT's evaluation) or ``"strict"`` (the last
            final ``\boxed{}`` of the response, CoRT's reward); see :func:`check_answer`.
        timeout: Wall-clock limit per item, in seconds, counted in the worker from the item's start (math-verify's
            own default limits are 5 s per parse and per comparison; CoRT's scoring allows 30 s per example).
        workers: Worker processes (default: the CPU cores this process may use).
        start_method: ``"forkserver"`` (default where available) or ``"spawn"``.
        fast_path: Decide plain numbers and single words in the calling process without math-verify.
        memory_mb: Address-space limit of each worker, so a runaway sympy computation fails with ``MemoryError``
            (counted incorrect) instead of exhausting the machine; ``0``: none.
        chunk_size: Most items sent to a worker at once (fewer round trips; the limit still applies per item).
        verifier: Replaces math-verify in the workers for the items the fast path leaves: called with the text to
            check (the whole generation in ``cort`` mode, the normalised boxed answer in ``strict`` mode) and the
            normalised gold wrapped in ``$...$``. Must be a module-level function (it is pickled by name).
        preload: With ``forkserver``, have the fork server import math-verify once, so starting (and restarting
            after a kill) a worker is a fork (~0.4 s on 2 busy cores) instead of a sympy import (~1.5 s). This sets
            :mod:`multiprocessing`'s process-wide forkserver preload list and takes effect only if the fork server
            has not started yet.
    """

    def __init__(
        self,
        mode: Mode = "cort",
        *,
        timeout: float = 5.0,
        workers: int | None = None,
        start_method: Literal["forkserver", "spawn"] | None = None,
        fast_path: bool = True,
        memory_mb: int = 4096,
        chunk_size: int = 8,
        verifier: Callable[[str, str], bool] | None = None,
        preload: bool = True,
    ) -> None:
        methods = multiprocessing.get_all_start_methods()
        start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        errors = []
        if mode not in _MODES:
            errors.append(f"mode must be one of {_MODES}, got {mode!r}")
        if not timeout > 0:
            errors.append(f"timeout must be > 0, got {timeout!r}")
        if workers is not None and workers < 1:
            errors.append(f"workers must be >= 1, got {workers!r}")
        if start_method not in ("forkserver", "spawn") or start_method not in methods:
            errors.append(f"start_method must be 'forkserver' or 'spawn' (and available here), got {start_method!r}")
        if memory_mb < 0:
            errors.append(f"memory_mb must be >= 0, got {memory_mb!r}")
        if chunk_size < 1:
            errors.append(f"chunk_size must be >= 1, got {chunk_size!r}")
        if errors:
            raise ValueError("invalid AnswerChecker arguments:\n  " + "\n  ".join(errors))
        self.mode: Mode = mode
        self.timeout = float(timeout)
        self.workers = workers or _default_workers()
        self.start_method = start_method
        self.fast_path = fast_path
        self.memory_mb = memory_mb
        self.chunk_size = chunk_size
        self.verifier = verifier
        self.stats = CheckerStats()
        self._context = multiprocessing.get_context(start_method)
        if preload and start_method == "forkserver":
            self._context.set_forkserver_preload(["math_verify", __name__])
        self._lock = threading.Lock()
        self._pool: _Pool | None = None
        self._closed = False
        self._next_token = 0

    def __enter__(self) -> AnswerChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self, prediction_text: str, gold: str) -> bool:
        """Checks one generation; see :meth:`check_many`.

        Args:
            prediction_text: The model's whole generation.
            gold: The gold answer as stored in the benchmark.

        Returns:
            ``True`` when the answer is correct.
        """
        return self.check_many([(prediction_text, gold)])[0]

    def check_many(self, pairs: Iterable[tuple[str, str]]) -> list[bool]:
        """Checks ``(generation, gold)`` pairs; an item that overruns ``timeout`` or crashes its worker is incorrect.

        Args:
            pairs: ``(prediction_text, gold)`` per item: the whole generation and the gold as stored.

        Returns:
            One verdict per pair, in input order.
        """
        items = list(pairs)
        results: list[bool | None] = [None] * len(items)
        jobs: list[tuple[int, str, str, str]] = []
        for i, (prediction_text, gold) in enumerate(items):
            prepared = _prepare(prediction_text, gold, self.mode, self.fast_path)
            if isinstance(prepared, bool):
                results[i] = prepared
            else:
                jobs.append((i, *prepared))
        with self._lock:
            if self._closed:
                raise RuntimeError("AnswerChecker is closed")
            self.stats.checked += len(items)
            self.stats.fast_path += len(items) - len(jobs)
            if jobs:
                try:
                    verdicts = self._run(jobs)
                except BaseException:
                    # Interrupted (e.g. KeyboardInterrupt): drop the pool with its unfinished work.
                    if self._pool is not None:
                        self._pool.shutdown(kill_running=True)
                        self._pool = None
                    raise
                for i, verdict in verdicts.items():
                    results[i] = verdict
        return [bool(r) for r in results]

    def close(self) -> None:
        """Stops the workers (killing any still on an item). Idempotent."""
        with self._lock:
            self._closed = True
            if self._pool is not None:
                self._pool.shutdown(kill_running=True)
                self._pool = None

    # ---------------------------------------------------------------------------------------------------- helpers

    def _ensure_pool(self) -> _Pool:
        if self._pool is None:
            self._pool = _Pool(self.workers, self._context, self.memory_mb, self.verifier)
        return self._pool

    def _run(self, jobs: list[tuple[int, str, str, str]]) -> dict[int, bool]:
        """Verdicts by item index for the jobs ``(index, mode, text, gold_for_parse)`` that need math-verify."""
        batch = _Batch()
        for index, *job in jobs:
            batch.index[self._next_token] = index
            batch.todo.append((self._next_token, *job))
            self._next_token += 1
        idle_breaks = 0
        while batch.todo or batch.suspects or batch.in_flight:
            pool = self._ensure_pool()
            if self._submit(pool, batch) and self._collect(pool, batch):
                continue
            # The pool is broken (a worker was killed or died): settle its items and start a new one.
            if self._recover(pool, batch):
                idle_breaks = 0
            else:
                idle_breaks += 1
                if idle_breaks > 3:
                    raise RuntimeError("AnswerChecker workers keep dying before checking anything")
            self._pool = None
            pool.shutdown(kill_running=False)
            self.stats.restarts += 1
        return batch.verdicts

    def _submit(self, pool: _Pool, batch: _Batch) -> bool:
        """Keeps every worker fed (two chunks each); suspects run alone. ``False`` when the pool is broken."""
        while batch.suspects or batch.todo:
            if batch.suspects:
                if batch.in_flight:
                    return True
                chunk = [batch.suspects.popleft()]
            elif len(batch.in_flight) < 2 * self.workers:
                size = max(1, min(self.chunk_size, len(batch.todo) // (2 * self.workers)))
                chunk = [batch.todo.popleft() for _ in range(min(size, len(batch.todo)))]
            else:
                return True
            try:
                batch.in_flight[pool.executor.submit(_run_chunk, chunk)] = chunk
            except BrokenProcessPool:
                batch.requeue(chunk)
                return False
        return True

    def _collect(self, pool: _Pool, batch: _Batch) -> bool:
        """Takes finished results and kills workers past the limit. ``False`` when the pool is broken."""
        done, _ = wait(batch.in_flight, timeout=self._poll_interval(pool), return_when=FIRST_COMPLETED)
        for future in done:
            error = future.exception()
            if isinstance(error, BrokenProcessPool):
                return False  # every unfinished chunk is settled by _recover
            chunk = batch.in_flight.pop(future)
            batch.record(chunk, [False] * len(chunk) if error is not None else future.result())
        now = time.monotonic()
        for token, started, _ in pool.running_items():
            overdue = token in batch.index and token not in batch.killed and now - started > self.timeout
            if overdue and pool.kill(token):
                batch.killed.add(token)
        return not batch.killed

    def _recover(self, pool: _Pool, batch: _Batch) -> bool:
        """Settles the chunks of a broken pool: killed items are incorrect, items that were running when a worker
        died by itself become suspects, the rest are requeued. Whether any item was running (if none ever is, the
        workers die on their own, e.g. while starting)."""
        wait(batch.in_flight, timeout=30.0)  # once the pool breaks, every unfinished future fails at once
        running = {token for token, _, _ in pool.running_items()}
        explained = bool(running & batch.killed)
        for future, chunk in batch.in_flight.items():
            if future.done() and future.exception() is None:
                batch.record(chunk, future.result())
                continue
            for job in reversed(chunk):
                token = job[0]
                if token in batch.killed:
                    batch.verdicts[batch.index[token]] = False
                    self.stats.timeouts += 1
                elif not explained and token in running:
                    if token in batch.suspected:  # it crashed its worker again, alone
                        batch.verdicts[batch.index[token]] = False
                        self.stats.crashes += 1
                    else:
                        batch.suspected.add(token)
                        batch.suspects.appendleft(job)
                else:
                    batch.requeue([job])
        batch.in_flight.clear()
        batch.killed.clear()
        return bool(running)

    def _poll_interval(self, pool: _Pool) -> float:
        """Until the earliest deadline of a running item (at most 50 ms: new items may start meanwhile)."""
        now = time.monotonic()
        deadlines = [started + self.timeout - now for _, started, _ in pool.running_items()]
        return max(0.002, min([0.05, *deadlines]))
