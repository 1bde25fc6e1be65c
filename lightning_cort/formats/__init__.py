"""Code formats: how a completion writes code calls, how interpreter output is shown, where the answer goes."""

from lightning_cort.formats.base import Block, CodeCall, CodeFormat, middle_truncate, result_text
from lightning_cort.formats.cort import (
    CORT_BUDGET_NOTICE,
    CORT_HINT_CALCULATE,
    CORT_HINT_TRUST,
    CORT_PROMPT_HINT,
    CORT_SUFFIX,
    CoRTFormat,
)
from lightning_cort.formats.hermes import HermesFormat
from lightning_cort.formats.retool import ReToolFormat

__all__ = [
    "CORT_BUDGET_NOTICE",
    "CORT_HINT_CALCULATE",
    "CORT_HINT_TRUST",
    "CORT_PROMPT_HINT",
    "CORT_SUFFIX",
    "Block",
    "CoRTFormat",
    "CodeCall",
    "CodeFormat",
    "HermesFormat",
    "ReToolFormat",
    "get_format",
    "middle_truncate",
    "resolve_format",
    "result_text",
]


def get_format(name: str) -> CodeFormat:
    """A format by name: ``"cort"``, ``"retool"`` or ``"hermes"``."""
    formats: dict[str, type] = {"cort": CoRTFormat, "retool": ReToolFormat, "hermes": HermesFormat}
    if name not in formats:
        raise ValueError(f"unknown code format {name!r}; choose from {sorted(formats)}")
    return formats[name]()


def resolve_format(code_format: CodeFormat | str | None) -> CodeFormat:
    """A format given as an instance, a name (see :func:`get_format`), or ``None`` for CoRT's."""
    if code_format is None or isinstance(code_format, str):
        return get_format(code_format or "cort")
    return code_format
