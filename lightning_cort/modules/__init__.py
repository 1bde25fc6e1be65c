"""LightningModules: supervised fine-tuning, rejection fine-tuning and GRPO on one policy path."""

from lightning_cort.modules.base import PolicyModule
from lightning_cort.modules.grpo import GRPOModule
from lightning_cort.modules.rft import RFTModule
from lightning_cort.modules.sft import SFTModule

__all__ = ["GRPOModule", "PolicyModule", "RFTModule", "SFTModule"]
