"""An LLM judge that places hints: any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, SGLang, llama.cpp,
a hosted API) is asked where the hints go and answers with quotes of the sentences, which are mapped back to offsets.

HTTP goes through ``httpx`` when it is installed (it comes with the ``e2b`` extra) and through the standard library's
``urllib`` otherwise, so the judge adds no dependency.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import TYPE_CHECKING, Any

from lightning_cort import _imports
from lightning_cort.formats import resolve_format
from lightning_cort.formats.cort import CORT_HINT_CALCULATE, CORT_HINT_TRUST
from lightning_cort.hints._text import Span, block_spans, in_prose, normalize_space
from lightning_cort.hints.points import HINT_KINDS, HintPoint

if TYPE_CHECKING:
    from lightning_cort.formats.base import CodeFormat

__all__ = ["HintJudgeError", "LLMJudgeDetector", "locate_quote"]

_INSTRUCTIONS = f"""You review a reasoning trace written by a model that can run Python code while it thinks. \
Find where two hints should be inserted; each hint goes at the start of a sentence.

1. "calculate": the sentence where the model BEGINS a tedious calculation by hand (multi-digit arithmetic, long \
expansions, case-by-case enumeration) that a short Python program could do instead. The hint inserted there is: \
"{CORT_HINT_CALCULATE}"
2. "trust": the sentence where, right after a Python output that succeeded, the model BEGINS re-checking or doubting \
that numerical result by hand. Checking the logic of the code is fine and is not a "trust" point. The hint inserted \
there is: "{CORT_HINT_TRUST}"

Propose at most one point of each kind between two code blocks; propose none where no hint is needed.
Answer with JSON only, in exactly this form:
{{"points": [{{"kind": "calculate", "quote": "<the first 6 to 12 words of the sentence, copied exactly>", \
"reason": "<a few words>"}}]}}"""

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_ELLIPSIS = re.compile(r"(?:\.\.\.|…)+$")
_QUOTE_MARKS = "\"'“”‘’"


class HintJudgeError(RuntimeError):
    """The judge endpoint failed: unreachable, an HTTP error, or an answer that is not the JSON asked for."""


def _endpoint(base_url: str) -> str:
    """The chat-completions URL: ``base_url`` as given when it already ends with ``/chat/completions``, plus
    ``/chat/completions`` when it ends with ``/v1`` (the OpenAI clients' convention), else plus
    ``/v1/chat/completions``."""
    url = base_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


def _post(url: str, payload: dict[str, Any], headers: dict[str, str], timeout: float, client: Any) -> bytes:
    """POST ``payload`` as JSON; the response body, or :class:`HintJudgeError` for any transport or HTTP failure."""
    if client is not None or _imports.HTTPX_AVAILABLE:
        import httpx

        try:
            if client is not None:
                response = client.post(url, json=payload, headers=headers, timeout=timeout)
            else:
                response = httpx.post(url, json=payload, headers=headers, timeout=timeout)
        except httpx.TimeoutException as e:
            raise HintJudgeError(f"LLM judge at {url} did not answer within {timeout} s") from e
        except httpx.HTTPError as e:
            raise HintJudgeError(f"LLM judge at {url} is unreachable: {type(e).__name__}: {e}") from e
        if response.status_code >= 400:
            raise HintJudgeError(f"LLM judge at {url} returned HTTP {response.status_code}: {response.text[:300]}")
        return response.content
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={**headers, "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")[:300]
        raise HintJudgeError(f"LLM judge at {url} returned HTTP {e.code}: {body}") from e
    except TimeoutError as e:
        raise HintJudgeError(f"LLM judge at {url} did not answer within {timeout} s") from e
    except (urllib.error.URLError, OSError) as e:
        raise HintJudgeError(f"LLM judge at {url} is unreachable: {type(e).__name__}: {e}") from e


def _answer_points(content: str, url: str) -> list[Any]:
    """The ``points`` list of the judge's answer, which may wrap the JSON in a code fence, prose or a thinking block."""
    text = _THINK_BLOCK.sub("", content)
    decoder = json.JSONDecoder()
    for start in [m.start() for m in re.finditer(r"[{\[]", text)]:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and isinstance(value.get("points"), list):
            return value["points"]
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            return value
    raise HintJudgeError(f'LLM judge at {url} did not answer with {{"points": [...]}} JSON: {content[:300]!r}')


def locate_quote(trace: str, quote: str, spans: list[Span] | None = None, *, after: int = 0) -> int | None:
    """Where ``quote`` (the first words of a sentence, as a judge copied them) begins in ``trace``.

    Tries an exact match, then a match that ignores differences in white space (runs of spaces and line breaks);
    a trailing ellipsis and surrounding quote marks are dropped first. Occurrences inside code or output blocks are
    skipped; among the others the first at or after ``after`` wins, else the first.

    Args:
        trace: The trace.
        quote: The quoted words.
        spans: The trace's blocks (to skip code and output); ``None`` searches everywhere.
        after: Preferred earliest offset.

    Returns:
        The offset of the first quoted character, or ``None`` when the quote is not in the trace.
    """
    for _ in range(2):  # “Let me check…” or "Let me check"…
        quote = _ELLIPSIS.sub("", quote.strip().strip(_QUOTE_MARKS).strip()).strip()
    if not quote:
        return None
    hits = [m.start() for m in re.finditer(re.escape(quote), trace)]
    if not hits:
        flat, where = normalize_space(trace)
        needle = normalize_space(quote)[0]
        hits = [where[m.start()] for m in re.finditer(re.escape(needle), flat)]
    if spans is not None:
        hits = [h for h in hits if in_prose(spans, h)]
    if not hits:
        return None
    return next((h for h in hits if h >= after), hits[0])


class LLMJudgeDetector:
    """Asks a chat model where the hints go (a :class:`~lightning_cort.hints.HintDetector`).

    The model gets the problem, the trace and instructions describing both hints, and answers with JSON listing for
    each point its kind and a quote of the first words of the sentence where the hint goes. Quotes are located with
    :func:`locate_quote`; a quote that is not found, or an entry that is not a valid point, is dropped with a
    warning. ``trust`` quotes are looked for after the first output block first.

    Args:
        base_url: The server, e.g. ``http://127.0.0.1:8000/v1``: ``/chat/completions`` is appended to a URL ending
            in ``/v1``, ``/v1/chat/completions`` to one without, nothing to a full ``.../chat/completions`` URL.
        model: The model name sent in the request.
        api_key: Sent as a bearer token when given.
        timeout: Seconds to wait for an answer.
        client: An ``httpx.Client`` to send requests with (connection reuse, proxies, custom transports); ``None``:
            one request per call with ``httpx``, or ``urllib`` when ``httpx`` is not installed.
        code_format: The traces' code format (an instance or a name; CoRT's by default).
        temperature: Sampling temperature of the judge.
        max_tokens: Most tokens of the judge's answer (``None``: the server's default).

    Raises:
        HintJudgeError: From :meth:`__call__`, when the endpoint is unreachable, answers with an HTTP error, or does
            not answer with the JSON asked for; the message names the endpoint.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 30,
        client: Any = None,
        code_format: CodeFormat | str | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> None:
        self.url = _endpoint(base_url)
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.client = client
        self.code_format = resolve_format(code_format)
        self.temperature = temperature
        self.max_tokens = max_tokens

    def messages(self, problem: str, trace: str) -> list[dict[str, str]]:
        """The chat messages sent for one trace."""
        user = f"Problem:\n{problem}\n\nTrace:\n<<<\n{trace}\n>>>"
        return [{"role": "system", "content": _INSTRUCTIONS}, {"role": "user", "content": user}]

    def __call__(self, problem: str, trace: str) -> list[HintPoint]:
        """The points the judge proposes for ``trace``, in offset order."""
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages(problem, trace),
            "temperature": self.temperature,
        }
        if self.max_tokens is not None:
            payload["max_tokens"] = self.max_tokens
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = _post(self.url, payload, headers, self.timeout, self.client)
        try:
            content = json.loads(body)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            snippet = body[:300].decode(errors="replace")
            raise HintJudgeError(f"LLM judge at {self.url} sent no chat completion ({e!r}): {snippet!r}") from e
        if not isinstance(content, str):
            raise HintJudgeError(f"LLM judge at {self.url} sent a message without text content: {content!r}")
        return self._locate(trace, _answer_points(content, self.url))

    def _locate(self, trace: str, entries: list[Any]) -> list[HintPoint]:
        spans = block_spans(trace, self.code_format)
        first_output = next((s.end for s in spans if s.kind == "output"), 0)
        points: dict[tuple[str, int], HintPoint] = {}
        for entry in entries:
            kind, quote = (entry.get("kind"), entry.get("quote")) if isinstance(entry, dict) else (None, None)
            if kind not in HINT_KINDS or not isinstance(quote, str):
                warnings.warn(f"LLM judge at {self.url}: dropped an invalid point {entry!r}", stacklevel=3)
                continue
            offset = locate_quote(trace, quote, spans, after=first_output if kind == "trust" else 0)
            if offset is None:
                warnings.warn(f"LLM judge at {self.url}: quote {quote!r} is not in the trace; dropped", stacklevel=3)
                continue
            points.setdefault((kind, offset), HintPoint(kind, offset, str(entry.get("reason", ""))))
        return sorted(points.values(), key=lambda p: p.offset)
