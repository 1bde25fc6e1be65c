"""Stateful sessions of the local sandbox: live interpreters, restarts, and CoRT's replay semantics."""

from __future__ import annotations

import asyncio

import pytest

from lightning_cort.sandbox import LocalSandbox
from lightning_cort.sandbox.local import cort_replay_program


def test_session_restarts_after_a_crash_and_says_so(sandbox):
    sid = sandbox.open_session()
    assert sandbox.run("x = 1", session=sid).ok
    crash = sandbox.run("import os\nos._exit(1)", session=sid)
    assert crash.status == "crashed" and not crash.session_restarted
    after = sandbox.run("print(x)", session=sid)
    assert after.session_restarted and after.status == "error" and after.error.name == "NameError"
    assert sandbox.run("print('fresh state works')", session=sid).stdout == "fresh state works\n"


def test_session_restarts_after_a_timeout():
    with LocalSandbox(timeout=0.5) as sb:
        sid = sb.open_session()
        sb.run("x = 41", session=sid)
        assert sb.run("while True:\n    pass", session=sid).status == "timeout"
        r = sb.run("print(x)", session=sid)
        assert r.session_restarted and r.error.name == "NameError"


def test_sessions_survive_a_server_restart_flagged():
    with LocalSandbox(timeout=2) as sb:
        sid = sb.open_session()
        sb.run("x = 1", session=sid)
        import os

        os.kill(sb.server_pid, 9)
        import time

        time.sleep(0.1)
        results = [sb.run("print(2)", session=sid) for _ in range(2)]
        assert any(r.session_restarted for r in results)
        assert results[-1].stdout == "2\n"


def test_unknown_session_is_an_error(sandbox):
    with pytest.raises(KeyError, match="open_session"):
        sandbox.run("print(1)", session="nope")


def test_cells_of_one_session_run_in_order_in_run_many(sandbox):
    sid = sandbox.open_session()
    codes = ["x = 1", "x += 1", "x *= 10", "print(x)"]
    results = sandbox.run_many(codes, sessions=[sid] * 4)
    assert results[-1].stdout == "20\n"


def test_arun_runs_concurrently(sandbox):
    async def go():
        return await asyncio.gather(*(sandbox.arun(f"import time\ntime.sleep(0.3)\nprint({i})") for i in range(2)))

    import time

    start = time.perf_counter()
    results = asyncio.run(go())
    assert [r.stdout for r in results] == ["0\n", "1\n"]
    assert time.perf_counter() - start < 0.55  # two workers: in parallel, not one after the other


def test_cort_replay_program_matches_the_papers_executor():
    history = [
        ("import sympy as sp\nx = sp.symbols('x')\nr = sp.solve(x**2 - 4, x)\nprint(r)", "[-2, 2]"),
        ("print(undefined_name)", "Traceback (most recent call last):\nNameError: name 'undefined_name'"),
        ("for i in range(3):\n    y = i\n    print(y)", "0\n1\n2"),
        ("z = 'an error-free block whose output mentions error'", "error"),
    ]
    program = cort_replay_program(history, "print(y + 1)")
    # Block 1 without its print line; the NameError block and the block with an indented print are dropped whole,
    # and so is the block whose successful output merely contains the word "error"; the new block goes last.
    assert program == "import sympy as sp\nx = sp.symbols('x')\nr = sp.solve(x**2 - 4, x)\nprint(y + 1)"
    assert cort_replay_program([], "x = input()") == "raise RuntimeError()"
    assert cort_replay_program([], "import os\nos.system('ls')") == "raise RuntimeError()"


def test_cort_replay_mode_end_to_end():
    with LocalSandbox(timeout=5, cort_replay=True) as sb:
        sid = sb.open_session()
        assert (
            sb.run("import sympy as sp\nx = sp.symbols('x')\nr = sp.solve(x**2 - 4, x)\nprint(r)", session=sid).stdout
            == "[-2, 2]\n"
        )
        assert sb.run("print(undefined_name)", session=sid).error.name == "NameError"
        assert sb.run("for i in range(3):\n    y = i\n    print(y)", session=sid).stdout == "0\n1\n2\n"
        assert sb.run("print(y + 1)", session=sid).error.name == "NameError"  # the loop block was not replayed
        assert sb.run("print(r)", session=sid).stdout == "[-2, 2]\n"  # block 1 replayed silently
