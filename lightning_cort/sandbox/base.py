"""The sandbox interface: :class:`ExecutionResult` and the :class:`Sandbox` protocol every backend implements."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

ExecutionStatus = Literal["ok", "error", "timeout", "oom", "crashed", "sandbox_error"]

#: Statuses caused by the sandbox itself rather than by the executed code; trajectories hit by them are not the
#: model's fault and are excluded from training by default.
INFRASTRUCTURE_STATUSES: frozenset[str] = frozenset({"sandbox_error"})


@dataclass(frozen=True)
class ExecutionError:
    """An exception raised by the executed code.

    Attributes:
        name: Exception class name, e.g. ``"ZeroDivisionError"``.
        value: ``str(exception)``.
        traceback: The formatted traceback, without the sandbox's own frames.
    """

    name: str
    value: str
    traceback: str = ""


@dataclass(frozen=True)
class ExecutionResult:
    """What happened when a snippet ran.

    Attributes:
        status: ``ok`` (ran to the end), ``error`` (raised), ``timeout`` (killed at the wall-clock limit), ``oom``
            (exceeded the memory limit), ``crashed`` (the process died: signal, ``os._exit``), or ``sandbox_error``
            (the sandbox itself failed; not the code's fault).
        stdout: Captured standard output (possibly truncated).
        stderr: Captured standard error (possibly truncated).
        stdout_truncated: Whether stdout was cut at the sandbox's output cap.
        stderr_truncated: Whether stderr was cut at the sandbox's output cap.
        error: The exception, for ``error`` and ``oom`` (and a description for ``sandbox_error``).
        exit_code: The process exit code when known.
        duration_s: Wall-clock seconds the execution took.
        session_restarted: Whether the session's interpreter had to be restarted (its earlier state is lost).
    """

    status: ExecutionStatus
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    error: ExecutionError | None = None
    exit_code: int | None = None
    duration_s: float = 0.0
    session_restarted: bool = False

    @property
    def ok(self) -> bool:
        """Whether the code ran to completion."""
        return self.status == "ok"

    @property
    def is_infrastructure_failure(self) -> bool:
        """Whether the sandbox, not the code, failed."""
        return self.status in INFRASTRUCTURE_STATUSES


def result_text(result: ExecutionResult) -> str:
    """What a CoRT-style interpreter shows for an execution: stdout when the code succeeded, otherwise the error report.

    Like CoRT's executor, the stdout of a failed execution is dropped in favour of its traceback; a timeout reads
    ``Timeout Error``; infrastructure failures read ``Execution Error: ...``.
    """
    if result.status == "ok":
        return result.stdout
    if result.status == "timeout":
        return "Timeout Error"
    if result.status == "error" and result.error is not None:
        return result.error.traceback or f"{result.error.name}: {result.error.value}"
    if result.status == "oom":
        return "MemoryError"
    detail = result.error.value if result.error is not None else f"exit code {result.exit_code}"
    return f"Execution Error: {detail}"


@runtime_checkable
class Sandbox(Protocol):
    """A code interpreter backend. Every method is safe to call from several threads.

    Sessions hold interpreter state across calls of one trajectory: ``sid = sandbox.open_session()``, then
    ``sandbox.run(code, session=sid)`` sees the variables of earlier calls in that session.
    """

    def run(self, code: str, *, session: str | None = None, timeout: float | None = None) -> ExecutionResult:
        """Execute ``code`` and return its result; never raises for anything the code does."""
        ...

    def run_many(
        self, codes: Sequence[str], *, sessions: Sequence[str | None] | None = None, timeout: float | None = None
    ) -> list[ExecutionResult]:
        """Execute several snippets concurrently; results are in input order."""
        ...

    async def arun(self, code: str, *, session: str | None = None, timeout: float | None = None) -> ExecutionResult:
        """Async :meth:`run`."""
        ...

    def open_session(self) -> str:
        """Start a stateful session and return its id."""
        ...

    def close_session(self, session: str) -> None:
        """Discard a session's state."""
        ...

    def close(self) -> None:
        """Release every resource (processes, temporary files). Idempotent."""
        ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass
class SandboxStats:
    """Running counts of executions by status, with their durations (for logging). Thread-safe: the rollout engine
    records executions from several threads."""

    counts: dict[str, int] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, result: ExecutionResult) -> None:
        with self._lock:
            self.counts[result.status] = self.counts.get(result.status, 0) + 1
            self.durations.append(result.duration_s)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.durations.clear()
