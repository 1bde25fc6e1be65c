"""Hostile code against the local sandbox.

For every case: a structured result within the timeout + 0.5 s, no process of the execution survives, host files are
intact, and the next execution succeeds.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

from lightning_cort.sandbox import LocalSandbox

TIMEOUT = 2.0
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="uid and namespace isolation need root; documented fallback otherwise")


@pytest.fixture(scope="module")
def sentinel():
    """A host file the code will try to damage: in the repository tree, readable by everyone."""
    path = Path(__file__).parent / f".sentinel-{os.getpid()}"
    path.write_text("intact\n")
    path.chmod(0o644)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def sb():
    os.environ["LIGHTNING_CORT_TEST_SECRET"] = "hunter2"  # the server is started after this: must not leak
    with LocalSandbox(timeout=TIMEOUT, memory_mb=512, max_output_bytes=1 << 16, nproc=32) as box:
        yield box
    del os.environ["LIGHTNING_CORT_TEST_SECRET"]


def _sandbox_processes(sb: LocalSandbox) -> list[tuple[int, str]]:
    """Processes of the sandbox's execution uids (all of them are children's); without uid isolation, the server's
    children other than the zygote that forks them."""
    stats = sb.stats()
    idle = set(stats.get("idle", []))  # pre-forked children waiting for code are not leftovers
    if stats.get("zygote") is not None:
        idle.add(stats["zygote"])
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = (Path("/proc") / entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uid = int(fields["Uid"].split()[0])
        ppid = int(fields["PPid"].strip())
        state = fields["State"].split()[0]
        if state == "Z" or int(entry) in idle:
            continue
        if (sb.uid_isolation and sb.uid_range[0] <= uid < sb.uid_range[1]) or (
            not sb.uid_isolation and ppid == sb.server_pid
        ):
            out.append((int(entry), state))
    return out


def _assert_clean(sb: LocalSandbox, sentinel: Path) -> None:
    deadline = time.monotonic() + 2.0  # SIGKILLed processes may need a moment to be scheduled and die
    while _sandbox_processes(sb) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _sandbox_processes(sb) == []
    assert sentinel.read_text() == "intact\n"
    nxt = sb.run("print('alive')")
    assert nxt.status == "ok" and nxt.stdout == "alive\n", nxt


S = "{sentinel}"
CASES: list[tuple[str, str, set[str]]] = [
    ("infinite-loop", "while True:\n    pass", {"timeout"}),
    (
        "signal-ignoring-loop",
        "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
        "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass",
        {"timeout"},
    ),
    ("catastrophic-regex-in-c", "import re\nre.match(r'(a+)+$', 'a' * 64 + 'b')", {"timeout"}),
    ("sleep-forever", "import time\ntime.sleep(10**6)", {"timeout"}),
    ("huge-output", "print('x' * 10**8)", {"ok", "oom"}),
    ("endless-output", "while True:\n    print('spam' * 100)", {"timeout"}),
    ("endless-stderr", "import sys\nwhile True:\n    sys.stderr.write('e' * 4096)", {"timeout"}),
    ("memory-bomb", "x = bytearray(10**12)", {"oom"}),
    ("gradual-memory-bomb", "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", {"oom"}),
    ("numpy-memory-bomb", "import numpy as np\nnp.ones((10**6, 10**5))", {"oom"}),
    (
        "fork-bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        {"timeout", "ok", "crashed", "error"},
    ),
    (
        "orphaned-grandchild",
        "import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)\nprint('spawned')",
        {"ok"},
    ),
    (
        "double-fork-daemon",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(1000)\n    os._exit(0)\nprint('parent')",
        {"ok"},
    ),
    ("orphan-then-os-exit", "import subprocess, os\nsubprocess.Popen(['sleep', '1000'])\nos._exit(0)", {"ok"}),
    (
        "never-ending-thread",
        "import threading, time\nthreading.Thread(target=time.sleep, args=(1000,)).start()\nprint('main done')",
        {"ok"},
    ),
    (
        "thread-flood",
        "import threading, time\nfor _ in range(100000):\n"
        "    threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()",
        {"error"},
    ),
    ("segfault", "import ctypes\nctypes.string_at(0)", {"crashed"}),
    ("os-exit", "import os\nos._exit(3)", {"crashed"}),
    ("sys-exit-0", "import sys\nprint('bye')\nsys.exit(0)", {"ok"}),
    ("sys-exit-nonzero", "import sys\nsys.exit(2)", {"error"}),
    ("kill-own-group", "import os, signal\nos.killpg(0, signal.SIGKILL)", {"crashed"}),
    (
        "kill-the-parent",
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('still here')",
        {"error", "ok", "crashed", "sandbox_error"},
    ),
    ("read-stdin", "print(input())", {"error"}),
    ("read-stdin-raw", "import sys\nprint(repr(sys.stdin.read()))", {"ok"}),
    ("write-outside-workdir", f"open('{S}', 'w').write('pwned')", {"error"}),
    ("delete-host-file", f"import os\nos.remove('{S}')", {"error"}),
    ("chmod-host-file", f"import os\nos.chmod('{S}', 0o777)", {"error"}),
    (
        "fill-the-disk",
        "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'0' * 10**6)",
        {"crashed", "error", "timeout"},
    ),
    (
        "many-files",
        "i = 0\nwhile True:\n    open(f'f{i}', 'w').write('x' * 10**5)\n    i += 1",
        {"error", "crashed", "timeout"},
    ),
    ("network-connect", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)", {"error"}),
    ("network-dns", "import socket\nsocket.getaddrinfo('pypi.org', 443)", {"error"}),
    (
        "listening-socket",
        "import socket, time\ns = socket.socket()\ns.bind(('0.0.0.0', 47123))\ns.listen()\ntime.sleep(10**6)",
        {"timeout", "error"},
    ),
    ("read-secrets", "import os\nprint(os.environ.get('LIGHTNING_CORT_TEST_SECRET'))", {"ok"}),
    ("read-parent-environ", "print(open(f'/proc/{__import__(\"os\").getppid()}/environ').read())", {"error"}),
    (
        "pip-install",
        "import subprocess, sys\nr = subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', "
        "'six'], capture_output=True)\nprint(r.returncode)",
        {"ok", "timeout"},
    ),
    ("syntax-error", "def f(:\n    pass", {"error"}),
    ("null-bytes", "print(1)\x00", {"error"}),
    ("crlf-source", "x = 1\r\nprint(x + 1)\r\n", {"ok"}),
    ("non-utf8-output", "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x00abc\\n')\nsys.stdout.flush()", {"ok"}),
    ("deep-recursion", "def f():\n    return f()\nf()", {"error"}),
    ("close-std-streams", "import os\nos.close(1)\nos.close(2)\nwhile True:\n    pass", {"timeout"}),
    (
        "cpu-in-numpy",
        "import numpy as np\na = np.random.rand(1500, 1500)\nwhile True:\n    a = a @ a / 1500",
        {"timeout"},
    ),
]


@pytest.mark.parametrize(("name", "code", "statuses"), CASES, ids=[c[0] for c in CASES])
def test_hostile_code_is_contained(sb, sentinel, name, code, statuses):
    if name in ("fork-bomb", "network-connect", "network-dns", "listening-socket", "many-files") and not ROOT:
        pytest.skip("needs root for the uid, network and tmpfs isolation (documented fallback)")
    start = time.perf_counter()
    result = sb.run(code.replace(S, str(sentinel)))
    elapsed = time.perf_counter() - start
    assert result.status in statuses, (result.status, result.error, result.stdout[:200])
    assert elapsed <= TIMEOUT + 0.5, elapsed
    if name == "read-secrets":
        assert result.stdout == "None\n"
    if name in ("huge-output", "endless-output"):
        assert len(result.stdout.encode()) <= 1 << 16
        assert result.stdout_truncated or result.status != "ok"
    if name == "non-utf8-output":
        assert "abc" in result.stdout
    if name == "crlf-source":
        assert result.stdout == "2\n"
    if name == "read-stdin-raw":
        assert result.stdout == "''\n"
    if result.status == "error":
        assert result.error is not None and result.error.name
        assert "sandbox/server" not in result.error.traceback  # only the snippet's own frames
    _assert_clean(sb, sentinel)


@needs_root
def test_listening_socket_is_unreachable_from_the_host(sb, sentinel):
    fut = sb._request(
        "import socket, time\ns = socket.socket()\ns.bind(('0.0.0.0', 47124))\ns.listen()\ntime.sleep(1.5)", None, 3.0
    )[0]
    time.sleep(0.5)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", 47124), timeout=0.5):
        pass
    fut.result()
    _assert_clean(sb, sentinel)


def test_module_state_does_not_leak_between_executions(sb):
    assert sb.run("import math\nmath.pi = 3\nimport builtins\nbuiltins.print = None").status == "ok"
    assert sb.run("import math\nprint(math.pi)").stdout.startswith("3.14159")


def test_pip_install_changed_nothing(sb):
    sb.run(
        "import subprocess, sys\nsubprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', 'six'])", timeout=4
    )
    import importlib.util

    before = importlib.util.find_spec("six") is not None
    assert (importlib.util.find_spec("six") is not None) == before


def test_killing_the_server_is_survived():
    with LocalSandbox(timeout=2) as box:
        pid = box.server_pid
        assert pid is not None
        os.kill(pid, 9)
        time.sleep(0.1)
        first = box.run("print(1)")
        assert first.status in ("ok", "sandbox_error")
        assert box.run("print(2)").stdout == "2\n"
        assert box.server_pid not in (None, pid)


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = (Path("/proc") / entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status and "State:\tZ" not in status:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_close_leaves_no_processes():
    box = LocalSandbox(timeout=5)
    fut = box._request("import time\ntime.sleep(100)", None, 50)[0]
    sid = box.open_session()
    box.run("x = 1", session=sid)
    pid = box.server_pid
    children = _children_of(pid)
    assert len(children) >= 2  # the running execution, the session, pre-forked children
    box.close()
    assert fut.result()["status"] == "sandbox_error"
    time.sleep(0.1)
    assert not _alive(pid)
    assert [c for c in children if _alive(c)] == []
    assert box.run("print(1)").status == "sandbox_error"
    box.close()  # idempotent


@pytest.mark.skipif(sys.platform != "linux", reason="Linux process model")
def test_isolation_is_reported(sb):
    assert sb.isolation_notes
    if ROOT:
        assert sb.uid_isolation
        assert any("network" in n and "without interfaces" in n for n in sb.isolation_notes)
