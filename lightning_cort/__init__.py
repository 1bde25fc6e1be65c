"""lightning_cort: post-train language models to reason with a code interpreter, on PyTorch Lightning.

Importing the package is cheap and needs none of the optional extras (vllm, bitsandbytes, e2b-code-interpreter).
The public names below are loaded on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from lightning_cort._version import __version__

_LAZY = {
    "Trajectory": "lightning_cort.trajectory",
    "TrajectoryBatch": "lightning_cort.trajectory",
    "collate_trajectories": "lightning_cort.trajectory",
    "CoRTFormat": "lightning_cort.formats",
    "ReToolFormat": "lightning_cort.formats",
    "ExecutionResult": "lightning_cort.sandbox",
    "LocalSandbox": "lightning_cort.sandbox",
    "Sandbox": "lightning_cort.sandbox",
    "RolloutConfig": "lightning_cort.rollout",
    "RolloutEngine": "lightning_cort.rollout",
    "SamplingConfig": "lightning_cort.rollout",
    "HFBackend": "lightning_cort.rollout",
    "GRPOModule": "lightning_cort.modules",
    "RFTModule": "lightning_cort.modules",
    "SFTModule": "lightning_cort.modules",
    "RolloutCallback": "lightning_cort.callbacks",
    "SandboxCallback": "lightning_cort.callbacks",
    "TokenEfficiencyCallback": "lightning_cort.callbacks",
    "CalculatorTask": "lightning_cort.tasks",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_cort' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
