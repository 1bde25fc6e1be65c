"""ReTool's tag format: ``<code>``, ``<interpreter>`` and ``<answer>``."""

from __future__ import annotations

from lightning_cort.formats._common import DelimitedFormat


class ReToolFormat(DelimitedFormat):
    """Tags as in ReTool: the model writes ``<code>\\n```python\\n...\\n```\\n</code>``, the environment appends
    ``<interpreter>\\n...\\n</interpreter>``, and the answer is ``<answer>\\boxed{...}</answer>``.

    Generation pauses on ``</code>``. Output is middle-truncated to ``max_output_chars`` (ReTool keeps a head and a
    tail). The fences inside ``<code>`` are optional when parsing model text, with a ``python``, ``py`` or
    ``python3`` tag or none.

    Args:
        max_output_chars: Truncation length of interpreter output (``0`` disables truncation).
        budget_notice: Text appended to the last allowed execution's output.
    """

    name = "retool"
    code_open = "<code>\n```python\n"
    code_close = "\n```\n</code>\n"
    out_open = "<interpreter>\n"
    out_close = "\n</interpreter>\n"
    answer_template = "<answer>\\boxed{{{answer}}}</answer>"
    notice = "\n\n[SYSTEM]\nThis was the last allowed code execution. Continue with reasoning only."

    def __init__(self, max_output_chars: int = 400, budget_notice: str | None = None) -> None:
        super().__init__(max_output_chars=max_output_chars, budget_notice=budget_notice)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return ("</code>",)

    def find_call(self, text: str):  # type: ignore[override]
        """The last ``<code>...</code>`` block ending ``text``; the python fences inside are optional."""
        from lightning_cort.formats.base import CodeCall

        start = text.rfind("<code>")
        if start < 0:
            return None
        close = text.find("</code>", start)
        if close < 0 or text[close + len("</code>") :].strip():
            return None
        end = close + len("</code>")
        if text.startswith("\n", end):
            end += 1
        body = text[start + len("<code>") : close].strip("\n")
        if body.lstrip().startswith("```"):
            body = body.lstrip()[3:]
            tag, newline, rest = body.partition("\n")
            if newline and tag.strip().lower() in ("", "python", "py", "python3"):
                body = rest  # the fence's language tag line
            body = body.rstrip()
            body = body[:-3] if body.endswith("```") else body
        return CodeCall(code=self._clean_code(body), start=start, end=end)
