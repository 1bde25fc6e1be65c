"""Lightning callbacks: interpreter lifecycle, rollout generation, token-efficiency metrics."""

from lightning_cort.callbacks.rollout import RolloutCallback
from lightning_cort.callbacks.sandbox import SandboxCallback
from lightning_cort.callbacks.token_efficiency import TokenEfficiencyCallback

__all__ = ["RolloutCallback", "SandboxCallback", "TokenEfficiencyCallback"]
