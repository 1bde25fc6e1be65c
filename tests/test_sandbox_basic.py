"""The first-version local sandbox: timeouts, errors, sessions, output caps, crashes."""

from __future__ import annotations

import os
import time

from lightning_cort.sandbox import LocalSandbox


def test_ok_and_error(sandbox):
    r = sandbox.run("print(6 * 7)")
    assert r.status == "ok" and r.stdout == "42\n" and r.error is None
    r = sandbox.run("print('partial')\n1 / 0")
    assert r.status == "error" and r.error.name == "ZeroDivisionError"
    assert r.error.traceback.startswith("Traceback (most recent call last):")
    assert "lightning_cort" not in r.error.traceback  # the sandbox's own frames are hidden
    assert r.error.traceback.endswith("ZeroDivisionError: division by zero")


def test_timeout_kills_the_process_group():
    with LocalSandbox(timeout=1.0) as sb:
        start = time.perf_counter()
        r = sb.run(
            "import signal, subprocess\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "subprocess.Popen(['sleep', '30'])\nwhile True: pass"
        )
        elapsed = time.perf_counter() - start
        assert r.status == "timeout"
        assert elapsed < 1.0 + 0.5
        assert sb.run("print('next')").stdout == "next\n"  # the sandbox keeps working


def test_timeout_per_call_overrides_default(sandbox):
    r = sandbox.run("import time; time.sleep(5)", timeout=0.5)
    assert r.status == "timeout" and r.duration_s < 1.0


def test_output_is_capped():
    with LocalSandbox(max_output_bytes=1000) as sb:
        r = sb.run("print('x' * 10**7)")
        assert r.status == "ok" and r.stdout_truncated and len(r.stdout) == 1000


def test_crash_and_exit_codes(sandbox):
    assert sandbox.run("import os; os._exit(3)").status == "crashed"
    assert sandbox.run("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)").status == "crashed"
    assert sandbox.run("import sys; print('bye'); sys.exit(0)").status == "ok"


def test_memory_limit_reports_oom():
    with LocalSandbox(memory_mb=256) as sb:
        r = sb.run("x = bytearray(1 << 30)")
        assert r.status == "oom"


def test_sessions_keep_state_and_are_isolated(sandbox):
    s1, s2 = sandbox.open_session(), sandbox.open_session()
    assert sandbox.run("x = 41", session=s1).status == "ok"
    assert sandbox.run("print(x + 1)", session=s1).stdout == "42\n"
    assert sandbox.run("print(x)", session=s2).error.name == "NameError"
    assert sandbox.run("print(x)").error.name == "NameError"  # no session, no state
    sandbox.close_session(s1)


def test_environment_is_scrubbed_and_stdin_closed(sandbox, monkeypatch):
    os.environ["LIGHTNING_CORT_SECRET_FOR_TEST"] = "hunter2"
    try:
        r = sandbox.run("import os; print(os.environ.get('LIGHTNING_CORT_SECRET_FOR_TEST'))")
        assert r.stdout == "None\n"
    finally:
        del os.environ["LIGHTNING_CORT_SECRET_FOR_TEST"]
    r = sandbox.run("print(input())")
    assert r.status == "error" and r.error.name == "EOFError"


def test_run_many_keeps_order(sandbox):
    results = sandbox.run_many([f"print({i})" for i in range(6)])
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]


def test_closed_sandbox_returns_sandbox_error():
    sb = LocalSandbox()
    sb.close()
    r = sb.run("print(1)")
    assert r.status == "sandbox_error" and r.is_infrastructure_failure


def test_python_installation_stays_reachable(sandbox):
    """Isolation hides host directories, never the interpreter: non-preloaded modules import and the interpreter
    can be started (wherever the virtual environment lives, /tmp included)."""
    r = sandbox.run("import sympy.stats, fractions, sqlite3\nprint('imported')")
    assert r.status == "ok" and r.stdout == "imported\n", r
    r = sandbox.run(
        "import subprocess, sys\nprint(subprocess.run([sys.executable, '-c', 'print(5)'], "
        "capture_output=True, text=True).stdout)"
    )
    assert r.status == "ok" and r.stdout.strip() == "5", r
