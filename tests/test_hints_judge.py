"""The LLM hint judge against a real local HTTP server (127.0.0.1, no network) with canned OpenAI-format answers:
quotes mapped to offsets, both HTTP clients (httpx and urllib), and every failure as a HintJudgeError."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hint_traces import SQUARES_PROBLEM, SQUARES_TRACE, TWO_CHECKS_TRACE

from lightning_cort import _imports
from lightning_cort.hints import HintJudgeError, HintPoint, LLMJudgeDetector, locate_quote


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, dict(self.headers), json.loads(body)))  # type: ignore[attr-defined]
        status, payload, delay = self.server.responses.pop(0)  # type: ignore[attr-defined]
        time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests, server.responses = [], []  # type: ignore[attr-defined]
    server.handle_error = lambda *a: None  # a client that timed out closes the socket under a sleeping handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _completion(content: str) -> bytes:
    message = {"role": "assistant", "content": content}
    return json.dumps({"object": "chat.completion", "choices": [{"index": 0, "message": message}]}).encode()


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


@pytest.fixture(params=["httpx", "urllib"])
def client_kind(request, monkeypatch):
    if request.param == "urllib":
        monkeypatch.setattr(_imports, "HTTPX_AVAILABLE", False)
    elif not _imports.HTTPX_AVAILABLE:
        pytest.skip("httpx is not installed")
    return request.param


def test_judge_points_are_mapped_to_offsets(judge_server, client_kind):
    t = TWO_CHECKS_TRACE
    answer = {
        "points": [
            {"kind": "calculate", "quote": "We compute \\[ 347", "reason": "multiplies by hand"},  # white space differs
            {"kind": "trust", "quote": "Let me double-check the last digit", "reason": "re-checks"},
            {"kind": "trust", "quote": "“But wait, is that right?…”", "reason": "doubts"},  # quotes and ellipsis
            {"kind": "trust", "quote": "This sentence is not in the trace"},
            {"kind": "verify", "quote": "Good."},
            {"kind": "trust", "quote": "Let me double-check"},  # the same point twice
        ]
    }
    content = "<think>They want JSON {not this}.</think>Here you go:\n```json\n" + json.dumps(answer) + "\n```"
    judge_server.responses.append((200, _completion(content), 0))
    judge = LLMJudgeDetector(_url(judge_server), "judge-model", "secret-key", timeout=5)
    with pytest.warns(UserWarning) as caught:
        points = judge("What is the integer part of the square root of 347 * 521?", t)
    assert points == [
        HintPoint("calculate", t.index("We compute"), "multiplies by hand"),
        HintPoint("trust", t.index("Let me double-check"), "re-checks"),
        HintPoint("trust", t.index("But wait"), "doubts"),
    ]
    messages = [str(w.message) for w in caught]
    assert any("quote 'This sentence is not in the trace' is not in the trace; dropped" in m for m in messages)
    assert any("dropped an invalid point {'kind': 'verify'" in m for m in messages)
    assert all(_url(judge_server) in m for m in messages)
    ((path, headers, body),) = judge_server.requests
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer secret-key"
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    assert body["messages"][0]["role"] == "system" and '"calculate"' in body["messages"][0]["content"]
    assert t in body["messages"][1]["content"] and "347 * 521" in body["messages"][1]["content"]


def test_judge_failures_name_the_endpoint(judge_server, client_kind):
    url = _url(judge_server)
    judge = LLMJudgeDetector(url, "m", timeout=5)
    judge_server.responses.append((500, b'{"error": "model crashed"}', 0))
    with pytest.raises(
        HintJudgeError, match=rf"LLM judge at {url}/chat/completions returned HTTP 500: .*model crashed"
    ):
        judge(SQUARES_PROBLEM, SQUARES_TRACE)
    judge_server.responses.append((200, b"<html>not json</html>", 0))
    with pytest.raises(HintJudgeError, match=rf"LLM judge at {url}/chat/completions sent no chat completion"):
        judge(SQUARES_PROBLEM, SQUARES_TRACE)
    judge_server.responses.append((200, _completion("I think the hint goes after the output."), 0))
    with pytest.raises(HintJudgeError, match=r'did not answer with \{"points": \[...\]\} JSON'):
        judge(SQUARES_PROBLEM, SQUARES_TRACE)
    judge_server.responses.append((200, json.dumps({"choices": []}).encode(), 0))
    with pytest.raises(HintJudgeError, match="sent no chat completion"):
        judge(SQUARES_PROBLEM, SQUARES_TRACE)
    judge_server.responses.append((200, _completion("{}"), 0.5))
    with pytest.raises(HintJudgeError, match=rf"LLM judge at {url}/chat/completions did not answer within 0.2 s"):
        LLMJudgeDetector(url, "m", timeout=0.2)(SQUARES_PROBLEM, SQUARES_TRACE)
    judge_server.responses.append((200, _completion('{"points": []}'), 0))
    assert judge(SQUARES_PROBLEM, SQUARES_TRACE) == []


def test_unreachable_judge(client_kind):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = LLMJudgeDetector(f"http://127.0.0.1:{port}", "m", timeout=5)
    assert judge.url == f"http://127.0.0.1:{port}/v1/chat/completions"
    with pytest.raises(
        HintJudgeError, match=rf"LLM judge at http://127.0.0.1:{port}/v1/chat/completions is unreachable"
    ):
        judge(SQUARES_PROBLEM, SQUARES_TRACE)


def test_endpoint_forms_and_quote_location():
    assert LLMJudgeDetector("http://h:1/v1/", "m").url == "http://h:1/v1/chat/completions"
    assert LLMJudgeDetector("http://h:1/api/chat/completions", "m").url == "http://h:1/api/chat/completions"
    t = "Print it.\n```python\nprint('Print it.')\n```\n```output\nPrint it.\n```\nPrint it.  Again."
    assert locate_quote(t, "Print it.") == 0
    assert locate_quote(t, "Print it. Again") == t.rindex("Print it.")  # white space differs
    assert locate_quote(t, "Print it.", after=1) == t.index("'Print it.'") + 1  # in the code: blocks not skipped
    from lightning_cort.formats import CoRTFormat
    from lightning_cort.hints._text import block_spans

    spans = block_spans(t, CoRTFormat())
    assert locate_quote(t, "Print it.", spans, after=1) == t.rindex("Print it.")  # code and output skipped
    assert locate_quote(t, "print(", spans) is None and locate_quote(t, " … ", spans) is None
