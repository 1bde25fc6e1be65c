"""CoRT's format: markdown fences (```` ```python ```` / ```` ```output ````) and a boxed answer after ``</think>``."""

from __future__ import annotations

from lightning_cort.formats._common import DelimitedFormat

#: The instruction CoRT appends to every problem (``problem + "\\n" + CORT_SUFFIX``).
CORT_SUFFIX = (
    "Please integrate natural language reasoning with python programs to solve the problem above, "
    "and put your final answer within \\boxed{}."
)
#: CoRT's prompt hint, inserted right after ``<think>`` (the paper's traces follow it with a period).
CORT_PROMPT_HINT = "Okay, let's try to solve this problem step by step using multiple python code calls"
#: Hint-1, where a trace starts a tedious manual calculation (followed by an opening code fence).
CORT_HINT_CALCULATE = "It looks tedious, and we can use python code to simplify the reasoning."
#: Hint-2, where a trace starts re-verifying a code result by hand.
CORT_HINT_TRUST = "We don't need to doubt the accuracy of python calculations."
#: The notice CoRT appends inside the output block of the last allowed execution.
CORT_BUDGET_NOTICE = (
    "\n\n[SYSTEM]\nYou have exceeded the allowed number of code executions. You can no longer write or run code. "
    "Please continue solving the problem using your reasoning and analytical skills."
)


class CoRTFormat(DelimitedFormat):
    """Markdown code fences as in CoRT.

    The model writes ```` ```python\\n<code>\\n```\\n ````; the environment appends
    ```` ```output\\n<result>\\n```\\n ````
    with the result stripped and middle-truncated to ``max_output_chars`` (CoRT: 800 → 400 + ``...`` + 400), and
    CoRT's ``[SYSTEM]`` notice inside the block on the last allowed execution.

    Deliberate difference from CoRT's code: generation pauses on ``"\\n```\\n"`` (a closing fence on its own line)
    rather than on any token ending in a backtick and a newline, so inline code and other fenced blocks do not burn a
    tool round. Set ``stop="`\\n"`` to reproduce the paper code's stop.

    As real models write code (each decided here, tested on the Qwen2 vocabulary):

    * the opening fence may say ``python``, ``py`` or ``python3`` (any case); traces write ``python``;
    * a closing fence with or without its trailing newline closes the call (``find_call``); generation pauses on the
      newline form, and a fence followed directly by the end of the model's turn (```` ``` ```` then
      ``<|im_end|>``, as chat models end an answer they expect a user to run) is executed too: the rollout engine
      drops that end-of-turn token and continues the turn after the output, as if the fence had been the stop;
    * a fence followed by more text on the same line, or a block without a language tag, is not a call.

    Args:
        max_output_chars: Truncation length of interpreter output (``0`` disables truncation).
        budget_notice: Text appended to the last allowed execution's output (CoRT's ``[SYSTEM]`` notice by default).
        stop: Override of the stop string.
    """

    name = "cort"
    code_open = "```python\n"
    code_close = "\n```\n"
    out_open = "```output\n"
    out_close = "\n```\n"
    answer_template = "\\boxed{{{answer}}}"
    notice = CORT_BUDGET_NOTICE
    code_open_re = r"```(?i:python3?|py)[ \t]*\n"

    def __init__(self, max_output_chars: int = 800, budget_notice: str | None = None, stop: str | None = None) -> None:
        super().__init__(max_output_chars=max_output_chars, budget_notice=budget_notice)
        self._stop = stop

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return (self._stop,) if self._stop else (self.code_close,)
