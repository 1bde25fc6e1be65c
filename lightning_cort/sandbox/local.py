"""A fast, isolated local sandbox: a fork server with preloaded modules, one forked child per execution.

How it works:
    :class:`LocalSandbox` starts one small server process (:mod:`lightning_cort.sandbox.server`) that imports the
    preloaded modules (numpy, sympy and the standard math modules by default) once. Each execution is a child *forked*
    from it, so a snippet pays neither interpreter start-up nor import time (~1 ms instead of ~25 ms for ``python -c``,
    ~250 ms with sympy). A session is a long-lived forked child whose cells share one namespace. The server runs up to
    ``workers`` executions at once and queues the rest; the client talks to it over pipes from any number of threads.

Threat model — what the model's code can and cannot do:
    Covered, for every execution:
        * **Runaway time**: a wall-clock deadline enforced from outside by ``SIGKILL`` on the child's process group,
          which also stops code that ignores signals or is stuck in C (e.g. a catastrophic regex); plus a CPU-time
          limit.
        * **Memory, files, descriptors**: ``RLIMIT_AS`` (allocation failures surface as status ``oom``),
          ``RLIMIT_FSIZE`` (a file larger than ``max_file_mb`` kills the writer), ``RLIMIT_NOFILE``; no core dumps.
        * **Output floods**: stdout and stderr are drained while the code runs and capped at ``max_output_bytes``
          each (flags say when they were cut).
        * **Secrets and input**: the environment is replaced by a minimal one (no API keys or tokens of the parent);
          stdin is ``/dev/null``.
        * **State leaks**: every one-shot execution is a fresh fork; module state changed by one execution is gone
          for the next. Sessions are isolated from each other.
        * **Crashes**: segfaults, ``os._exit``, ``sys.exit``, killing its own process are reported as results
          (``crashed``/``ok``); the server survives, and the client restarts a server that died.
    Covered when the server runs as root (the default on CI machines and containers; ``isolate=True``):
        * **Network**: the server moves into a new network namespace without interfaces, so children have no
          network at all (no outbound connections, no listening sockets reachable from outside).
        * **Fork bombs and orphans**: every child runs under its own unprivileged uid with ``RLIMIT_NPROC``, so it
          cannot create more than ``nproc`` processes, and after it ends every process left under that uid
          (grandchildren that escaped the process group, never-ending daemons) is killed.
        * **Host files**: the unprivileged uid cannot write anything owned by root, and ``/tmp``, ``/var/tmp`` and
          ``/dev/shm`` are private size-capped tmpfs mounts (``tmpfs_mb``), so the code cannot fill the disk or touch
          other programs' temporary files. Each execution works in its own empty directory.
    Not covered:
        * Reading world-readable host files (e.g. ``/etc/passwd``, installed source code): keep secrets out of
          world-readable files.
        * Without root: no network isolation, no per-execution uid (so no fork-bomb cap beyond the process group
          kill, and ``/tmp`` is shared). The reason is in :attr:`LocalSandbox.isolation_notes`. Use a container or
          :class:`~lightning_cort.sandbox.E2BSandbox` for untrusted code in that case.
        * Kernel exploits and side channels: this is process isolation, not a virtual machine.

CoRT replay mode (``cort_replay=True``) reproduces the CoRT paper code's executor semantics exactly: a session does not
keep a live interpreter; each call re-runs, in a fresh process, the session's earlier blocks that succeeded and print
nothing (CoRT's "jupyter-like" program), then the new block. Released CoRT checkpoints were trained against this.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import struct
import subprocess
import sys
import threading
import uuid
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from lightning_cort.sandbox.base import ExecutionError, ExecutionResult, result_text

#: The fork server: a directory run as its own program (``python -I <dir> <config>``; see its ``__init__.py``).
_SERVER = Path(__file__).with_name("server")

#: Modules imported once by the server, so snippets importing them pay nothing.
DEFAULT_PRELOAD: tuple[str, ...] = (
    "math", "cmath", "fractions", "decimal", "itertools", "functools", "collections", "statistics", "random",
    "re", "json", "numpy", "sympy",
)  # fmt: skip

#: Run once in the server after the imports, so the lazily imported parts of sympy (solvers, simplification,
#: integration, number theory) and numpy.linalg are loaded and warm in every forked child.
DEFAULT_WARMUP = """
import sympy as sp
x, y = sp.symbols('x y')
sp.solve(x**2 - 5*x + 6, x)
sp.solve([x + y - 3, x - y - 1], [x, y])
sp.simplify(sp.sin(x)**2 + sp.cos(x)**2)
sp.factor(x**2 - 1); sp.expand((x + 1)**3); sp.integrate(x**2, x); sp.diff(sp.exp(x), x)
sp.factorint(360); sp.isprime(97); sp.Rational(1, 3) + 1; sp.nsimplify(0.5); sp.N(sp.pi, 20)
sp.latex(x**2); str(sp.sqrt(8))
import numpy as np
np.linalg.solve(np.eye(2), np.ones(2)); np.linalg.eig(np.eye(2))
"""


class LocalSandbox:
    """Executes Python snippets in forked, isolated children of a preloaded server process.

    Args:
        timeout: Default wall-clock limit per execution, in seconds.
        memory_mb: Address-space limit of each child (``0``: none).
        max_output_bytes: Cap on the stdout, and on the stderr, kept per execution.
        max_file_mb: Largest file a child may write.
        workers: Executions running at once (default: the number of CPU cores); more are queued.
        preload: Modules the server imports once.
        warmup: Code the server runs once after the imports (warms lazily loaded parts of the preloaded modules).
        prefork: Isolated children kept forked and waiting for code, so the fork is off the latency path.
        fork_burst: Most children forked ahead while executions are queued: asked of the zygote in advance, or
            forked back to back by the server without one (1: one fork per execution).
        huge_pages: Back the preloaded heap with transparent huge pages (cheaper forks; Linux 6.1+, else ignored).
        zygote: Fork the children from a zygote, a copy of the server made after preloading that does nothing but
            fork, instead of from the server itself (cheaper forks and exits; Linux with glibc, else the server
            forks them). The isolation of each execution is the same either way.
        isolate: Use namespaces and per-execution uids when running as root.
        nproc: Processes (and threads) one execution may have at once, when isolated.
        tmpfs_mb: Size of the private ``/tmp`` (and ``/var/tmp``, ``/dev/shm``) when isolated.
        cort_replay: CoRT's executor semantics for sessions (see the module docstring).
        python: Interpreter that runs the server (default: this one, so the same packages are importable).
        uid_base: First of the unprivileged uids given to executions (``uid_base .. uid_base + 4096``); a server
            takes the next range of 4096 when another live sandbox on this machine holds it (see
            :attr:`uid_range`).
    """

    def __init__(
        self,
        timeout: float = 5.0,
        memory_mb: int = 2048,
        max_output_bytes: int = 1 << 16,
        max_file_mb: int = 16,
        workers: int | None = None,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        warmup: str = DEFAULT_WARMUP,
        prefork: int | None = None,
        fork_burst: int = 8,
        huge_pages: bool = True,
        zygote: bool = True,
        isolate: bool = True,
        nproc: int = 64,
        tmpfs_mb: int = 256,
        cort_replay: bool = False,
        python: str | None = None,
        uid_base: int = 61000,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.timeout = timeout
        self.cort_replay = cort_replay
        self.python = python or sys.executable
        self._config = {
            "timeout": timeout,
            "memory_mb": memory_mb,
            "max_output_bytes": max_output_bytes,
            "max_file_mb": max_file_mb,
            "workers": workers or os.cpu_count() or 1,
            "preload": list(preload),
            "warmup": warmup,
            "prefork": prefork if prefork is not None else (workers or os.cpu_count() or 1),
            "fork_burst": max(1, int(fork_burst)),
            "huge_pages": bool(huge_pages),
            "zygote": bool(zygote),
            "isolate": isolate,
            "nproc": nproc,
            "tmpfs_mb": tmpfs_mb,
            "uid_base": uid_base,
            "uid_count": 4096,
        }
        self._lock = threading.Lock()
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._sessions: dict[str, list[tuple[str, str]]] = {}  # id -> [(code, shown output)] (for CoRT replay)
        self._lost_sessions: set[str] = set()  # sessions whose server died: their next result says restarted
        self._closed = False
        #: What the server could and could not isolate on this machine (set at start).
        self.isolation_notes: list[str] = []
        #: Whether each execution runs under its own unprivileged uid.
        self.uid_isolation = False
        #: The uids this sandbox's executions run under (``start, stop``), no other live sandbox's.
        self.uid_range: tuple[int, int] = (uid_base, uid_base + 4096)
        #: How many times the server had to be restarted after dying.
        self.restarts = 0
        self._start()
        self._finalizer = weakref.finalize(self, LocalSandbox._kill_server, self._proc)

    # -- server lifecycle ------------------------------------------------------------------------------------------
    def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT")}
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
        proc = subprocess.Popen(
            [self.python, "-I", str(_SERVER), json.dumps(self._config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
            bufsize=0,
        )
        assert proc.stdout is not None and proc.stderr is not None
        ready = self._read_frame(proc.stdout)
        if ready is None or ready.get("op") != "ready":
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.poll() is not None else ""
            LocalSandbox._kill_server(proc)
            raise RuntimeError(f"the sandbox server failed to start: {err or 'no ready message'}")
        self.isolation_notes = list(ready.get("notes", []))
        self.uid_isolation = bool(ready.get("uid_isolation"))
        self.uid_range = tuple(ready.get("uid_range", self.uid_range))  # type: ignore[assignment]
        self._proc = proc
        threading.Thread(target=self._read_loop, args=(proc,), daemon=True, name="sandbox-reader").start()
        threading.Thread(target=self._drain_stderr, args=(proc,), daemon=True, name="sandbox-stderr").start()

    @staticmethod
    def _read_frame(stream: Any) -> dict[str, Any] | None:
        header = stream.read(4)
        while header and len(header) < 4:
            more = stream.read(4 - len(header))
            if not more:
                return None
            header += more
        if len(header) < 4:
            return None
        (n,) = struct.unpack("<I", header)
        data = b""
        while len(data) < n:
            chunk = stream.read(n - len(data))
            if not chunk:
                return None
            data += chunk
        return json.loads(data)

    def _read_loop(self, proc: subprocess.Popen[bytes]) -> None:
        while True:
            msg = self._read_frame(proc.stdout)
            if msg is None:
                break
            with self._lock:
                fut = self._pending.pop(msg.get("id", -1), None)
            if fut is not None:
                fut.set_result(msg)
        # The server is gone: fail what it was running; the next call starts a new one.
        with self._lock:
            if self._proc is proc:
                self._proc = None
                self._lost_sessions.update(self._sessions)
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            fut.set_result(
                {
                    "status": "sandbox_error",
                    "error": {"name": "SandboxServerDied", "traceback": "", "value": "the sandbox server process died"},
                }
            )

    @staticmethod
    def _drain_stderr(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        with contextlib.suppress(Exception):
            while proc.stderr.read(65536):
                pass

    @staticmethod
    def _kill_server(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.write(struct.pack("<I", 18) + b'{"op": "shutdown"}')
            proc.stdin.flush()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, 9)
            proc.wait()

    # -- requests --------------------------------------------------------------------------------------------------
    def _submit(self, msg: dict[str, Any]) -> Future[dict[str, Any]]:
        fut: Future[dict[str, Any]] = Future()
        with self._lock:
            if self._closed:
                fut.set_result(
                    {
                        "status": "sandbox_error",
                        "error": {"name": "SandboxClosed", "value": "the sandbox is closed", "traceback": ""},
                    }
                )
                return fut
            if self._proc is None or self._proc.poll() is not None:
                try:
                    self._proc = None
                    self._start()
                    self.restarts += 1
                except Exception as e:
                    fut.set_result(
                        {
                            "status": "sandbox_error",
                            "error": {"name": type(e).__name__, "value": str(e), "traceback": ""},
                        }
                    )
                    return fut
            self._next_id += 1
            msg["id"] = self._next_id
            self._pending[self._next_id] = fut
            data = json.dumps(msg).encode("utf-8")
            try:
                assert self._proc is not None and self._proc.stdin is not None
                self._proc.stdin.write(struct.pack("<I", len(data)) + data)
                self._proc.stdin.flush()
            except (OSError, ValueError) as e:
                self._pending.pop(self._next_id, None)
                fut.set_result(
                    {"status": "sandbox_error", "error": {"name": type(e).__name__, "value": str(e), "traceback": ""}}
                )
        return fut

    def _request(self, code: str, session: str | None, timeout: float | None) -> tuple[Future[dict[str, Any]], bool]:
        """Send one execution; returns its future and whether the session's state was lost before it."""
        restarted = False
        if session is not None:
            with self._lock:
                if session not in self._sessions:
                    raise KeyError(f"unknown session {session!r}: open it with open_session()")
                restarted = session in self._lost_sessions
                self._lost_sessions.discard(session)
                history = list(self._sessions[session])
            if self.cort_replay:
                code = cort_replay_program(history, code)
                session_arg = None
            else:
                session_arg = session
        else:
            session_arg = None
        timeout = self.timeout if timeout is None else timeout
        return self._submit({"op": "run", "code": code, "session": session_arg, "timeout": timeout}), restarted

    def _result(self, msg: dict[str, Any], restarted: bool) -> ExecutionResult:
        err = msg.get("error")
        return ExecutionResult(
            status=msg["status"],
            stdout=msg.get("stdout", ""),
            stderr=msg.get("stderr", ""),
            stdout_truncated=bool(msg.get("stdout_truncated")),
            stderr_truncated=bool(msg.get("stderr_truncated")),
            error=ExecutionError(err["name"], err.get("value", ""), err.get("traceback", "")) if err else None,
            exit_code=msg.get("exit_code"),
            duration_s=float(msg.get("duration_s", 0.0)),
            session_restarted=restarted or bool(msg.get("session_restarted")),
        )

    def _record(self, session: str | None, code: str, result: ExecutionResult) -> None:
        if session is None or not self.cort_replay:
            return
        with self._lock:
            if session in self._sessions:
                self._sessions[session].append((code, result_text(result)))

    def run(self, code: str, *, session: str | None = None, timeout: float | None = None) -> ExecutionResult:
        """Execute ``code`` (in ``session`` if given); never raises for anything the code does."""
        fut, restarted = self._request(code, session, timeout)
        result = self._result(fut.result(), restarted)
        self._record(session, code, result)
        return result

    def run_many(
        self, codes: Sequence[str], *, sessions: Sequence[str | None] | None = None, timeout: float | None = None
    ) -> list[ExecutionResult]:
        """Execute snippets concurrently (up to ``workers`` at once); results in input order."""
        sessions = list(sessions) if sessions is not None else [None] * len(codes)
        if len(sessions) != len(codes):
            raise ValueError(f"got {len(codes)} codes but {len(sessions)} sessions")
        if self.cort_replay and len(set(s for s in sessions if s)) < len([s for s in sessions if s]):
            # Replay builds each program from the session's history: cells of one session must go one by one.
            return [self.run(c, session=s, timeout=timeout) for c, s in zip(codes, sessions)]
        requests = [self._request(c, s, timeout) for c, s in zip(codes, sessions)]
        results = [self._result(f.result(), r) for f, r in requests]
        for c, s, res in zip(codes, sessions, results):
            self._record(s, c, res)
        return results

    async def arun(self, code: str, *, session: str | None = None, timeout: float | None = None) -> ExecutionResult:
        """Async :meth:`run`: waits without blocking the event loop."""
        fut, restarted = self._request(code, session, timeout)
        result = self._result(await asyncio.wrap_future(fut), restarted)
        self._record(session, code, result)
        return result

    def stats(self) -> dict[str, Any]:
        """The server's state.

        Returns:
            ``idle`` (pids of pre-forked children waiting for code), ``running``, ``queued``, ``sessions`` (counts),
            ``zygote`` (pid of the process forking the children, ``None`` when the server forks them itself) and
            ``zygote_restarts`` (how many times it died and was replaced).
        """
        msg = self._submit({"op": "stats"}).result()
        keys = ("idle", "running", "queued", "sessions", "zygote", "zygote_restarts")
        return {k: msg[k] for k in keys if k in msg}

    # -- sessions --------------------------------------------------------------------------------------------------
    def open_session(self) -> str:
        """Start a session (its interpreter is created by its first execution)."""
        sid = uuid.uuid4().hex
        with self._lock:
            self._sessions[sid] = []
        return sid

    def close_session(self, session: str) -> None:
        """End a session and kill its interpreter."""
        with self._lock:
            known = self._sessions.pop(session, None) is not None
            self._lost_sessions.discard(session)
            proc = self._proc
        if known and proc is not None and not self.cort_replay:
            data = json.dumps({"op": "close_session", "session": session}).encode()
            with self._lock, contextlib.suppress(OSError, ValueError, AttributeError):
                proc.stdin.write(struct.pack("<I", len(data)) + data)  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def server_pid(self) -> int | None:
        """PID of the live server process (for monitoring and tests)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def close(self) -> None:
        """Stop the server and every execution; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            proc = self._proc
        LocalSandbox._kill_server(proc)
        self._finalizer.detach()

    def __enter__(self) -> LocalSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_FORBIDDEN = re.compile(r"(\s|^)?(input|os\.system)\(")
_PRINT_LINE = re.compile(r"^(print|sp\.pprint|sympy\.pprint|pprint|rprint)")


def cort_replay_program(history: Sequence[tuple[str, str]], code: str) -> str:
    """The program CoRT's executor runs for ``code`` after the earlier ``(code, shown output)`` pairs of a trajectory.

    Earlier blocks whose output mentions an error are dropped; from the others, empty lines and lines starting with a
    print call at column 0 are removed, and a block in which ``print`` still occurs anywhere is dropped whole; the
    new block is appended verbatim. Code calling ``input(`` or ``os.system(`` raises ``RuntimeError``, as in CoRT.
    """
    kept = []
    for old, output in history:
        low = output.lower()
        if "error" in low or "exception" in low or "traceback" in low:
            continue
        lines = [ln for ln in old.split("\n") if ln.strip() and not _PRINT_LINE.match(ln)]
        block = "\n".join(lines)
        if "print" in block:
            continue
        kept.append(block)
    kept.append(code)
    program = "\n".join(kept)
    if _FORBIDDEN.search(program):
        return "raise RuntimeError()"
    return program
