r"""Converting traces between code formats and to chat messages with a ``tool`` role.

:func:`convert` rewrites CoRT fences as ReTool tags and back (the blocks are parsed with one format and joined with
the other), and the final answer with them: CoRT's ``\boxed{x}`` after ``</think>`` is ReTool's
``<answer>\boxed{x}</answer>``. :func:`to_messages` splits a completion into assistant turns that each end with a code
call and ``tool`` turns holding the interpreter output; :func:`from_messages` joins them back.

Both are exact inverses: ``convert(convert(t, "cort", "retool"), "retool", "cort") == t`` and
``from_messages(to_messages(p, t, f), f) == (p, t)``. The conversion is textual, so it assumes a trace does not
already contain the other format's delimiters as literal text (a CoRT trace that writes ``<interpreter>`` or
``<answer>`` in prose would come back changed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lightning_cort.formats import resolve_format
from lightning_cort.formats.base import Block
from lightning_cort.rewards.math import boxed_at

if TYPE_CHECKING:
    from lightning_cort.formats.base import CodeFormat

__all__ = ["convert", "from_messages", "to_messages"]

_THINK_CLOSE = "</think>"
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"


def _answer_wrapped(fmt: CodeFormat) -> bool:
    """Whether the format wraps the boxed answer in ``<answer>`` tags (ReTool) or writes it bare (CoRT)."""
    return fmt.render_answer("x").startswith(_ANSWER_OPEN)


def _wrap_answer(text: str) -> str:
    r"""Wrap the last ``\boxed{}`` after ``</think>`` in ``<answer>`` tags (unless it already is)."""
    close = text.find(_THINK_CLOSE)
    if close < 0:
        return text
    start = text.rfind("\\boxed{", close)
    found = boxed_at(text, start) if start >= 0 else None
    if found is None or text[:start].endswith(_ANSWER_OPEN):
        return text
    end = found[1] + 1
    return f"{text[:start]}{_ANSWER_OPEN}{text[start:end]}{_ANSWER_CLOSE}{text[end:]}"


def _unwrap_answer(text: str) -> str:
    r"""Replace the last ``<answer>...</answer>`` after ``</think>`` by its content (boxed, if it was not)."""
    close = text.find(_THINK_CLOSE)
    start = text.rfind(_ANSWER_OPEN, max(close, 0))
    end = text.find(_ANSWER_CLOSE, start)
    if close < 0 or start < 0 or end < 0:
        return text
    inner = text[start + len(_ANSWER_OPEN) : end]
    if "\\boxed{" not in inner:
        inner = f"\\boxed{{{inner.strip()}}}"
    return text[:start] + inner + text[end + len(_ANSWER_CLOSE) :]


def convert(text: str, src: CodeFormat | str, dst: CodeFormat | str) -> str:
    r"""Rewrite a completion from one code format to another.

    Code and output blocks are parsed with ``src`` and written with ``dst``. The answer after ``</think>`` follows
    the target format: the last bare ``\boxed{x}`` becomes ``<answer>\boxed{x}</answer>`` for a format with answer
    tags (ReTool), and the last ``<answer>...</answer>`` becomes its content for one without (CoRT; content that is
    not boxed is boxed).

    Args:
        text: The completion.
        src: Its format (an instance or a name: ``"cort"``, ``"retool"``).
        dst: The target format.

    Returns:
        The completion in ``dst``'s format (``text`` itself when both formats write the same).
    """
    src_fmt, dst_fmt = resolve_format(src), resolve_format(dst)
    out = dst_fmt.join(src_fmt.parse(text))
    wrapped_src, wrapped_dst = _answer_wrapped(src_fmt), _answer_wrapped(dst_fmt)
    if wrapped_dst and not wrapped_src:
        out = _wrap_answer(out)
    elif wrapped_src and not wrapped_dst:
        out = _unwrap_answer(out)
    return out


def to_messages(prompt: str, completion: str, code_format: CodeFormat | str | None = None) -> list[dict[str, str]]:
    """Chat messages for a prompt and a code-integrated completion.

    The user message is ``prompt``. The completion is split after every code call: each assistant message holds the
    text up to and including a code call (delimiters as written), each ``tool`` message the body of the interpreter
    output that follows it (without the output delimiters), and a last assistant message the rest. Assistant text
    that is empty is left out, except that a completion with no text at all gives one empty assistant message.

    Args:
        prompt: The user message.
        completion: The assistant text after the generation prompt.
        code_format: The completion's code format (an instance or a name; CoRT's by default).

    Returns:
        ``[{"role": "user", ...}, {"role": "assistant", ...}, {"role": "tool", ...}, {"role": "assistant", ...}]``.
    """
    fmt = resolve_format(code_format)
    messages = [{"role": "user", "content": prompt}]
    pending = ""
    for block in fmt.parse(completion):
        if block.kind == "output":
            if pending:
                messages.append({"role": "assistant", "content": pending})
            messages.append({"role": "tool", "content": block.content})
            pending = ""
        else:
            pending += fmt.join([block])
    if pending or len(messages) == 1:
        messages.append({"role": "assistant", "content": pending})
    return messages


def from_messages(
    messages: Sequence[Mapping[str, Any]], code_format: CodeFormat | str | None = None
) -> tuple[str, str]:
    """The prompt and completion of messages written by :func:`to_messages`.

    Assistant contents are concatenated; each ``tool`` message is rendered back as an interpreter output block.

    Args:
        messages: One user message, then assistant and ``tool`` messages.
        code_format: The code format to render outputs with (an instance or a name; CoRT's by default).

    Returns:
        ``(prompt, completion)``.

    Raises:
        ValueError: The first message is not from the user, or a later one is not from the assistant or the tool.
    """
    fmt = resolve_format(code_format)
    if not messages or messages[0].get("role") != "user":
        raise ValueError("messages must start with the user message")
    parts = []
    for i, m in enumerate(messages[1:], start=1):
        role, content = m.get("role"), str(m.get("content", ""))
        if role == "assistant":
            parts.append(content)
        elif role == "tool":
            parts.append(fmt.join([Block("output", content)]))
        else:
            raise ValueError(f"message {i} has role {role!r}; after the user message only assistant and tool follow")
    return str(messages[0].get("content", "")), "".join(parts)
