"""Answer extraction and math equivalence (math-verify, with a fast exact path)."""

from __future__ import annotations

import re
import threading

_NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?$")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")


def boxed_at(text: str, start: int) -> tuple[str, int] | None:
    r"""The content of the ``\boxed{...}`` that begins at ``start`` (braces matched) and the index of its closing
    brace, or ``None`` when it is not closed."""
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j], j
    return None


def last_boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` in ``text`` (braces matched), or ``None``."""
    start = text.rfind("\\boxed{")
    found = boxed_at(text, start) if start >= 0 else None
    return found[0] if found else None


def final_answer(text: str, *, require_think_close: bool = True) -> str | None:
    r"""The last ``\boxed{}`` after the first ``</think>`` (CoRT's reward and the ``strict`` eval), or anywhere in the
    text when ``require_think_close`` is false."""
    if require_think_close:
        if "</think>" not in text:
            return None
        text = text.split("</think>", 1)[1]
    return last_boxed(text)


def _normalize_number(s: str) -> str | None:
    s = s.strip().strip("$").replace("\\!", "").strip()
    if _THOUSANDS.match(s):  # "58,500" is a number; "1,2" is a list and stays unequal to "12"
        s = s.replace(",", "")
    if not _NUMBER.match(s):
        return None
    if "." in s:
        whole, frac = s.split(".")
        if frac.strip("0"):
            return s.lstrip("+")
        s = whole
    sign = "-" if s.startswith("-") else ""
    return sign + (s.lstrip("+-").lstrip("0") or "0")


def is_equivalent(prediction: str | None, gold: str) -> bool:
    r"""Whether a predicted answer equals the gold one.

    Plain numbers are compared exactly after normalisation (``025`` = ``25``, ``27.0`` = ``27``); anything else goes
    through math-verify, with the gold wrapped in ``$...$`` as the benchmarks need.
    """
    if prediction is None:
        return False
    a, b = _normalize_number(prediction), _normalize_number(gold)
    if a is not None and b is not None:
        return a == b
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    timeouts = {} if main else {"parsing_timeout": None}
    gold_text = gold if gold.strip().startswith("$") else f"${gold}$"
    try:
        g = parse(gold_text, **timeouts)
        p = parse(f"$\\boxed{{{prediction}}}$", **timeouts)
        return bool(verify(g, p, **({} if main else {"timeout_seconds": None})))
    except Exception:
        return False
