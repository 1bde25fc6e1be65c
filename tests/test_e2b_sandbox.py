"""The E2B backend, through an injected fake client that answers with the SDK's own classes (no network here)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
import textwrap
import threading
import time
import traceback

import pytest

pytest.importorskip("e2b_code_interpreter")

import httpx  # a dependency of the SDK
from e2b import (
    AuthenticationException,
    RateLimitException,
    SandboxNotRunningException,
    TimeoutException,
)
from e2b_code_interpreter.models import Context, Execution, Logs, OutputMessage
from e2b_code_interpreter.models import ExecutionError as SDKExecutionError

from lightning_cort.sandbox import E2BSandbox
from lightning_cort.sandbox.e2b import E2BUnavailableError

pytestmark = pytest.mark.timeout(60)


class FakeSandbox:
    """Stands in for ``AsyncSandbox``: each code context is a namespace, code runs with ``exec``.

    Markers in the code: ``#sleep`` waits 0.2 s first; ``#timeout`` prints ``partial`` then raises the SDK's
    execution ``TimeoutException``.
    """

    def __init__(self, world: World, number: int) -> None:
        self.world = world
        self.number = number
        self.contexts: dict[str, dict] = {}
        self.dead = False
        self.kills = 0
        self.made = 0

    async def create_code_context(self, cwd=None, language=None, request_timeout=None) -> Context:
        if self.dead:
            raise SandboxNotRunningException("sandbox was not found: The sandbox was killed or reached its timeout.")
        self.made += 1
        ctx = Context(context_id=f"{self.number}-{self.made}", language="python", cwd="/home/user")
        self.contexts[ctx.id] = {"__name__": "__main__"}
        return ctx

    async def remove_code_context(self, context) -> None:
        self.contexts.pop(getattr(context, "id", context), None)

    async def run_code(self, code, context=None, on_stdout=None, on_stderr=None, **kwargs) -> Execution:
        world = self.world
        world.calls += 1
        world.run_kwargs.append(kwargs)
        world.running += 1
        world.max_running = max(world.max_running, world.running)
        try:
            if world.failures:
                raise world.failures.pop(0)
            if self.dead:
                raise SandboxNotRunningException("sandbox was not found: The sandbox was killed.")
            if code.startswith("#sleep"):
                await asyncio.sleep(0.2)
            if code.startswith("#timeout"):
                on_stdout(OutputMessage("partial\n", 0))
                raise TimeoutException(
                    "Execution timed out — the 'timeout' option can be used to increase this timeout"
                )
            namespace = self.contexts[context.id]
            out, err = io.StringIO(), io.StringIO()
            error = None
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    exec(compile(code, "<cell>", "exec"), namespace)
                except Exception as e:
                    # Jupyter's tracebacks are coloured with ANSI escapes.
                    tb = "".join(traceback.format_exception(e)).rstrip("\n")
                    error = SDKExecutionError(type(e).__name__, str(e), f"\x1b[0;31m{tb}\x1b[0m")
            logs = Logs(
                stdout=[out.getvalue()] if out.getvalue() else [], stderr=[err.getvalue()] if err.getvalue() else []
            )
            return Execution(logs=logs, error=error)
        finally:
            world.running -= 1

    async def kill(self) -> bool:
        self.kills += 1
        self.dead = True
        return True


class World:
    """The fake E2B service: a client factory plus scripted failures."""

    def __init__(self) -> None:
        self.sandboxes: list[FakeSandbox] = []
        self.create_kwargs: list[dict] = []
        self.create_failures: list[BaseException] = []
        self.failures: list[BaseException] = []
        self.run_kwargs: list[dict] = []
        self.calls = 0
        self.running = 0
        self.max_running = 0

    async def create(self, **kwargs) -> FakeSandbox:
        self.create_kwargs.append(kwargs)
        if self.create_failures:
            raise self.create_failures.pop(0)
        sandbox = FakeSandbox(self, len(self.sandboxes))
        self.sandboxes.append(sandbox)
        return sandbox


@pytest.fixture()
def world() -> World:
    return World()


@pytest.fixture()
def make(world):
    made: list[E2BSandbox] = []

    def factory(**kwargs) -> E2BSandbox:
        options = {
            "api_key": "test-key",
            "client_factory": world.create,
            "backoff_s": 0.001,
            "max_backoff_s": 0.01,
            "max_creations_per_s": 1000.0,
            "timeout": 2.5,
        }
        options.update(kwargs)
        sb = E2BSandbox(**options)
        made.append(sb)
        return sb

    yield factory
    for sb in made:
        sb.close()


def test_ok_output_and_stderr(make, world):
    sb = make(eager=True)
    assert len(world.sandboxes) == 1  # started eagerly
    assert world.create_kwargs[0]["api_key"] == "test-key"
    assert world.create_kwargs[0]["allow_internet_access"] is False
    r = sb.run("import sys\nprint(6 * 7)\nprint('warn', file=sys.stderr)")
    assert r.status == "ok" and r.ok and r.error is None
    assert r.stdout == "42\n" and r.stderr == "warn\n"
    assert not r.session_restarted and r.duration_s > 0
    assert world.run_kwargs[-1]["timeout"] == 2.5
    assert asyncio.run(sb.arun("print('async')")).stdout == "async\n"


def test_error_mapping_with_traceback(make):
    sb = make()
    r = sb.run("print('partial')\n1 / 0")
    assert r.status == "error" and r.stdout == "partial\n"
    assert r.error.name == "ZeroDivisionError" and r.error.value == "division by zero"
    assert r.error.traceback.startswith("Traceback (most recent call last):")
    assert r.error.traceback.endswith("ZeroDivisionError: division by zero")
    assert "\x1b" not in r.error.traceback  # colour codes removed
    r = sb.run("raise MemoryError('too big')")
    assert r.status == "oom" and r.error.name == "MemoryError"


def test_timeout_mapping_keeps_partial_output(make, world):
    sb = make()
    r = sb.run("#timeout", timeout=1.5)
    assert r.status == "timeout" and r.stdout == "partial\n" and r.error is None
    assert world.calls == 1  # a timeout is the code's doing: not retried
    assert world.run_kwargs[-1]["timeout"] == 1.5


def test_output_cap(make):
    sb = make(max_output_bytes=10)
    r = sb.run("print('x' * 100)")
    assert r.status == "ok" and r.stdout == "x" * 10 and r.stdout_truncated and not r.stderr_truncated


def test_transient_errors_are_retried(make, world):
    sb = make()
    world.failures = [httpx.ConnectError("connection refused"), RateLimitException("429: rate limit")]
    r = sb.run("print('fine')")
    assert r.status == "ok" and r.stdout == "fine\n"
    assert world.calls == 3


def test_persistent_failure_is_a_sandbox_error(make, world):
    sb = make(max_retries=2)
    world.failures = [httpx.ConnectError("network is down")] * 10
    r = sb.run("print(1)")  # does not raise
    assert r.status == "sandbox_error" and r.is_infrastructure_failure
    assert r.error.name == "ConnectError" and "network is down" in r.error.value
    assert world.calls == 3  # the first try and two retries


def test_dead_sandbox_and_network_down_is_a_sandbox_error(make, world):
    sb = make(max_retries=2)
    assert sb.run("print(1)").ok
    world.sandboxes[0].dead = True
    world.create_failures = [httpx.ConnectError("network is down")] * 10
    r = sb.run("print(2)")
    assert r.status == "sandbox_error" and r.error.name == "ConnectError"


def test_ambiguous_error_in_a_session_is_not_retried(make, world):
    sb = make()
    sid = sb.open_session()
    assert sb.run("x = 1", session=sid).ok
    calls = world.calls
    world.failures = [httpx.ReadError("connection reset mid-stream")]
    r = sb.run("x += 1", session=sid)  # the code may have run: running it again would add 2
    assert r.status == "sandbox_error" and world.calls == calls + 1
    world.failures = [httpx.ReadError("connection reset mid-stream")]
    assert sb.run("print('stateless')").ok  # without a session, a retry is harmless


def test_sessions_keep_state_and_restart_after_sandbox_death(make, world):
    sb = make(max_sandboxes=2)
    a, b = sb.open_session(), sb.open_session()
    assert sb.run("x = 41", session=a).ok
    assert sb.run("y = 1", session=b).ok
    r = sb.run("print(x + 1)", session=a)
    assert r.status == "ok" and r.stdout == "42\n" and not r.session_restarted
    assert sb.run("print(x)", session=b).error.name == "NameError"  # sessions do not share state
    assert sb.run("print(x)").error.name == "NameError"  # nor do executions without a session

    home = next(s for s in world.sandboxes if any("x" in ns for ns in s.contexts.values()))
    home.dead = True  # the sandbox of session a dies (e.g. reached its lifetime)
    r = sb.run("print(x)", session=a)
    assert r.session_restarted and r.status == "error" and r.error.name == "NameError"
    assert home.kills == 1  # the dead sandbox was dropped from the pool (and killed, best effort)
    assert sb.run("x = 7", session=a).ok
    r = sb.run("print(x)", session=a)
    assert r.stdout == "7\n" and not r.session_restarted  # only the first result after the restart says so

    sb.close_session(a)
    r = sb.run("print(x)", session=a)  # a closed session runs in a fresh interpreter
    assert r.session_restarted and r.error.name == "NameError"


def test_unknown_session_is_reported_restarted(make):
    sb = make()
    r = sb.run("print(1)", session="never-opened")
    assert r.ok and r.session_restarted


def test_sandboxes_are_reused(make, world):
    sb = make(max_sandboxes=2)
    for i in range(10):
        assert sb.run(f"print({i})").stdout == f"{i}\n"
    assert len(world.sandboxes) == 1  # sequential executions share one sandbox
    results = sb.run_many([f"#sleep\nprint({i})" for i in range(12)])
    assert all(r.ok for r in results)
    assert 1 <= len(world.sandboxes) <= 2
    sessions = [sb.open_session() for _ in range(6)]
    assert all(r.ok for r in sb.run_many(["z = 1"] * 6, sessions=sessions))
    assert len(world.sandboxes) <= 2


def test_run_many_keeps_order_and_runs_concurrently(make, world):
    sb = make(max_sandboxes=2, max_concurrency=8)
    start = time.perf_counter()
    results = sb.run_many([f"#sleep\nprint({i})" for i in range(8)])
    elapsed = time.perf_counter() - start
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(8)]
    assert world.max_running > 1 and elapsed < 8 * 0.2
    world.max_running = 0
    capped = make(max_sandboxes=2, max_concurrency=2)
    assert all(r.ok for r in capped.run_many(["#sleep\npass"] * 6))
    assert world.max_running <= 2
    # One session's snippets run one after the other, in input order.
    sid = sb.open_session()
    results = sb.run_many(["n = 1", "n *= 10", "n += 2", "print(n)"], sessions=[sid] * 4)
    assert results[-1].stdout == "12\n"
    with pytest.raises(ValueError):
        sb.run_many(["1", "2"], sessions=[None])


def test_run_from_several_threads(make):
    sb = make(max_sandboxes=2)
    out: list = [None] * 6

    def work(i: int) -> None:
        out[i] = sb.run(f"print({i})")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.stdout for r in out] == [f"{i}\n" for i in range(6)]


def test_missing_api_key(make, world, monkeypatch):
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    sb = make(api_key=None)
    with pytest.raises(E2BUnavailableError, match="E2B_API_KEY"):
        sb.run("print(1)")
    with pytest.raises(E2BUnavailableError, match="E2B_API_KEY"):
        sb.run_many(["print(1)", "print(2)"])
    with pytest.raises(E2BUnavailableError, match="api_key"):
        make(api_key=None, eager=True)
    assert world.sandboxes == [] and world.create_kwargs == []
    with pytest.raises(E2BUnavailableError, match="E2B_API_KEY"):  # the real factory, still no network needed
        E2BSandbox(api_key=None, eager=True)
    monkeypatch.setenv("E2B_API_KEY", "from-env")
    assert sb.run("print(1)").ok and world.create_kwargs[0]["api_key"] == "from-env"


def test_rejected_key_or_unreachable_service(make, world):
    world.create_failures = [AuthenticationException("Invalid API key")]
    with pytest.raises(E2BUnavailableError, match="rejected the API key"):
        make(eager=True)
    world.create_failures = [httpx.ConnectError("dns error")]
    sb = make()
    with pytest.raises(E2BUnavailableError, match="cannot reach the E2B service"):
        sb.run("print(1)")
    assert isinstance(E2BUnavailableError("x"), RuntimeError)
    assert sb.run("print(1)").ok  # the next use tries again


def test_close_kills_sandboxes_and_is_idempotent(make, world):
    sb = make(max_sandboxes=3)
    sb.run_many(["#sleep\npass"] * 6)
    assert world.sandboxes
    sb.close()
    assert all(s.kills == 1 for s in world.sandboxes)
    sb.close()
    assert all(s.kills == 1 for s in world.sandboxes)
    r = sb.run("print(1)")
    assert r.status == "sandbox_error" and r.error.name == "SandboxClosed"
    assert [r.status for r in sb.run_many(["1", "2"])] == ["sandbox_error"] * 2
    with make() as other:
        assert other.run("print(1)").ok
    assert world.sandboxes[-1].kills == 1


def test_import_does_not_load_the_sdk():
    code = textwrap.dedent(
        """
        import sys
        import lightning_cort.sandbox.e2b
        from lightning_cort.sandbox import E2BSandbox
        assert not any(m.split(".")[0] in {"e2b", "e2b_code_interpreter"} for m in sys.modules), sorted(sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
