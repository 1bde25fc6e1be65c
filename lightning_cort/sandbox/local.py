"""A local process sandbox: every execution runs in a fresh, resource-limited Python process.

Threat model (first version): the code runs as the same user in its own process group and temporary directory,
with a wall-clock timeout enforced from outside (the whole process group is killed), limits on address space, CPU
time and written file size, a scrubbed environment (no secrets), closed stdin, and capped output drained while the
process runs. Not covered yet: network access, fork bombs (``RLIMIT_NPROC`` is ignored for root), and reads of host
files. A hardened fork-server sandbox replaces this one (see the project's issue tracker).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lightning_cort.sandbox.base import ExecutionError, ExecutionResult

_RUNNER = Path(__file__).with_name("_runner.py")


def _drain(stream, cap: int, out: list[bytes], flags: list[bool]) -> None:
    size = 0
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        if size < cap:
            out.append(chunk[: cap - size])
        if size + len(chunk) > cap:
            flags[0] = True
        size += len(chunk)


class LocalSandbox:
    """Runs each snippet in a fresh Python process with limits; sessions replay their earlier successful cells.

    Args:
        timeout: Default wall-clock limit per execution, in seconds.
        memory_mb: Address-space limit of the process (``0`` for none).
        max_output_bytes: Cap on captured stdout and on stderr, each.
        max_file_mb: Largest file the code may write.
        workers: Concurrent executions in :meth:`run_many` (defaults to the number of CPU cores).
        python: Interpreter to run the code with (defaults to the current one, so the same packages are importable).
    """

    def __init__(
        self,
        timeout: float = 5.0,
        memory_mb: int = 2048,
        max_output_bytes: int = 1 << 16,
        max_file_mb: int = 16,
        workers: int | None = None,
        python: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.max_output_bytes = max_output_bytes
        self.max_file_mb = max_file_mb
        self.python = python or sys.executable
        self._root = Path(tempfile.mkdtemp(prefix="lightning_cort_sandbox_"))
        self._pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="sandbox")
        self._sessions: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._closed = False

    # -- sessions --------------------------------------------------------------------------------------------------
    def open_session(self) -> str:
        sid = uuid.uuid4().hex
        with self._lock:
            self._sessions[sid] = []
        return sid

    def close_session(self, session: str) -> None:
        with self._lock:
            self._sessions.pop(session, None)

    # -- execution -------------------------------------------------------------------------------------------------
    def run(self, code: str, *, session: str | None = None, timeout: float | None = None) -> ExecutionResult:
        if self._closed:
            return ExecutionResult("sandbox_error", error=ExecutionError("SandboxClosed", "the sandbox is closed"))
        with self._lock:
            replay = list(self._sessions.get(session, [])) if session else []
            restarted = session is not None and session not in self._sessions
        try:
            result = self._execute(code, replay, self.timeout if timeout is None else timeout)
        except Exception as e:
            result = ExecutionResult("sandbox_error", error=ExecutionError(type(e).__name__, str(e)))
        if session is not None:
            with self._lock:
                if session in self._sessions and result.status == "ok":
                    self._sessions[session].append(code)
            if restarted:
                result = ExecutionResult(**{**result.__dict__, "session_restarted": True})
        return result

    def run_many(
        self, codes: Sequence[str], *, sessions: Sequence[str | None] | None = None, timeout: float | None = None
    ) -> list[ExecutionResult]:
        sessions = list(sessions) if sessions is not None else [None] * len(codes)
        if len(sessions) != len(codes):
            raise ValueError(f"got {len(codes)} codes but {len(sessions)} sessions")
        futures = [self._pool.submit(self.run, c, session=s, timeout=timeout) for c, s in zip(codes, sessions)]
        return [f.result() for f in futures]

    async def arun(self, code: str, *, session: str | None = None, timeout: float | None = None) -> ExecutionResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self.run(code, session=session, timeout=timeout))

    def _execute(self, code: str, replay: list[str], timeout: float) -> ExecutionResult:
        job = Path(tempfile.mkdtemp(dir=self._root))
        work = job / "work"
        work.mkdir()
        spec = {
            "code": code,
            "replay": replay,
            "memory_bytes": self.memory_mb << 20,
            "file_bytes": self.max_file_mb << 20,
            "cpu_seconds": int(timeout) + 2,
        }
        (job / "cells.json").write_text(json.dumps(spec), encoding="utf-8")
        env = {
            "PATH": os.defpath,
            "HOME": str(work),
            "TMPDIR": str(work),
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
            "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        start = time.perf_counter()
        proc = subprocess.Popen(
            [self.python, "-I", str(_RUNNER), str(job)],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        with self._lock:
            self._live.add(proc.pid)
        out: list[bytes] = []
        err: list[bytes] = []
        out_cut, err_cut = [False], [False]
        readers = [
            threading.Thread(target=_drain, args=(proc.stdout, self.max_output_bytes, out, out_cut), daemon=True),
            threading.Thread(target=_drain, args=(proc.stderr, self.max_output_bytes, err, err_cut), daemon=True),
        ]
        for t in readers:
            t.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # Kill the whole group: also grandchildren and code that ignores signals.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            with self._lock:
                self._live.discard(proc.pid)
        for t in readers:
            t.join(timeout=1.0)
        duration = time.perf_counter() - start
        stdout = b"".join(out).decode("utf-8", errors="replace")
        stderr = b"".join(err).decode("utf-8", errors="replace")
        common = {
            "stdout": stdout,
            "stderr": stderr,
            "stdout_truncated": out_cut[0],
            "stderr_truncated": err_cut[0],
            "exit_code": proc.returncode,
            "duration_s": duration,
        }
        result_file = job / "result.json"
        try:
            if timed_out:
                return ExecutionResult("timeout", **common)
            if result_file.exists():
                error = json.loads(result_file.read_text(encoding="utf-8"))["error"]
                if error is None:
                    return ExecutionResult("ok", **common)
                status = "oom" if error["name"] == "MemoryError" else "error"
                return ExecutionResult(status, error=ExecutionError(**error), **common)  # type: ignore[arg-type]
            if proc.returncode == 0:
                return ExecutionResult("ok", **common)  # exited early with sys.exit(0)
            err_obj = ExecutionError("ProcessExit", f"the process exited with code {proc.returncode}")
            return ExecutionResult("crashed", error=err_obj, **common)
        finally:
            shutil.rmtree(job, ignore_errors=True)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            live = list(self._live)
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> LocalSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
