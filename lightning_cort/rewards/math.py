r"""Reading a response's final answer: where the thinking ends and which ``\boxed{}`` counts (pure text, no torch).

Judging that answer against a gold one is :func:`lightning_cort.answers.check_answer`, the toolkit's one answer judge.

Thinking and non-thinking models are read by one rule. A *thinking* response (an R1-Distill model's: its chat template
opens ``<think>`` in the generation prompt, or the model writes it) answers after its thinking: the last ``\boxed{}``
after the first ``</think>``, and none while the thinking is still open (a response cut off mid-thought has no answer,
CoRT's RL reward). A response without thinking tags (an instruct model's, e.g. Qwen2.5-Instruct) answers with the
last ``\boxed{}`` anywhere in it. The judge tells them apart from the text it is given, so rewards and evaluation pass
the *response*: the completion preceded by the ``<think>`` the prompt opened, if it did (:func:`response_text`,
:attr:`lightning_cort.trajectory.Trajectory.response_text`).
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


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


def opens_thinking(prompt_text: str) -> bool:
    """Whether the prompt leaves a ``<think>`` open for the response (an R1-Distill chat template's generation prompt,
    possibly followed by forced reasoning text), so the response must close it before answering."""
    return prompt_text.rfind(THINK_OPEN) > prompt_text.rfind(THINK_CLOSE)


def response_text(prompt_text: str, completion: str) -> str:
    """The response as answer checking reads it: ``completion``, preceded by ``<think>`` when the prompt opened it."""
    return f"{THINK_OPEN}\n{completion}" if opens_thinking(prompt_text) else completion


def final_answer(response: str) -> str | None:
    r"""The final answer of a response: in a thinking response the last ``\boxed{}`` after the first ``</think>``
    (``None`` while the thinking is open), otherwise the last ``\boxed{}`` anywhere.

    Args:
        response: The response as :func:`response_text` gives it (with the ``<think>`` the prompt opened).
    """
    if THINK_CLOSE in response:
        return last_boxed(response.split(THINK_CLOSE, 1)[1])
    if THINK_OPEN in response:
        return None  # still thinking: cut off before an answer
    return last_boxed(response)
