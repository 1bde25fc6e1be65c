"""Shared machinery for formats that delimit code and output with fixed opening and closing strings."""

from __future__ import annotations

import re
import textwrap
from typing import TYPE_CHECKING, Any

from lightning_cort.formats.base import Block, CodeCall, middle_truncate, result_text

if TYPE_CHECKING:
    from lightning_cort.sandbox.base import ExecutionResult


class DelimitedFormat:
    """A format whose code call is ``code_open + code + code_close`` and whose output is
    ``out_open + text + out_close``.

    Subclasses set the class attributes; everything else (finding calls, parsing, rendering) is shared.
    """

    name: str = "delimited"
    code_open: str
    code_close: str
    out_open: str
    out_close: str
    answer_template: str = "\\boxed{{{answer}}}"
    notice: str = ""
    #: A regular expression for every opening the model may write (``code_open`` is what traces write); ``None``:
    #: exactly ``code_open``.
    code_open_re: str | None = None
    output_on_new_line: bool = True

    def __init__(self, max_output_chars: int = 800, budget_notice: str | None = None) -> None:
        self.max_output_chars = max_output_chars
        if budget_notice is not None:
            self.notice = budget_notice
        opening = self.code_open_re or re.escape(self.code_open)
        self._open_re = re.compile(opening)
        pieces = ((opening, re.escape(self.code_close)), (re.escape(self.out_open), re.escape(self.out_close)))
        self._block_re = re.compile(
            "|".join(f"(?P<{kind}>{o}(?P<{kind}_body>.*?){c})" for kind, (o, c) in zip(("code", "output"), pieces)),
            re.DOTALL,
        )

    @property
    def tools(self) -> tuple[dict[str, Any], ...]:
        """None: the instruction describes the interpreter."""
        return ()

    # -- stop handling ---------------------------------------------------------------------------------------------
    @property
    def stop_strings(self) -> tuple[str, ...]:
        return (self.code_close,)

    def find_call(self, text: str) -> CodeCall | None:
        """The last complete code call, if nothing but whitespace follows it.

        The close may have been sampled together with following characters in one token, so ``text`` may end with
        whitespace after it (never with other text: then the model went on and this was not a call). The close's
        trailing newline is optional: a model may end its turn right after the closing delimiter.
        """
        openings = list(self._open_re.finditer(text))
        if not openings:
            return None
        opening = openings[-1]
        start, body_start = opening.start(), opening.end()
        close_mark = self.code_close.rstrip("\n")
        # An empty body shares the newline that ends the opening with the one that starts the close.
        search_from = body_start - 1 if opening.group().endswith("\n") and close_mark.startswith("\n") else body_start
        close = text.find(close_mark, search_from)
        if close < 0:
            return None
        end = close + len(close_mark)
        if text[end:].strip():
            return None
        if text.startswith("\n", end):
            end += 1
        return CodeCall(code=self._clean_code(text[body_start : max(close, body_start)]), start=start, end=end)

    def _clean_code(self, body: str) -> str:
        return textwrap.dedent(body).strip("\n")

    # -- rendering -------------------------------------------------------------------------------------------------
    def render_call(self, code: str) -> str:
        return f"{self.code_open}{code}{self.code_close}"

    def render_output(self, text: str, *, budget_notice: bool = False, truncate: bool = True) -> str:
        body = middle_truncate(text.strip(), self.max_output_chars if truncate else 0)
        if budget_notice and self.notice:
            body += self.notice
        return f"{self.out_open}{body}{self.out_close}"

    def render_result(self, result: ExecutionResult, *, budget_notice: bool = False) -> str:
        return self.render_output(result_text(result), budget_notice=budget_notice)

    def render_answer(self, answer: str) -> str:
        return self.answer_template.format(answer=answer)

    # -- parsing ---------------------------------------------------------------------------------------------------
    def parse(self, text: str) -> list[Block]:
        blocks: list[Block] = []
        pos = 0
        for m in self._block_re.finditer(text):
            if m.start() > pos:
                blocks.append(Block("text", text[pos : m.start()]))
            kind = "code" if m.group("code") is not None else "output"
            blocks.append(Block(kind, m.group(f"{kind}_body")))
            pos = m.end()
        if pos < len(text):
            blocks.append(Block("text", text[pos:]))
        return blocks

    def join(self, blocks: list[Block]) -> str:
        out = []
        for b in blocks:
            if b.kind == "code":
                out.append(self.render_call(b.content))
            elif b.kind == "output":
                out.append(f"{self.out_open}{b.content}{self.out_close}")
            else:
                out.append(b.content)
        return "".join(out)
