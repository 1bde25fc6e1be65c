"""Helpers of :mod:`lightning_cort.sandbox.e2b`: SDK error classification, result capture, pool bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal, TypeVar

from lightning_cort.sandbox.base import ExecutionError, ExecutionResult

_T = TypeVar("_T")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_KEY_HELP = (
    "pass api_key=... to E2BSandbox or set the E2B_API_KEY environment variable "
    "(create a key at https://e2b.dev/dashboard?tab=keys)"
)

#: How a failure is handled: ``timeout`` (the code ran out of time), ``dead`` (the sandbox is gone: replace it and
#: retry), ``context_lost`` (the kernel context is gone: recreate it and retry), ``retry`` (the code did not run:
#: retry), ``unsure`` (the code may have run: retry only without a session), ``fatal`` (do not retry).
_Kind = Literal["timeout", "dead", "context_lost", "retry", "unsure", "fatal"]


class E2BUnavailableError(RuntimeError):
    """E2B cannot be used at all: no API key, the key was rejected, or the service cannot be reached."""


@functools.lru_cache(maxsize=1)
def _error_types() -> SimpleNamespace:
    """The SDK's and httpx's exception classes, imported on first need (empty tuples where not installed)."""
    types = SimpleNamespace(
        auth=(), gone=(), timeout=(), not_found=(), busy=(), invalid=(), sdk=(), connect=(), http=()
    )
    try:
        import httpx

        types.connect = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
        types.http = (httpx.HTTPError,)
    except ImportError:  # pragma: no cover - httpx is a dependency of the SDK
        pass
    try:
        import e2b
    except ImportError:  # pragma: no cover - only with an injected client and no SDK installed
        return types

    def pick(*names: str) -> tuple[type[BaseException], ...]:
        # Looked up by name: some classes only exist in recent SDK versions.
        return tuple(getattr(e2b, n) for n in names if isinstance(getattr(e2b, n, None), type))

    types.auth = pick("AuthenticationException")
    types.gone = pick("SandboxNotRunningException", "SandboxUnreachableException", "SandboxNotFoundException")
    types.timeout = pick("TimeoutException")
    types.not_found = pick("NotFoundException")
    types.busy = pick("RateLimitException", "ServiceBusyException")
    types.invalid = pick("InvalidArgumentException", "TemplateException")
    types.sdk = pick("SandboxException")
    return types


def _classify(exc: BaseException) -> _Kind:
    """Decide how to handle an exception raised by the SDK (or by an injected client)."""
    t = _error_types()
    if isinstance(exc, t.auth):
        return "fatal"
    if isinstance(exc, t.gone):  # subclasses of TimeoutException: check them first
        return "dead"
    if isinstance(exc, t.timeout):
        # The SDK raises TimeoutException for several things; only its message tells them apart.
        msg = str(exc).lower()
        if "execution timed out" in msg:
            return "timeout"
        if "request timed out" in msg:  # the connect phase timed out: nothing was sent
            return "retry"
        if any(s in msg for s in ("killed", "not found", "sandbox timeout", "not running")):
            return "dead"  # includes the 502 the proxy answers for a sandbox that no longer exists
        return "timeout"
    if isinstance(exc, t.not_found):  # a 404 from the kernel server: the context does not exist anymore
        return "context_lost"
    if isinstance(exc, (*t.busy, *t.connect, ConnectionError)):
        return "retry"
    if isinstance(exc, t.invalid):
        return "fatal"
    if isinstance(exc, (*t.http, *t.sdk, OSError)):
        return "unsure"
    return "fatal"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return text if len(text) <= 2000 else text[:2000] + "..."


def _cap(text: str, limit: int) -> tuple[str, bool]:
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", errors="ignore"), True


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """Body of the event loop thread."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _stop(loop: asyncio.AbstractEventLoop) -> None:
    with contextlib.suppress(RuntimeError):  # already closed
        loop.call_soon_threadsafe(loop.stop)


def _closed_result() -> ExecutionResult:
    return ExecutionResult("sandbox_error", error=ExecutionError("SandboxClosed", "the sandbox is closed"))


@dataclass(eq=False)
class _Slot:
    """One E2B sandbox of the pool, live or still being created."""

    number: int
    task: asyncio.Task[Any] | None = None
    client: Any = None
    inflight: int = 0
    sessions: int = 0
    dead: bool = False
    kill_sent: bool = False
    refreshed_at: float = 0.0

    @property
    def load(self) -> int:
        return self.inflight + self.sessions


@dataclass(eq=False)
class _Session:
    """A session's code context and where it lives."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    slot: _Slot | None = None
    context: Any = None
    lost: bool = False
    closed: bool = False


class _Capture:
    """Collects streamed output, so a timed-out execution still reports what it printed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.sizes = {"stdout": 0, "stderr": 0}

    def _add(self, stream: str, message: Any) -> None:
        line = str(getattr(message, "line", message))
        if self.sizes[stream] <= self.limit:
            self.parts[stream].append(line)
        self.sizes[stream] += len(line.encode("utf-8", errors="replace"))

    def stdout(self, message: Any) -> None:
        self._add("stdout", message)

    def stderr(self, message: Any) -> None:
        self._add("stderr", message)

    def text(self, stream: str) -> str:
        return "".join(self.parts[stream])


def _start_failure(exc: BaseException) -> str:
    """Why the backend cannot start, for :class:`E2BUnavailableError`."""
    t = _error_types()
    what = f"{type(exc).__name__}: {_describe(exc)}"
    if isinstance(exc, t.auth):
        return f"E2B rejected the API key ({what}); {_KEY_HELP}"
    if isinstance(exc, (*t.http, *t.timeout, OSError)):
        return (
            f"cannot reach the E2B service ({what}). E2B needs outbound HTTPS to api.e2b.app and *.e2b.app (or "
            "to the domain in E2B_DOMAIN): check the network connection, proxy settings and firewall"
        )
    if isinstance(exc, t.busy):
        return f"E2B refused to create a sandbox ({what}): the plan's limits are reached, retry later"
    return f"could not create an E2B sandbox ({what})"


def _timeout_result(capture: _Capture, start: float, restarted: bool, max_output_bytes: int) -> ExecutionResult:
    """The SDK's execution timeout as a ``timeout`` result, with the output received before it."""
    stdout, out_cut = _cap(capture.text("stdout"), max_output_bytes)
    stderr, err_cut = _cap(capture.text("stderr"), max_output_bytes)
    return ExecutionResult(
        "timeout",
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=out_cut or capture.sizes["stdout"] > max_output_bytes,
        stderr_truncated=err_cut or capture.sizes["stderr"] > max_output_bytes,
        duration_s=time.perf_counter() - start,
        session_restarted=restarted,
    )


def _execution_result(
    execution: Any, start: float, restarted: bool, max_output_bytes: int, include_results: bool
) -> ExecutionResult:
    """An SDK ``Execution`` as a result: ``ok``, or ``error``/``oom`` with the exception's name, value and traceback."""
    stdout = "".join(execution.logs.stdout)
    stderr = "".join(execution.logs.stderr)
    if include_results:
        text = getattr(execution, "text", None)
        if text:
            stdout += text if text.endswith("\n") else text + "\n"
    stdout, out_cut = _cap(stdout, max_output_bytes)
    stderr, err_cut = _cap(stderr, max_output_bytes)
    common: dict[str, Any] = {
        "stdout": stdout,
        "stderr": stderr,
        "stdout_truncated": out_cut,
        "stderr_truncated": err_cut,
        "duration_s": time.perf_counter() - start,
        "session_restarted": restarted,
    }
    err = execution.error
    if err is None:
        return ExecutionResult("ok", **common)
    traceback = _ANSI.sub("", str(err.traceback or "")).rstrip("\n")
    error = ExecutionError(str(err.name), str(err.value), traceback)
    return ExecutionResult("oom" if err.name == "MemoryError" else "error", error=error, **common)
