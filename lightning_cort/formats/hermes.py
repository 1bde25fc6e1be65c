"""Chat-template tool calls in the Hermes style that Qwen2.5 (and other ChatML models) are trained on: the model writes
``<tool_call>{"name": "python", "arguments": {"code": ...}}</tool_call>``, the interpreter output comes back as a
``tool`` turn.

This is the format TRL's ``GRPOTrainer`` and vLLM's ``hermes`` tool parser use for these models; with it, a rollout of
lightning_cort and one of TRL produce the same tokens for the same samples (``benchmarks/rl_vs_trl.py``).
"""

from __future__ import annotations

import json
from typing import Any

from lightning_cort.formats._common import DelimitedFormat
from lightning_cort.formats.base import Block, CodeCall

#: The description of the ``python`` tool in the chat template's tool list.
PYTHON_TOOL_DESCRIPTION = "Run a Python program in a persistent interpreter session and return what it prints."
#: The description of its ``code`` argument.
PYTHON_TOOL_CODE_DESCRIPTION = "The program; print the values you need."


class HermesFormat(DelimitedFormat):
    """Tool calls as chat turns (ChatML with Hermes ``<tool_call>`` blocks, as Qwen2.5-Instruct writes them).

    * The prompt lists one tool, ``python(code: str) -> str``, through the chat template (:attr:`tools`).
    * The model writes ``<tool_call>\\n{"name": "python", "arguments": {"code": "..."}}\\n</tool_call>``; generation
      pauses on ``</tool_call>``. A block that is not valid JSON, names another tool or has no string ``code``
      argument is not a call (generation goes on).
    * The environment appends the end of the assistant turn and a tool turn, exactly as the chat template renders a
      ``tool`` message, then opens the next assistant turn:
      ``<|im_end|>\\n<|im_start|>user\\n<tool_response>\\n...\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n``.
      The end-of-turn token after the call is therefore forced (masked), where TRL's loop samples it: the same
      tokens, one of them with the other provenance.
    * Output is middle-truncated to ``max_output_chars`` (or to a token budget by the rollout's
      ``max_output_tokens``); the answer goes in ``\\boxed{}``.

    Parsing (:meth:`parse`) decodes the JSON, so a :class:`Block` of kind ``code`` holds the program; :meth:`join`
    renders it back in the template's spelling (``json.dumps`` without ASCII escaping).

    Args:
        max_output_chars: Truncation length of interpreter output (``0`` disables truncation).
        budget_notice: Text appended to the last allowed execution's output (none by default).
    """

    name = "hermes"
    tool_name = "python"
    code_open = "<tool_call>\n"
    code_close = "\n</tool_call>"
    out_open = "<|im_end|>\n<|im_start|>user\n<tool_response>\n"
    out_close = "\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    output_on_new_line = False

    @property
    def tools(self) -> tuple[dict[str, Any], ...]:
        """The tool list the chat template renders into the prompt (``apply_chat_template(..., tools=...)``)."""
        return (
            {
                "type": "function",
                "function": {
                    "name": self.tool_name,
                    "description": PYTHON_TOOL_DESCRIPTION,
                    "parameters": {
                        "type": "object",
                        "properties": {"code": {"type": "string", "description": PYTHON_TOOL_CODE_DESCRIPTION}},
                        "required": ["code"],
                    },
                    "return": {"type": "string"},
                },
            },
        )

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return ("</tool_call>",)

    def find_call(self, text: str) -> CodeCall | None:
        """The last ``<tool_call>`` block, if only whitespace follows it and it calls ``python`` with a ``code``."""
        start = text.rfind("<tool_call>")
        if start < 0:
            return None
        close = text.find("</tool_call>", start)
        if close < 0 or text[close + len("</tool_call>") :].strip():
            return None
        code = self._code(text[start + len("<tool_call>") : close])
        if code is None:
            return None
        return CodeCall(code=code, start=start, end=close + len("</tool_call>"))

    def _code(self, body: str) -> str | None:
        try:
            call = json.loads(body)
        except ValueError:
            return None
        if not isinstance(call, dict) or call.get("name") != self.tool_name:
            return None
        arguments = call.get("arguments")
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        code = arguments.get("code") if isinstance(arguments, dict) else None
        return code if isinstance(code, str) else None

    def render_call(self, code: str) -> str:
        arguments = json.dumps({"code": code}, ensure_ascii=False)
        return f'<tool_call>\n{{"name": "{self.tool_name}", "arguments": {arguments}}}\n</tool_call>'

    def parse(self, text: str) -> list[Block]:
        """The delimited blocks, with each call's JSON decoded to its program; a block that is not a python call
        stays text."""
        blocks: list[Block] = []
        for b in super().parse(text):
            if b.kind == "code":
                code = self._code(b.content)
                b = (
                    Block("code", code)
                    if code is not None
                    else Block("text", self.code_open + b.content + self.code_close)
                )
            if b.kind == "text" and blocks and blocks[-1].kind == "text":
                b = Block("text", blocks.pop().content + b.content)
            blocks.append(b)
        return blocks
