"""An E2B cloud sandbox: snippets run in Jupyter kernels inside E2B's Firecracker microVMs.

Design:
    * **One private event loop.** The SDK is used through its ``AsyncSandbox``. :class:`E2BSandbox` runs an asyncio
      event loop in a daemon thread; :meth:`E2BSandbox.run` and :meth:`E2BSandbox.run_many` submit coroutines to it
      and block on the result, so the synchronous API works from any thread (also from one that runs its own event
      loop), and :meth:`E2BSandbox.arun` awaits the same coroutines from the caller's loop. All pool bookkeeping
      happens on that loop, so it needs no locks.
    * **A small pool of reused sandboxes.** E2B allows 20 (Hobby) or 100 (Pro) concurrent sandboxes and a few
      creations per second, and a sandbox takes a while to boot, so at most ``max_sandboxes`` are kept alive and
      reused. They are created lazily (a new one only when every live one is busy), the starts are spaced to at most
      ``max_creations_per_s``, and ``max_concurrency`` bounds the executions in flight. A sandbox in use has its
      lifetime extended (``set_timeout``); an idle one left to reach its lifetime is dropped and replaced on demand.
    * **Sessions are code contexts.** Each session gets its own stateful Jupyter kernel (``create_code_context``) on
      one sandbox of the pool, created on the session's first execution and kept until :meth:`close_session`.
      Executions of one session run one at a time, in submission order. If the session's sandbox dies (killed,
      lifetime reached, unreachable) or its context disappears, the session gets a fresh context on a live sandbox and
      the first result produced there has ``session_restarted=True``: its earlier state is lost (nothing is replayed).
    * **Executions without a session get a fresh context**, removed right after the execution (in the background).
      This costs one extra request per execution but gives every snippet a fresh interpreter, like
      :class:`~lightning_cort.sandbox.local.LocalSandbox`, and lets such snippets run in parallel on one sandbox. (A
      shared default context reset between snippets would be faster, but a reset cannot undo changes to imported
      modules, and one context runs only one snippet at a time.)
    * **Retries.** Errors that leave the code unexecuted are retried with exponential backoff and jitter, up to
      ``max_retries`` times: failures to connect (``httpx.ConnectError``, connect timeouts), E2B rate limits and
      "service busy" answers, and a dead sandbox (which is dropped from the pool and replaced). Errors that may strike
      after the code started (a connection dropped mid-stream, a 5xx) are retried only for executions without a
      session; in a session a retry could run the code twice against its state, so they end the execution as
      ``sandbox_error``.
    * **Results.** Success maps to ``ok`` with stdout and stderr joined from the execution's logs; an exception
      raised by the code to ``error`` (``oom`` for ``MemoryError``) with its name, value and traceback (ANSI colour
      codes removed); the SDK's execution timeout to ``timeout`` (with the output received before it); anything
      infrastructural that survives the retries to ``sandbox_error``, with the failure described in ``error``.
      :meth:`E2BSandbox.run` never raises for these. The only exception it raises is :class:`E2BUnavailableError`
      when the backend cannot start at all (no API key, key rejected, service unreachable). Like ``LocalSandbox``,
      only what the code prints is captured; set ``include_results=True`` to also append the text of the value of a
      trailing expression, which Jupyter displays.

Threat model:
    The code runs in E2B's cloud, in a Firecracker microVM (its own kernel, filesystem and process table), never on
    this machine: host files, processes, memory and credentials are out of its reach. Nothing secret is sent: the
    API key authenticates the SDK's requests to E2B and is not placed in the sandbox's environment, and no
    environment variables of this process are forwarded. Outbound internet access from the sandbox is disabled by
    default (``allow_internet_access=False``). Not covered: executions that share a sandbox share its filesystem,
    processes and CPU/memory, so code of one session can read or disturb files and processes of another session on
    the same sandbox (use ``max_sandboxes`` and one backend per trust domain if that matters); a session's kernel
    may be killed or restarted inside the VM (e.g. by its OOM killer) without the SDK reporting it, in which case
    later cells of that session see a fresh interpreter; the code (and its output) leaves this machine and is
    processed by a third-party service; and the isolation itself is E2B's responsibility, not this module's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from lightning_cort._imports import require
from lightning_cort.sandbox._e2b_support import (  # noqa: F401 - E2BUnavailableError is public here
    _KEY_HELP,
    _T,
    E2BUnavailableError,
    _Capture,
    _classify,
    _closed_result,
    _describe,
    _error_types,
    _execution_result,
    _Kind,
    _serve,
    _Session,
    _Slot,
    _start_failure,
    _stop,
    _timeout_result,
)
from lightning_cort.sandbox.base import ExecutionError, ExecutionResult


class E2BSandbox:
    """Runs snippets in E2B cloud sandboxes (Firecracker microVMs), reusing a small pool of them.

    Args:
        api_key: E2B API key; defaults to the ``E2B_API_KEY`` environment variable.
        timeout: Default wall-clock limit per execution, in seconds.
        max_output_bytes: Cap on captured stdout and on stderr, each.
        max_sandboxes: Most sandboxes kept alive at once (mind the plan's limit: 20 on Hobby, 100 on Pro, shared by
            every process using the key).
        max_concurrency: Most executions in flight at once (defaults to ``4 * max_sandboxes``).
        max_creations_per_s: Most sandbox creations started per second (E2B allows 1 to 5, depending on the plan).
        max_retries: Retries of an execution after a transient failure.
        backoff_s: First retry delay; it doubles on each retry (with jitter) up to ``max_backoff_s``.
        max_backoff_s: Longest retry delay.
        sandbox_lifetime_s: Lifetime of a sandbox, extended while it is in use; an idle sandbox is killed by E2B
            after this long (and its sessions restart).
        request_timeout: Timeout of the SDK's requests (connecting, creating contexts), in seconds.
        template: E2B template to create sandboxes from (defaults to the SDK's code-interpreter template).
        allow_internet_access: Whether the executed code may reach the internet. ``None`` keeps E2B's default.
        include_results: Also append the text of the execution's main result (the value of a trailing expression,
            which Jupyter displays) to stdout. Off by default, to match ``LocalSandbox``, which only captures prints.
        client_factory: Coroutine function creating one sandbox client, called with ``api_key``, ``timeout``
            (lifetime in seconds) and the creation options; defaults to ``e2b_code_interpreter.AsyncSandbox.create``.
            Tests inject a fake here.
        create_kwargs: Extra keyword arguments for ``client_factory`` (e.g. ``metadata``); never put secrets in
            ``envs``: they would be readable by the executed code.
        eager: Start right away (check the key and create the first sandbox) instead of on first use.
        close_timeout_s: How long :meth:`close` waits for the sandboxes to be killed.

    Raises:
        ImportError: Without ``client_factory`` when ``e2b-code-interpreter`` is not installed.
        E2BUnavailableError: With ``eager=True`` when E2B cannot be used (see :meth:`start`).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        timeout: float = 5.0,
        max_output_bytes: int = 1 << 16,
        max_sandboxes: int = 4,
        max_concurrency: int | None = None,
        max_creations_per_s: float = 2.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        sandbox_lifetime_s: int = 300,
        request_timeout: float = 30.0,
        template: str | None = None,
        allow_internet_access: bool | None = False,
        include_results: bool = False,
        client_factory: Callable[..., Awaitable[Any]] | None = None,
        create_kwargs: dict[str, Any] | None = None,
        eager: bool = False,
        close_timeout_s: float = 10.0,
    ) -> None:
        if max_sandboxes < 1:
            raise ValueError(f"max_sandboxes must be at least 1, got {max_sandboxes}")
        if max_creations_per_s <= 0:
            raise ValueError(f"max_creations_per_s must be positive, got {max_creations_per_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be non-negative, got {max_retries}")
        if client_factory is None:
            require("e2b_code_interpreter", "E2BSandbox")
            from e2b_code_interpreter import AsyncSandbox

            client_factory = AsyncSandbox.create
        self.timeout = timeout
        self.max_output_bytes = max_output_bytes
        self.max_sandboxes = max_sandboxes
        self.max_concurrency = max_concurrency or 4 * max_sandboxes
        self.max_creations_per_s = max_creations_per_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sandbox_lifetime_s = sandbox_lifetime_s
        self.request_timeout = request_timeout
        self.include_results = include_results
        self.close_timeout_s = close_timeout_s
        self._api_key = api_key
        self._factory = client_factory
        self._create_kwargs: dict[str, Any] = dict(create_kwargs or {})
        if template is not None:
            self._create_kwargs.setdefault("template", template)
        if allow_internet_access is not None:
            self._create_kwargs.setdefault("allow_internet_access", allow_internet_access)
        self._create_kwargs.setdefault("request_timeout", request_timeout)

        # Loop-thread state (only touched from coroutines and callbacks running on self._loop).
        self._slots: list[_Slot] = []
        self._slot_counter = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._kills: set[asyncio.Task[Any]] = set()
        self._semaphore = asyncio.Semaphore(self.max_concurrency)
        self._start_lock = asyncio.Lock()
        self._creation_lock = asyncio.Lock()
        self._next_creation = 0.0
        self._started = False
        self._start_attempts = 0
        self._start_error: E2BUnavailableError | None = None
        self._key: str | None = None

        # Shared with the callers' threads.
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._closed = False
        self._loop = asyncio.new_event_loop()
        # The thread must not reference ``self``, or the sandbox could never be garbage collected (and closed).
        self._thread = threading.Thread(target=_serve, args=(self._loop,), name="e2b-sandbox-loop", daemon=True)
        self._thread.start()
        if eager:
            try:
                self.start()
            except BaseException:
                self.close()
                raise

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Check the API key and create the first sandbox; called on first use if not called before.

        Raises:
            E2BUnavailableError: The API key is missing or rejected, or the E2B service cannot be reached.
        """
        fut = self._submit(self._astart())
        if fut is None:
            raise E2BUnavailableError("the E2BSandbox is closed")
        fut.result()

    def close(self) -> None:
        """Kill every sandbox of the pool and stop the event loop thread. Idempotent.

        Executions still running are cancelled; their callers get a ``sandbox_error`` result.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                fut = asyncio.run_coroutine_threadsafe(self._aclose(), self._loop)
            except RuntimeError:  # pragma: no cover - the loop is already closed
                return
        loop = self._loop
        fut.add_done_callback(lambda _: _stop(loop))
        if threading.current_thread() is self._thread:  # pragma: no cover - e.g. garbage collected on our loop
            return
        with contextlib.suppress(Exception):
            fut.result(timeout=self.close_timeout_s + 5.0)
        _stop(loop)
        self._thread.join(timeout=5.0)

    def __enter__(self) -> E2BSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- sessions --------------------------------------------------------------------------------------------------
    def open_session(self) -> str:
        """Start a stateful session and return its id; its kernel is created on its first execution."""
        sid = uuid.uuid4().hex
        with self._lock:
            self._sessions[sid] = _Session()
        return sid

    def close_session(self, session: str) -> None:
        """Discard a session and remove its code context (in the background)."""
        with self._lock:
            sess = self._sessions.pop(session, None)
            if sess is None or self._closed:
                return
            sess.closed = True
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._spawn, self._drop_session(sess))

    # -- execution -------------------------------------------------------------------------------------------------
    def run(self, code: str, *, session: str | None = None, timeout: float | None = None) -> ExecutionResult:
        """Execute ``code`` and return its result.

        Never raises for anything the code does or for infrastructure failures during the run (those give
        ``sandbox_error``).

        Raises:
            E2BUnavailableError: On first use, when E2B cannot be used at all (see :meth:`start`).
        """
        fut = self._submit(self._arun(code, session, timeout))
        if fut is None:
            return _closed_result()
        try:
            return fut.result()
        except concurrent.futures.CancelledError:
            return _closed_result()

    def run_many(
        self, codes: Sequence[str], *, sessions: Sequence[str | None] | None = None, timeout: float | None = None
    ) -> list[ExecutionResult]:
        """Execute several snippets concurrently; results are in input order.

        Snippets of the same session run one after the other, in input order.

        Raises:
            ValueError: ``sessions`` and ``codes`` differ in length.
            E2BUnavailableError: On first use, when E2B cannot be used at all (see :meth:`start`).
        """
        sessions = list(sessions) if sessions is not None else [None] * len(codes)
        if len(sessions) != len(codes):
            raise ValueError(f"got {len(codes)} codes but {len(sessions)} sessions")
        if not codes:
            return []
        fut = self._submit(self._arun_many(list(codes), sessions, timeout))
        if fut is None:
            return [_closed_result() for _ in codes]
        try:
            return fut.result()
        except concurrent.futures.CancelledError:
            return [_closed_result() for _ in codes]

    async def arun(self, code: str, *, session: str | None = None, timeout: float | None = None) -> ExecutionResult:
        """Async :meth:`run`, awaitable from any event loop (the work runs on the sandbox's own loop)."""
        fut = self._submit(self._arun(code, session, timeout))
        if fut is None:
            return _closed_result()
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            if self._closed:
                return _closed_result()
            raise

    # -- internals: loop thread ------------------------------------------------------------------------------------
    def _submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T] | None:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("E2BSandbox's blocking methods cannot be called from its own event loop")
        with self._lock:
            if self._closed:
                coro.close()
                return None
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, kill: bool = False) -> None:
        if self._closed and not kill:  # cleanup of cancelled executions: the sandboxes are being killed anyway
            coro.close()
            return
        task = self._loop.create_task(coro)
        tasks = self._kills if kill else self._background
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _backoff(self, attempt: int) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        return delay * (0.5 + random.random() / 2)

    # -- internals: start and pool ---------------------------------------------------------------------------------
    async def _astart(self) -> None:
        if self._started:
            return
        seen = self._start_attempts
        async with self._start_lock:
            if self._started:
                return
            if self._start_attempts != seen and self._start_error is not None:
                # An attempt failed while this caller waited: share its verdict rather than retry at once (each
                # attempt against an unreachable service takes seconds).
                raise E2BUnavailableError(str(self._start_error)) from self._start_error.__cause__
            self._start_attempts += 1
            try:
                await self._start_once()
            except E2BUnavailableError as e:
                self._start_error = e
                raise
            self._start_error = None
            self._started = True

    async def _start_once(self) -> None:
        key = self._api_key or os.environ.get("E2B_API_KEY")
        if not key:
            raise E2BUnavailableError(f"no E2B API key: {_KEY_HELP}")
        self._key = key
        for attempt in range(self.max_retries + 1):
            slot = self._new_slot()
            try:
                await self._client_of(slot)
            except Exception as e:
                if isinstance(e, _error_types().busy) and attempt < self.max_retries:
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                raise E2BUnavailableError(_start_failure(e)) from e
            return

    def _new_slot(self) -> _Slot:
        self._slot_counter += 1
        slot = _Slot(number=self._slot_counter)
        slot.task = self._loop.create_task(self._create_client(slot))
        slot.task.add_done_callback(functools.partial(self._on_created, slot))
        self._slots.append(slot)
        return slot

    async def _create_client(self, slot: _Slot) -> Any:
        async with self._creation_lock:  # space the creations out
            now = self._loop.time()
            if self._next_creation > now:
                await asyncio.sleep(self._next_creation - now)
            self._next_creation = max(now, self._next_creation) + 1.0 / self.max_creations_per_s
        client = await self._factory(api_key=self._key, timeout=self.sandbox_lifetime_s, **self._create_kwargs)
        slot.client = client
        slot.refreshed_at = self._loop.time()
        return client

    def _on_created(self, slot: _Slot, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is not None:
            slot.dead = True
            if slot in self._slots:
                self._slots.remove(slot)
        elif slot.dead:  # declared dead while starting (cannot happen today, but never leak a sandbox)
            self._kill_later(slot)

    async def _client_of(self, slot: _Slot) -> Any:
        assert slot.task is not None
        # Shielded: a waiter cancelled by its timeout must not cancel a creation other executions wait for.
        return await asyncio.shield(slot.task)

    def _expired(self, slot: _Slot, now: float) -> bool:
        return slot.client is not None and slot.inflight == 0 and now - slot.refreshed_at > self.sandbox_lifetime_s - 5

    def _choose_slot(self) -> _Slot:
        """The least loaded sandbox, or a new one while every one is busy and the pool is not full."""
        now = self._loop.time()
        for slot in list(self._slots):
            if self._expired(slot, now):
                self._mark_dead(slot)
        best = min(self._slots, key=lambda s: s.load, default=None)
        if best is None or (best.load > 0 and len(self._slots) < self.max_sandboxes):
            best = self._new_slot()
        best.inflight += 1
        return best

    def _keepalive(self, slot: _Slot) -> None:
        now = self._loop.time()
        if slot.client is None or now - slot.refreshed_at < self.sandbox_lifetime_s / 2:
            return
        slot.refreshed_at = now
        set_timeout = getattr(slot.client, "set_timeout", None)
        if set_timeout is not None:
            self._spawn(self._quietly(set_timeout, self.sandbox_lifetime_s))

    def _mark_dead(self, slot: _Slot) -> None:
        """Drop a sandbox from the pool; its sessions restart on their next execution."""
        if slot.dead:
            return
        slot.dead = True
        if slot in self._slots:
            self._slots.remove(slot)
        with self._lock:
            sessions = list(self._sessions.values())
        for sess in sessions:
            if sess.slot is slot:
                sess.slot, sess.context, sess.lost = None, None, True
        slot.sessions = 0
        self._kill_later(slot)

    def _kill_later(self, slot: _Slot) -> None:
        if slot.client is not None and not slot.kill_sent:
            slot.kill_sent = True
            self._spawn(self._quietly(slot.client.kill), kill=True)

    def _detach(self, sess: _Session) -> None:
        if sess.slot is not None:
            sess.slot.sessions = max(0, sess.slot.sessions - 1)
        sess.slot, sess.context = None, None

    async def _quietly(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Best-effort ``await fn(*args)`` (called only when awaited, so a dropped task leaves no stray coroutine)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(fn(*args), self.request_timeout)

    async def _drop_session(self, sess: _Session) -> None:
        async with sess.lock:
            slot, context = sess.slot, sess.context
            self._detach(sess)
            if slot is not None and context is not None and not slot.dead:
                remove = getattr(slot.client, "remove_code_context", None)
                if remove is not None:
                    await self._quietly(remove, context)

    async def _aclose(self) -> None:
        current = asyncio.current_task()
        creations = {s.task for s in self._slots if s.task is not None}
        for task in asyncio.all_tasks():
            if task is not current and task not in creations and task not in self._kills:
                task.cancel()
        pending = [t for t in creations if not t.done()]
        if pending:  # let sandboxes being created come up, so they can be killed rather than left to expire
            _, still = await asyncio.wait(pending, timeout=self.close_timeout_s)
            for task in still:
                task.cancel()
        for slot in list(self._slots):
            self._kill_later(slot)
        self._slots.clear()
        if self._kills:
            await asyncio.wait(set(self._kills), timeout=self.close_timeout_s)

    # -- internals: execution --------------------------------------------------------------------------------------
    async def _arun_many(
        self, codes: list[str], sessions: list[str | None], timeout: float | None
    ) -> list[ExecutionResult]:
        return list(await asyncio.gather(*(self._arun(c, s, timeout) for c, s in zip(codes, sessions))))

    async def _arun(self, code: str, session: str | None, timeout: float | None) -> ExecutionResult:
        start = time.perf_counter()
        if self._closed:
            return _closed_result()
        await self._astart()
        limit = max(self.timeout if timeout is None else timeout, 1e-3)  # the SDK reads 0 as "no limit"
        try:
            if session is None:
                async with self._semaphore:
                    return await self._execute(code, None, limit, start, restarted=False)
            sess = self._sessions.get(session)
            if sess is None:  # unknown or closed session: run in a fresh interpreter, say its state is gone
                async with self._semaphore:
                    return await self._execute(code, None, limit, start, restarted=True)
            async with sess.lock, self._semaphore:  # the session's lock first: a waiting session holds no permit
                if sess.closed:
                    return await self._execute(code, None, limit, start, restarted=True)
                return await self._execute(code, sess, limit, start, restarted=False)
        except Exception as e:  # a bug here must not crash a rollout
            error = ExecutionError(type(e).__name__, f"E2BSandbox internal error: {_describe(e)}")
            return ExecutionResult("sandbox_error", error=error, duration_s=time.perf_counter() - start)

    async def _execute(
        self, code: str, sess: _Session | None, timeout: float, start: float, *, restarted: bool
    ) -> ExecutionResult:
        """Run one snippet with retries; ``sess=None`` runs it in a fresh context."""
        failure: BaseException | None = None
        attempts = 0
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff(attempt - 1))
            attempts += 1
            slot: _Slot | None = None
            context: Any = None
            sent = False  # whether the code may have reached the kernel
            capture = _Capture(self.max_output_bytes)
            try:
                if sess is not None and sess.slot is not None and self._expired(sess.slot, self._loop.time()):
                    self._mark_dead(sess.slot)
                if sess is not None and sess.context is not None and sess.slot is not None:
                    slot, context = sess.slot, sess.context
                    slot.inflight += 1
                else:
                    slot = self._choose_slot()
                    client = await self._client_of(slot)
                    context = await client.create_code_context()
                    if sess is not None:
                        sess.slot, sess.context = slot, context
                        slot.sessions += 1
                        restarted, sess.lost = restarted or sess.lost, False
                self._keepalive(slot)
                sent = True
                call = slot.client.run_code(
                    code,
                    context=context,
                    timeout=timeout,
                    request_timeout=self.request_timeout,
                    on_stdout=capture.stdout,
                    on_stderr=capture.stderr,
                )
                try:
                    execution = await asyncio.wait_for(call, timeout + self.request_timeout + 5.0)
                except asyncio.TimeoutError:  # the SDK's own deadline did not fire: treat it the same way
                    return _timeout_result(capture, start, restarted, self.max_output_bytes)
                return _execution_result(execution, start, restarted, self.max_output_bytes, self.include_results)
            except Exception as e:
                failure = e
                kind = _classify(e)
                if kind == "timeout":
                    return _timeout_result(capture, start, restarted, self.max_output_bytes)
                if kind == "dead" and slot is not None:
                    self._mark_dead(slot)
                elif kind == "context_lost" and sess is not None and sess.slot is slot:
                    self._detach(sess)
                    sess.lost = True
                elif kind == "fatal" or (kind == "unsure" and sess is not None and sent):
                    break  # in a session, running the code twice could corrupt its state
            finally:
                if slot is not None:
                    slot.inflight -= 1
                if sess is None and context is not None and slot is not None and not slot.dead:
                    remove = getattr(slot.client, "remove_code_context", None)
                    if remove is not None:
                        self._spawn(self._quietly(remove, context))
        # If the session's sandbox died and no new context was made, ``sess.lost`` stays set for the next result.
        assert failure is not None
        error = ExecutionError(
            type(failure).__name__, f"E2B sandbox failure after {attempts} attempt(s): {_describe(failure)}"
        )
        return ExecutionResult(
            "sandbox_error", error=error, duration_s=time.perf_counter() - start, session_restarted=restarted
        )
