"""Code interpreters behind one interface: :class:`Sandbox` and :class:`ExecutionResult`."""

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
    "ExecutionError",
    "ExecutionResult",
    "ExecutionStatus",
    "LocalSandbox",
    "Sandbox",
    "SandboxStats",
]
