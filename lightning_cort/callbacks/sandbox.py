"""Owns the code interpreter's lifecycle under Lightning and logs execution statistics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
from typing_extensions import override

from lightning_cort.sandbox.base import ExecutionResult, Sandbox, SandboxStats


class _CountingSandbox:
    """Wraps a sandbox to count results by status and record latencies (for logging)."""

    def __init__(self, inner: Sandbox, stats: SandboxStats) -> None:
        self.inner = inner
        self.stats = stats

    def run(self, code: str, **kw: Any) -> ExecutionResult:
        result = self.inner.run(code, **kw)
        self.stats.add(result)
        return result

    def run_many(self, codes: Any, **kw: Any) -> list[ExecutionResult]:
        results = self.inner.run_many(codes, **kw)
        for r in results:
            self.stats.add(r)
        return results

    async def arun(self, code: str, **kw: Any) -> ExecutionResult:
        result = await self.inner.arun(code, **kw)
        self.stats.add(result)
        return result

    def open_session(self) -> str:
        return self.inner.open_session()

    def close_session(self, session: str) -> None:
        self.inner.close_session(session)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> _CountingSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SandboxCallback(L.Callback):
    """Creates one sandbox per process at ``setup``, closes it at ``teardown`` and on exceptions, and logs
    ``sandbox/executions``, ``sandbox/status_<status>`` counts and latency percentiles every training step.

    Args:
        factory: Builds the sandbox, e.g. ``LocalSandbox`` or ``functools.partial(LocalSandbox, timeout=3)``.
    """

    def __init__(self, factory: Callable[[], Sandbox] | None = None) -> None:
        if factory is None:
            from lightning_cort.sandbox.local import LocalSandbox

            factory = LocalSandbox
        self.factory = factory
        self.stats = SandboxStats()
        self._sandbox: _CountingSandbox | None = None

    @property
    def sandbox(self) -> Sandbox:
        """The live sandbox (only between ``setup`` and ``teardown``)."""
        if self._sandbox is None:
            raise RuntimeError("the sandbox exists only while the Trainer runs (between setup and teardown)")
        return self._sandbox  # type: ignore[return-value]

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._sandbox is None:
            self._sandbox = _CountingSandbox(self.factory(), self.stats)

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        n = len(self.stats.durations)
        pl_module.log("sandbox/executions", float(n))
        if not n:
            return
        durations = sorted(self.stats.durations)
        pl_module.log("sandbox/latency_p50_ms", 1000 * durations[n // 2])
        pl_module.log("sandbox/latency_p99_ms", 1000 * durations[min(n - 1, int(0.99 * n))])
        for status, count in self.stats.counts.items():
            pl_module.log(f"sandbox/status_{status}", float(count))
        self.stats.reset()

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._close()

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
