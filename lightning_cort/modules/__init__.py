"""LightningModules: supervised fine-tuning, rejection fine-tuning and GRPO on one policy path, each configured by
one settings object (the recipes' ``sft``, ``rft`` and ``grpo`` sections)."""

from lightning_cort.modules.base import PolicyModule, RolloutModule
from lightning_cort.modules.grpo import GRPOConfig, GRPOModule
from lightning_cort.modules.rft import RFTModule, RFTSettings
from lightning_cort.modules.sft import SFTModule, SFTSettings

__all__ = [
    "GRPOConfig",
    "GRPOModule",
    "PolicyModule",
    "RFTModule",
    "RFTSettings",
    "RolloutModule",
    "SFTModule",
    "SFTSettings",
]
