"""Code interpreters behind one interface: :class:`Sandbox` and :class:`ExecutionResult`.

:class:`E2BSandbox` (the E2B cloud backend, optional extra ``e2b``) is loaded on first access, so importing this
package never imports the E2B SDK.
"""

from __future__ import annotations

from typing import Any

from lightning_cort.sandbox.base import (
    INFRASTRUCTURE_STATUSES,
    ExecutionError,
    ExecutionResult,
    ExecutionStatus,
    Sandbox,
    SandboxStats,
)
from lightning_cort.sandbox.local import LocalSandbox

__all__ = [
    "INFRASTRUCTURE_STATUSES",
    "E2BSandbox",
    "ExecutionError",
    "ExecutionResult",
    "ExecutionStatus",
    "LocalSandbox",
    "Sandbox",
    "SandboxStats",
]

_LAZY = {"E2BSandbox", "E2BUnavailableError"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from lightning_cort.sandbox import e2b

        return getattr(e2b, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
