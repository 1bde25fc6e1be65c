"""Availability flags for optional packages; nothing heavy is imported here."""

from __future__ import annotations

import importlib.util


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


VLLM_AVAILABLE = _available("vllm")
BITSANDBYTES_AVAILABLE = _available("bitsandbytes")
E2B_AVAILABLE = _available("e2b_code_interpreter")
# Not an extra of its own: installed with e2b; the LLM hint judge uses it when present and urllib otherwise.
HTTPX_AVAILABLE = _available("httpx")
GGUF_AVAILABLE = _available("gguf")

_EXTRAS = {"vllm": "vllm", "bitsandbytes": "qlora", "e2b_code_interpreter": "e2b", "gguf": "real"}


def require(module: str, feature: str) -> None:
    """Raise an ``ImportError`` naming the extra to install when ``module`` is missing."""
    if not _available(module):
        extra = _EXTRAS.get(module, module)
        raise ImportError(f"{feature} needs the optional package '{module}': pip install 'lightning-cort[{extra}]'")
