"""The zygote that forks the local sandbox's children: same executions as without it, survives its own death, leaves
nothing behind."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from lightning_cort.sandbox import LocalSandbox

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux process model")

#: What an execution sees of its own process; must be the same whether the zygote or the server forked it.
PROBES = [
    "import os\nprint(os.getppid() != os.getpid(), os.getpgid(0) == os.getpid(), os.getsid(0) == os.getpid())",
    "import os\nprint(os.getuid() == os.geteuid(), os.getuid() >= 61000 or os.getuid() == os.geteuid(), "
    "os.getgroups())",
    "import os\nprint(sorted(os.environ), os.environ['HOME'] == os.getcwd() == os.environ['TMPDIR'], os.listdir('.'))",
    "import os\nprint(sorted(os.listdir('/proc/self/fd')))",
    "import fcntl\nprint([fcntl.fcntl(fd, fcntl.F_GETFL) & 3 for fd in (0, 1, 2)])",
    "import resource as r\nprint([r.getrlimit(k) for k in (r.RLIMIT_AS, r.RLIMIT_CPU, r.RLIMIT_FSIZE, r.RLIMIT_NOFILE, "
    "r.RLIMIT_CORE)])",
    "import signal as s\nprint([s.getsignal(x) for x in (s.SIGINT, s.SIGTERM, s.SIGCHLD, s.SIGPIPE)], "
    "s.set_wakeup_fd(-1))",
    "import sys\nprint(sys.stdout.encoding, sys.stdout.errors, sys.stdout.write_through, sys.stdout.seekable(), "
    "sys.stderr.errors, sys.stdin.seekable(), repr(sys.stdin.read()), sys.__stdout__ is sys.stdout)",
    "import threading\nprint(threading.main_thread() is threading.current_thread(), threading.active_count())",
    "import gc\nprint(gc.isenabled(), gc.get_threshold())",
    "import sys\nsys.stdout.write('\\udcff é\\n')",
    "raise KeyboardInterrupt",
    "import sys\nsys.exit(3)",
    "import sys\nsys.exit(0)",
    "import os\nos._exit(5)",
    "def f(:\n    pass",
    "import os\npid = os.fork()\nif pid == 0:\n    import random\n    print('child', random.random() < 1)\n"
    "    os._exit(0)\nos.waitpid(pid, 0)\nprint('parent')",
]


def _observed(sb: LocalSandbox) -> list[tuple]:
    out = []
    for code in PROBES:
        r = sb.run(code)
        err = (r.error.name, r.error.value, r.error.traceback) if r.error else None
        # exit_code of a finished execution depends on whether it was reaped before its result was read
        out.append((r.status, r.stdout, r.stderr, err, r.exit_code if r.status == "crashed" else None))
    return out


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _wait_dead(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(pid)


@pytest.mark.parametrize("isolate", [True, False], ids=["isolated", "no-namespaces-no-uids"])
def test_executions_are_the_same_with_and_without_the_zygote(isolate):
    with (
        LocalSandbox(timeout=5, isolate=isolate) as with_zygote,
        LocalSandbox(timeout=5, isolate=isolate, zygote=False) as without,
    ):
        assert with_zygote.stats()["zygote"] is not None
        assert without.stats()["zygote"] is None
        assert _observed(with_zygote) == _observed(without)
        # different randomness in every execution, either way
        for sb in (with_zygote, without):
            code = "import random, numpy\nprint(random.random(), numpy.random.rand())"
            draws = [sb.run(code).stdout for _ in range(3)]
            assert len(set(draws)) == 3


def test_children_are_the_servers_children():
    with LocalSandbox(timeout=5) as sb:
        r = sb.run("import os\nprint(os.getppid())")
        assert r.stdout == f"{sb.server_pid}\n"
        stats = sb.stats()
        assert stats["zygote"] not in (None, sb.server_pid)
        for pid in stats["idle"]:
            assert f"\nPPid:\t{sb.server_pid}\n" in Path(f"/proc/{pid}/status").read_text()


def test_a_dead_zygote_is_replaced_and_the_next_execution_succeeds():
    with LocalSandbox(timeout=5) as sb:
        sid = sb.open_session()
        assert sb.run("x = 41", session=sid).ok
        first = sb.stats()["zygote"]
        os.kill(first, signal.SIGKILL)
        assert _wait_dead(first)
        r = sb.run("print(6 * 7)")
        assert r.status == "ok" and r.stdout == "42\n", r
        assert all(r.ok for r in sb.run_many(["print(1)"] * 20))
        after = sb.stats()
        assert after["zygote"] not in (None, first) and after["zygote_restarts"] >= 1
        # the session's interpreter is the server's child, not the zygote's: it lived through it
        r = sb.run("print(x + 1)", session=sid)
        assert r.stdout == "42\n" and not r.session_restarted
        assert sb.restarts == 0


def test_a_stuck_zygote_is_replaced():
    with LocalSandbox(timeout=5) as sb:
        stuck = sb.stats()["zygote"]
        os.kill(stuck, signal.SIGSTOP)
        try:
            results = sb.run_many(["print('after')"] * 6)  # more than the children forked ahead
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stuck, signal.SIGCONT)
        assert [r.stdout for r in results] == ["after\n"] * 6
        assert _wait_dead(stuck)
        assert sb.stats()["zygote"] not in (None, stuck)


def test_killing_the_zygote_during_a_batch_loses_no_execution():
    with LocalSandbox(timeout=5) as sb:
        zygote = sb.stats()["zygote"]
        killer = threading.Timer(0.3, os.kill, (zygote, signal.SIGKILL))
        killer.start()
        try:
            results = sb.run_many(["import time\ntime.sleep(0.005)\nprint('done')"] * 300)
        finally:
            killer.join()
        assert [r.status for r in results] == ["ok"] * 300
        assert all(r.stdout == "done\n" for r in results)
        assert sb.run("print(1)").ok


def test_close_stops_the_zygote_and_every_child():
    sb = LocalSandbox(timeout=5)
    fut = sb._request("import time\ntime.sleep(100)", None, 50)[0]
    sid = sb.open_session()
    sb.run("x = 1", session=sid)
    stats = sb.stats()
    server, zygote, idle = sb.server_pid, stats["zygote"], stats["idle"]
    assert zygote is not None and idle
    sb.close()
    assert fut.result()["status"] == "sandbox_error"
    for pid in (server, zygote, *idle):
        assert _wait_dead(pid), pid


def test_the_zygote_dies_with_the_server():
    with LocalSandbox(timeout=5) as sb:
        zygote = sb.stats()["zygote"]
        os.kill(sb.server_pid, signal.SIGKILL)
        assert _wait_dead(zygote)
        assert sb.run("print(2)").stdout in ("2\n", "")  # the first call may report the dead server
        assert sb.run("print(3)").stdout == "3\n"
        assert sb.stats()["zygote"] not in (None, zygote)


@pytest.mark.skipif(os.geteuid() != 0, reason="uid isolation needs root")
def test_sandboxes_alive_together_use_different_uids():
    """An execution ends by killing every process of its uid: two sandboxes sharing uids would kill each other's."""
    with LocalSandbox(timeout=5) as a, LocalSandbox(timeout=5, zygote=False) as b:
        assert a.uid_range[1] <= b.uid_range[0] or b.uid_range[1] <= a.uid_range[0]
        waiting = b.stats()["idle"]
        results = a.run_many(["import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('alone')"] * 50)
        assert all(r.stdout == "alone\n" for r in results)  # kill(-1) spares the caller, reaches only its uid
        assert all(_alive(pid) for pid in waiting)
        assert b.run("print(1)").stdout == "1\n"
