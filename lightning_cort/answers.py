r"""Answer checking for evaluation and rewards: gold normalisation, a fast path, and math-verify in a process pool.

Two ways to score a generation against a gold answer (:func:`check_answer`, ``mode=``):
    * ``"cort"`` — what CoRT's evaluation (``compute_metrics_dp.py``) reports as Pass@1: math-verify parses the
      **whole generation** (``ExprExtractionConfig`` then ``LatexExtractionConfig``), so no ``</think>`` is needed and
      without any ``\boxed{}`` the last expression counts. Different boxes close together (``\boxed{3}, \boxed{4}``)
      parse as a *set* (``{3, 4}``), which equals no single-number gold.
    * ``"strict"`` — the response's final answer (:func:`~lightning_cort.rewards.math.final_answer`): the last
      ``\boxed{}`` after ``</think>`` in a thinking response (CoRT's RL reward and deepscaler metric; none while the
      thinking is open), the last ``\boxed{}`` anywhere in a response without thinking tags (an instruct model's),
      normalised like a gold and compared with math-verify.

This is the toolkit's one answer judge: rewards (:func:`lightning_cort.rewards.is_correct`), training metrics, the
held-out checks of the recipes, RFT filters, synthesis and the eval recipe all call it. They pass the *response* (the
completion preceded by the ``<think>`` the prompt opened, if any: :func:`lightning_cort.rewards.math.response_text`),
so thinking and non-thinking models are scored by the same rule.

Golds are first put in the form math-verify needs by :func:`normalize_gold` (``025`` → ``25``, ``$(2,4)$`` →
``(2,4)``, ``90^\circ`` → ``90``, ...). Plain numbers and single words are then decided by an exact comparison (the
*fast path*, microseconds instead of milliseconds), everything else by math-verify. The fast path only answers when
math-verify would give the same answer: in ``cort`` mode only for a generation with exactly one box and no "final
answer" phrase (which math-verify would rank above the box), and it never says "different" for decimals (math-verify
rounds them).

math-verify's own timeouts use ``signal.alarm``: they only work in the main thread, and a timed-out comparison can still
leave C code (a catastrophic regex, a huge sympy expansion) running. :class:`~lightning_cort.answer_pool.AnswerChecker`
therefore runs math-verify without them, in a pool of worker processes, and enforces a wall-clock limit per item from
outside: an item that overruns has its worker killed and counts as incorrect, the pool is restarted and the other items
are still checked.
"""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache
from typing import Any, Literal

from lightning_cort.rewards.math import boxed_at, final_answer

__all__ = ["Mode", "check_answer", "normalize_gold"]

#: ``"cort"``: math-verify over the whole generation (CoRT's evaluation); ``"strict"``: the response's final
#: ``\boxed{}`` (after ``</think>`` when it thinks; CoRT's RL reward).
Mode = Literal["cort", "strict"]
_MODES = ("cort", "strict")

# --------------------------------------------------------------------------------------------------------------------
# Gold normalisation
# --------------------------------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[-+]?(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)?(?:\.\d+)?")
_INTEGER = re.compile(r"-?\d+")
_WORD = re.compile(r"[A-Za-z]+")
_SEPARATOR = re.compile(r"[\s,;]*(?:(?:and|or)[\s,;]*)?")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)\s*(?=[()\[\]|]|\\[{}|]|\\[lr]angle\b)")
_THOUSANDS = re.compile(r"(?<=\d)(,?)(?:\\[,!]|\{,\})\s*(?=\d{3}(?!\d))")  # 32,\!348  1\,000  1{,}000
_SPACING = re.compile(r"(?<!\\)\\[,;: ]|\\q?quad(?![A-Za-z])|~")
_DEGREES = re.compile(r"\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|°|\\degree(?![A-Za-z]))")
_TRIG = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)(?![A-Za-z])")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\{([^{}]*)\}")
_TRAILING_UNIT = re.compile(r"\s*\\(?:text|textrm|mathrm|mbox)\{\s+[A-Za-z][A-Za-z .]*\}(?:\^\{?[23]\}?)?$")


def _canonical_number(s: str) -> str | None:
    """``s`` as a canonical decimal string (``025`` → ``25``, ``27.0`` → ``27``, ``58,500`` → ``58500``), or ``None``
    when ``s`` is not a plain number."""
    if not s or not _NUMBER.fullmatch(s) or not any(c.isdigit() for c in s):
        return None
    s = s.replace(",", "")
    sign = "-" if s.startswith("-") else ""
    whole, _, frac = s.lstrip("+-").partition(".")
    whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
    out = f"{whole}.{frac}" if frac else whole
    return "0" if out == "0" else sign + out


def _unwrap_dollars(s: str) -> str:
    """Math out of ``$...$``: one segment is unwrapped, segments separated only by commas/"and" are joined with
    ``", "``, an odd number of ``$`` (a typo such as ``$221,$8$``) is dropped; prose between segments is kept as is."""
    pieces = s.split("$")
    if len(pieces) % 2 == 0:  # odd number of `$`: malformed, keep the content
        return ", ".join(p.strip(" ,;") for p in pieces if p.strip(" ,;"))
    if all(_SEPARATOR.fullmatch(p) for p in pieces[0::2]):
        return ", ".join(p.strip() for p in pieces[1::2] if p.strip())
    return s


def normalize_gold(gold: str) -> str:
    r"""Puts a benchmark's gold answer in the form math-verify (and the fast path) needs.

    Rules, in order:
        1. Surrounding whitespace and a sentence full stop after math (``$...$.``) are dropped.
        2. Currency: ``\$`` is removed (``\$18.90`` → ``18.9``).
        3. ``$...$``: a gold wrapped in ``$`` is unwrapped; several segments separated only by commas or "and"
           (``$69$,$84$``) are joined as ``69, 84``; an odd number of ``$`` (``$221,$8$``) is treated as a typo and
           the ``$`` dropped; a gold with prose between math segments (``$f(x)=ax+b$, where $b$ is ...``) is
           returned unchanged, so math-verify extracts from it as CoRT does.
        4. Typesetting that does not change the value: ``\dfrac``/``\tfrac`` → ``\frac``; ``\left``/``\right``
           before a delimiter; thin spaces, also as thousands separators (``32,\!348``, ``1\,000``).
        5. Degrees: ``90^\circ``, ``90^{\circ}``, ``90°`` → ``90`` (not inside a trigonometric expression, where they
           change the value).
        6. A unit in trailing text after a value (``5.4 \text{ cents}``, ``15\mbox{ cm}^2``) is dropped.
        7. A whole answer in ``\textbf{}``/``\mathrm{}``/``\mbox{}``/``\textrm{}`` becomes ``\text{...}``
           (``\text{Evelyn}``); a number in text (``\text{5}``) becomes the number.
        8. A plain number becomes canonical: no leading zeros, no trailing decimal zeros, no thousands separators
           (``025`` → ``25``, ``27.0`` → ``27``, ``-1.0`` → ``-1``, ``.35625`` → ``0.35625``, ``58,500`` → ``58500``).

    Tuples and intervals keep their brackets and order (``[0,1)`` ≠ ``(0,1)``; math-verify reads ``(1,2)`` as an open
    interval on both sides, so it still equals a predicted ``(1, 2)``); lists stay lists (``1,-2``).

    Args:
        gold: The gold answer as stored in the benchmark (e.g. the ``gt_answer`` field of CoRT's test files).

    Returns:
        The normalised gold, without surrounding ``$``: wrap it as ``$...$`` before ``math_verify.parse`` (only a
        prose gold, rule 3, still contains ``$``).
    """
    s = gold.strip()
    if s.endswith(".") and len(s) > 1 and not s[-2].isdigit():
        s = s[:-1].rstrip()
    s = s.replace("\\$", "").replace("$$", "$")
    if "$" in s:
        s = _unwrap_dollars(s)
        if "$" in s:
            return s
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = _LEFT_RIGHT.sub("", s)
    s = _THOUSANDS.sub(r"\1", s)
    s = re.sub(r"(?<!\\)\\!", "", s)
    s = _SPACING.sub(" ", s)
    if not _TRIG.search(s):
        s = _DEGREES.sub("", s)
    s = " ".join(s.split())
    stripped = _TRAILING_UNIT.sub("", s)
    if stripped.strip():
        s = stripped.strip()
    wrapped = _TEXT_WRAPPER.fullmatch(s)
    if wrapped:
        inner = " ".join(wrapped.group(1).split())
        number = _canonical_number(inner)
        return number if number is not None else f"\\text{{{inner}}}"
    number = _canonical_number(s)
    return number if number is not None else s


def _for_parse(normalized: str) -> str:
    """The ``$...$``-wrapped form math-verify needs (``\\boxed{(1,2)}`` vs a bare ``(1, 2)`` is False otherwise)."""
    return normalized if "$" in normalized else f"${normalized}$"


# --------------------------------------------------------------------------------------------------------------------
# Fast path
# --------------------------------------------------------------------------------------------------------------------


def _plain_key(answer: str, *, bare_words: bool) -> tuple[str, str] | None:
    r"""``("num", canonical)`` for a plain number, ``("word", lowercase)`` for one word in ``\text{}`` (or bare, with
    ``bare_words``: a model's bare ``Evelyn``; a bare gold is math, e.g. the product ``xy``)."""
    answer = answer.strip()
    number = _canonical_number(answer)
    if number is not None:
        return ("num", number)
    text = _TEXT_WRAPPER.fullmatch(answer)
    word = text.group(1).strip() if text else answer
    if _WORD.fullmatch(word) and (text or (bare_words and len(word) > 1)):
        return ("word", word.lower())
    return None


def _compare_keys(pred: tuple[str, str] | None, gold: tuple[str, str] | None) -> bool | None:
    """True/False when plain keys decide it the way math-verify would, ``None`` when math-verify must."""
    if pred is None or gold is None or pred[0] != gold[0]:
        return None
    if pred[1] == gold[1]:
        return True
    # Different integers are different for math-verify too; decimals it compares after rounding, and words it may
    # match in other ways (a bare `Evelyn` is the product of its letters): leave those to it.
    if pred[0] == "num" and _INTEGER.fullmatch(pred[1]) and _INTEGER.fullmatch(gold[1]):
        return False
    return None


_PERCENT_AFTER = re.compile(r"[\s$]*(?:\\\)|\\\])?\s*(?:\\?%|[Pp]ercent|[Pp]ct)")


def _cort_box(text: str) -> str | None:
    r"""The box content math-verify's CoRT extraction is known to use: the only ``\boxed{}``, with no "final answer"
    phrase (ranked above boxes), no ``\fbox`` and no percent sign right after it; ``None`` otherwise."""
    if text.count("\\boxed") != 1 or "\\fbox" in text or "final answer" in text.lower():
        return None
    start = text.find("\\boxed{")
    found = boxed_at(text, start) if start >= 0 else None
    if found is None or _PERCENT_AFTER.match(text, found[1] + 1):
        return None
    return found[0]


def _strict_answer(prediction_text: str) -> str | None:
    answer = final_answer(prediction_text)
    return None if answer is None else normalize_gold(answer)


# --------------------------------------------------------------------------------------------------------------------
# math-verify (no signal-based timeouts: safe in any thread; time limits come from AnswerChecker)
# --------------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _parse_gold(gold_for_parse: str) -> Any:
    from math_verify import parse

    return parse(gold_for_parse, parsing_timeout=None)  # type: ignore[arg-type]


def _math_verify(mode: str, text: str, gold_for_parse: str, timeout: int | None = None) -> bool:
    """math-verify on a prepared item: ``text`` is the whole generation (``cort``) or the normalised boxed answer
    (``strict``); ``timeout``: math-verify's own per-parse and per-comparison limit (main thread only)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" (golds): deliberate here
    gold = _parse_gold(gold_for_parse)
    if mode == "cort":
        # CoRT's order: expressions first, then LaTeX (it matters when both match at the same priority).
        config = (ExprExtractionConfig(), LatexExtractionConfig())
        pred = parse(text, extraction_config=config, parsing_timeout=timeout)  # type: ignore[arg-type]
    else:
        pred = parse(_for_parse(text), parsing_timeout=timeout)  # type: ignore[arg-type]
    return bool(verify(gold, pred, timeout_seconds=timeout))


def _prepare(prediction_text: str, gold: str, mode: str, fast_path: bool) -> bool | tuple[str, str, str]:
    """The verdict when it needs no math-verify, else the ``(mode, text, gold_for_parse)`` math-verify must check."""
    normalized = normalize_gold(gold)
    if mode == "strict":
        answer = _strict_answer(prediction_text)
        if answer is None:
            return False
        if fast_path:
            verdict = _compare_keys(_plain_key(answer, bare_words=True), _plain_key(normalized, bare_words=False))
            if verdict is not None:
                return verdict
        return (mode, answer, _for_parse(normalized))
    if fast_path:
        box = _cort_box(prediction_text)
        if box is not None:
            verdict = _compare_keys(_plain_key(box, bare_words=True), _plain_key(normalized, bare_words=False))
            if verdict is not None:
                return verdict
    return (mode, prediction_text, _for_parse(normalized))


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")


def check_answer(
    prediction_text: str, gold: str, *, mode: Mode = "cort", fast_path: bool = True, timeout: int | None = 5
) -> bool:
    r"""Whether a generation answers ``gold``, in this process.

    Safe to call from any thread. In the main thread math-verify gets its own ``signal.alarm`` limits of ``timeout``
    seconds per parse and per comparison (an overrun counts as incorrect); in other threads it runs without a limit.
    For many items, or for generations that could make math-verify run for long, use :class:`AnswerChecker`, which
    enforces a wall-clock limit in worker processes.

    Args:
        prediction_text: The model's whole response (thinking, code, interpreter outputs, answer), preceded by the
            ``<think>`` its prompt opened, if any (:func:`~lightning_cort.rewards.math.response_text`).
        gold: The gold answer as stored in the benchmark; normalised by :func:`normalize_gold`.
        mode: ``"cort"``: math-verify over the whole generation, as CoRT's evaluation scores it; ``"strict"``: the
            response's final ``\boxed{}`` (after ``</think>`` in a thinking response, as CoRT's RL reward reads it;
            anywhere in a response without thinking tags); no such box: incorrect.
        fast_path: Decide plain numbers and single words by exact comparison before calling math-verify (same
            verdicts, much faster).
        timeout: Seconds math-verify may spend per parse and per comparison in the main thread (``None``: no limit).

    Returns:
        ``True`` when the answer is correct.
    """
    _check_mode(mode)
    prepared = _prepare(prediction_text, gold, mode, fast_path)
    if isinstance(prepared, bool):
        return prepared
    main = threading.current_thread() is threading.main_thread()
    try:
        return _math_verify(*prepared, timeout=timeout if main else None)
    except Exception:
        return False
