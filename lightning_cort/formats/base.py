"""The :class:`CodeFormat` protocol: how code calls and interpreter output are written inside a completion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from lightning_cort.sandbox.base import result_text

if TYPE_CHECKING:
    from lightning_cort.sandbox.base import ExecutionResult

__all__ = ["Block", "BlockKind", "CodeCall", "CodeFormat", "middle_truncate", "result_text"]

BlockKind = Literal["text", "code", "output"]


@dataclass(frozen=True)
class CodeCall:
    """A complete code call found in generated text.

    Attributes:
        code: The program to execute (without delimiters).
        start: Offset of the opening delimiter in the searched text.
        end: Offset just past the closing delimiter (and its newline, if any) in the searched text.
    """

    code: str
    start: int
    end: int


@dataclass(frozen=True)
class Block:
    """One piece of a parsed completion: free text, a code call, or an interpreter output."""

    kind: BlockKind
    content: str


def middle_truncate(text: str, max_chars: int) -> str:
    """Keep the first and last ``max_chars // 2`` characters with ``...`` between when ``text`` is longer than
    ``max_chars`` (CoRT's rule: 800 → 400 + ``...`` + 400). ``max_chars <= 0`` disables truncation."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    half = max_chars // 2
    return text[:half] + "..." + text[len(text) - half :]


@runtime_checkable
class CodeFormat(Protocol):
    """How a completion writes code calls, how interpreter output is shown to the model, and where the answer goes.

    Implementations are small and stateless; the rollout engine uses :attr:`stop_strings` to pause generation,
    :meth:`find_call` to get the code from the text generated since the last pause, and :meth:`render_result` for the
    forced (loss-masked) tokens it appends.
    """

    name: str
    #: Start the interpreter block on its own line when the model's text stops right at a call's close (markdown
    #: and tag formats); ``False`` where the block continues the text directly (chat-turn formats).
    output_on_new_line: bool

    @property
    def tools(self) -> tuple[dict[str, Any], ...]:
        """Tool schemas for the chat template's ``tools`` (empty when the instruction describes the interpreter)."""
        ...

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Strings whose generation ends a code call (generation pauses there)."""
        ...

    def find_call(self, text: str) -> CodeCall | None:
        """The complete code call that ends ``text`` (up to trailing whitespace), or ``None``."""
        ...

    def render_call(self, code: str) -> str:
        """How the model writes a call of ``code`` (used to build training traces)."""
        ...

    def render_output(self, text: str, *, budget_notice: bool = False, truncate: bool = True) -> str:
        """The interpreter block for raw output ``text`` (cut to the format's character limit unless ``truncate`` is
        off, e.g. when the rollout cut it by tokens; with the budget notice when asked)."""
        ...

    def render_result(self, result: ExecutionResult, *, budget_notice: bool = False) -> str:
        """The interpreter block for an execution result."""
        ...

    def render_answer(self, answer: str) -> str:
        """The final-answer text after the thinking."""
        ...

    def parse(self, text: str) -> list[Block]:
        """Split a completion into text, code and output blocks (inverse of :meth:`join`)."""
        ...

    def join(self, blocks: list[Block]) -> str:
        """Render blocks back to text."""
        ...
