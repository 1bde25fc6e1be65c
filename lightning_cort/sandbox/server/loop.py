"""The server's event loop: :class:`Server` reads request frames, hands out pre-forked children, enforces deadlines,
drains and caps output, and answers result frames (see the package docstring for the protocol and the files).
"""

import contextlib
import ctypes
import json
import os
import selectors
import signal
import tempfile
import time
import traceback

from child import (
    IS_ROOT,
    _child_setup,
    _FrameReader,
    _isolate_server,
    _run_one_shot_when_asked,
    _run_session,
    _write_frame,
)
from uids import UidsAndWorkdirs, _reserve_uids
from zygote import ZygoteForks
from zygote_child import encode_code


# --------------------------------------------------------------------------------------------------------------------
# the server side
class _Proc:
    """A forked child (one-shot execution or session) and the buffers of its current execution."""

    def __init__(self, pid, uid, workdir, fds, ctl_w, session):
        self.pid = pid
        self.uid = uid
        self.workdir = workdir
        self.out_fd, self.err_fd, self.res_fd = fds
        self.ctl_w = ctl_w
        self.session = session
        self.out = bytearray()
        self.err = bytearray()
        self.out_total = 0
        self.err_total = 0
        self.res = _FrameReader() if session else None
        self.res_raw = bytearray()
        self.request = None
        self.deadline = None
        self.started = 0.0
        self.restarted = False
        self.timed_out = False
        self.closing = False
        self.answered_early = False
        self.exited = None  # waitpid status once reaped
        self.lean = False  # a one-shot child of the zygote: takes its code as an ``encode_code`` frame
        self.open_fds = {self.out_fd, self.err_fd, self.res_fd}


class Server(UidsAndWorkdirs, ZygoteForks):
    def __init__(self, cfg):
        self.cfg = cfg
        self.notes = []
        self.use_uids = IS_ROOT and cfg["isolate"]
        self.uid_base, self.uid_lock = cfg["uid_base"], None
        if self.use_uids:
            self.uid_base, self.uid_lock = _reserve_uids(cfg["uid_base"], cfg["uid_count"], self.notes)
        self.tmp_root = _isolate_server(cfg, self.notes)
        self.free_uids = list(range(self.uid_base, self.uid_base + cfg["uid_count"]))[::-1]
        self.workroot = tempfile.mkdtemp(prefix="lc_sandbox_", dir=self.tmp_root)
        os.chmod(self.workroot, 0o711)
        self.sel = selectors.DefaultSelector()
        self.procs = {}  # pid -> _Proc
        self.fd_owner = {}  # fd -> (_Proc, kind)
        self.sessions = {}  # session id -> _Proc
        self.dead_sessions = set()
        self.idle = []  # pre-forked one-shot children waiting for code
        self.queue = []
        self.running = 0
        self.reader = _FrameReader()
        # Protocol pipes move off fds 0/1 so children can take those over.
        self.in_fd = os.dup(0)
        self.out_fd = os.dup(1)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.set_blocking(self.in_fd, False)
        self.sel.register(self.in_fd, selectors.EVENT_READ, ("control", None))
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *a: None)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        self.stopping = False
        with contextlib.suppress(Exception):  # orphaned descendants of children are reaped here, not by init
            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        self.zygote = None
        self.use_zygote = bool(cfg.get("zygote", True))
        self.zygote_restarts = -1  # the first start is not a restart
        self.forking = {}  # request tag -> (uid, workdir, server's pipe ends, session, time sent): asked of the zygote
        self.fork_tag = 0
        self.early_exits = {}  # pid -> (status, time): children reaped before the zygote's answer named them
        self.session_forks = {}  # request tag -> _Proc, for _fork_via_zygote
        if self.use_zygote and not self._start_zygote():
            self.notes.append("zygote: unavailable on this system; the server forks the children itself")

    # -- main loop -------------------------------------------------------------------------------------------------
    def serve(self):
        _write_frame(
            self.out_fd,
            {
                "op": "ready",
                "pid": os.getpid(),
                "notes": self.notes,
                "uid_isolation": self.use_uids,
                "uid_range": [self.uid_base, self.uid_base + self.cfg["uid_count"]],
            },
        )
        while not (self.stopping and not self.procs):
            timeout = self._next_timeout()
            for key, _ in self.sel.select(timeout):
                kind, _ = key.data
                if kind == "control":
                    self._on_control()
                elif kind == "wake":
                    with contextlib.suppress(BlockingIOError, InterruptedError):
                        os.read(self.wake_r, 4096)
                elif kind == "zygote":
                    self._on_zygote()
                else:
                    self._on_output(key.fd)
            self._reap()
            self._check_deadlines()
            self._start_queued()
            self._refill()

    def _next_timeout(self):
        deadlines = [p.deadline for p in self.procs.values() if p.deadline is not None]
        if not deadlines:
            return 1.0
        return max(0.0, min(deadlines) - time.monotonic())

    def _on_control(self):
        try:
            data = os.read(self.in_fd, 1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        if not data:  # the client went away: clean up and leave
            self._shutdown()
            return
        for msg in self.reader.feed(data):
            op = msg.get("op")
            if op == "run":
                self.queue.append(msg)
            elif op == "close_session":
                proc = self.sessions.pop(msg["session"], None)
                self.dead_sessions.discard(msg["session"])
                if proc is not None and proc.request is None:
                    self._kill(proc)
            elif op == "shutdown":
                self._shutdown()
            elif op == "stats":
                deadline = time.monotonic() + 5.0  # every requested child counts as idle: wait for their pids
                while self.forking and self.zygote is not None and time.monotonic() < deadline:
                    self._on_zygote(wait=0.5)
                self._reply(
                    msg,
                    {
                        "status": "ok",
                        "idle": [p.pid for p in self.idle],
                        "running": self.running,
                        "queued": len(self.queue),
                        "sessions": len(self.sessions),
                        "zygote": self.zygote.pid if self.zygote is not None else None,
                        "zygote_restarts": max(0, self.zygote_restarts),
                    },
                )

    def _shutdown(self):
        self.stopping = True
        self.queue.clear()
        self._stop_zygote()
        for proc in list(self.procs.values()):
            proc.closing = True
            self._kill(proc)

    # -- starting work ---------------------------------------------------------------------------------------------
    def _start_queued(self):
        """Start queued requests in order while workers are free; a cell waits while its session is busy."""
        i = 0
        while i < len(self.queue) and self.running < self.cfg["workers"] and not self.stopping:
            req = self.queue[i]
            sid = req.get("session")
            busy = sid is not None and sid in self.sessions and self.sessions[sid].request is not None
            if busy or (sid is not None and any(r.get("session") == sid for r in self.queue[:i])):
                i += 1
                continue
            if not sid and not self.idle and self.use_zygote:
                self._ask_for_children()
                if not self.idle:
                    break  # it starts (first) when the zygote's answer brings a child
            del self.queue[i]
            try:
                self._start(req)
            except OSError as e:
                error = {"name": type(e).__name__, "value": str(e), "traceback": ""}
                self._reply(req, {"status": "sandbox_error", "error": error})

    def _start(self, req):
        sid = req.get("session")
        timeout = req.get("timeout") or self.cfg["timeout"]
        if sid:
            proc = self.sessions.get(sid)
            restarted = False
            if proc is None:
                restarted = sid in self.dead_sessions
                self.dead_sessions.discard(sid)
                proc = self._fork(session=sid)
                self.sessions[sid] = proc
            proc.restarted = restarted
            self._begin(proc, req, timeout)
            _write_frame(proc.ctl_w, {"code": req["code"]})
        else:
            # A pre-forked child is already isolated and waiting: the fork is off the latency path.
            if not self.idle:
                self._fork_burst()
            proc = self.idle.pop()
            self._begin(proc, req, timeout)
            if proc.lean:
                view = memoryview(encode_code(req["code"], timeout))
                while view:
                    view = view[os.write(proc.ctl_w, view) :]
            else:
                _write_frame(proc.ctl_w, {"code": req["code"], "timeout": timeout})

    def _fork_burst(self):
        """Fork children for this request and the queued one-shot requests behind it, back to back.

        After every ``fork()`` each page the server then writes is copied (copy-on-write); forking a burst with
        nothing in between means the server's own work (framing, bookkeeping) pays those copies once per burst
        instead of once per execution.
        """
        waiting = sum(1 for r in self.queue if not r.get("session"))
        for _ in range(min(self.cfg.get("fork_burst", 8), 1 + waiting)):
            try:
                self.idle.append(self._fork())
            except OSError:
                if not self.idle:
                    raise
                return

    def _refill(self):
        """Keep ``prefork`` isolated children waiting for code."""
        if self.use_zygote:
            self._ask_for_children()
            return
        while len(self.idle) < self.cfg["prefork"] and not self.stopping and not self.queue:
            try:
                self.idle.append(self._fork())
            except OSError:
                return

    def _begin(self, proc, req, timeout):
        proc.request = req
        proc.started = time.monotonic()
        proc.deadline = proc.started + timeout
        proc.out.clear()
        proc.err.clear()
        proc.out_total = proc.err_total = 0
        self.running += 1

    def _fork(self, session=None):
        """Fork an isolated child that waits on its control pipe: for one cell (one-shot) or for many (session)."""
        if self.use_zygote:
            try:
                return self._fork_via_zygote(session)
            except OSError:
                if self.use_zygote:
                    raise  # else no zygote can be started here any more: fork from the server
        uid, workdir, (out_r, err_r, res_r, ctl_w), (out_w, err_w, res_w, ctl_r) = self._child_resources()
        pid = os.fork()
        if pid == 0:  # child
            try:
                _child_setup(self.cfg, uid, workdir, out_w, err_w, res_w, ctl_r, None)
                if session:
                    _run_session()
                else:
                    _run_one_shot_when_asked()
            except BaseException:
                with contextlib.suppress(Exception):
                    os.write(2, traceback.format_exc().encode())
            os._exit(70)
        for fd in (out_w, err_w, res_w, ctl_r):
            os.close(fd)
        return self._adopt(pid, uid, workdir, (out_r, err_r, res_r, ctl_w), session)

    def _child_resources(self):
        """A uid (under uid isolation), an empty working directory, and the four pipes of a new child: the server's
        ends (stdout, stderr, result, control) and the child's."""
        uid = self.free_uids.pop() if self.use_uids else None
        workdir = self._workdir(uid)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        return uid, workdir, (out_r, err_r, res_r, ctl_w), (out_w, err_w, res_w, ctl_r)

    def _adopt(self, pid, uid, workdir, ends, session):
        out_r, err_r, res_r, ctl_w = ends
        proc = _Proc(pid, uid, workdir, (out_r, err_r, res_r), ctl_w, session)
        for fd, kind in ((out_r, "out"), (err_r, "err"), (res_r, "res")):
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, ("pipe", proc))
            self.fd_owner[fd] = (proc, kind)
        self.procs[pid] = proc
        return proc

    # -- progress --------------------------------------------------------------------------------------------------
    def _on_output(self, fd):
        owner = self.fd_owner.get(fd)
        if owner is None:
            return
        proc, kind = owner
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._close_fd(proc, fd)
                return
            self._take(proc, kind, data)
            if kind == "res" and proc.request is not None:
                if proc.session:
                    for msg in proc.res.feed(data):
                        self._finish_cell(proc, msg)
                else:
                    self._maybe_finish_one_shot(proc)

    def _take(self, proc, kind, data):
        cap = self.cfg["max_output_bytes"]
        if kind == "out":
            if len(proc.out) < cap:
                proc.out += data[: cap - len(proc.out)]
            proc.out_total += len(data)
        elif kind == "err":
            if len(proc.err) < cap:
                proc.err += data[: cap - len(proc.err)]
            proc.err_total += len(data)
        elif not proc.session:
            proc.res_raw += data[: 1 << 20]

    def _maybe_finish_one_shot(self, proc):
        """Answer as soon as a one-shot child has written its result: it flushed its output and killed whatever it
        spawned before writing it, and only exits afterwards (its exit and reaping are off the latency path)."""
        try:
            payload = json.loads(proc.res_raw.decode("utf-8"))
        except ValueError:
            return  # not complete yet
        proc.answered_early = True
        self._drain(proc)
        self._finish(proc, self._exit_result(proc, payload))

    def _drain(self, proc):
        for fd, kind in ((proc.out_fd, "out"), (proc.err_fd, "err"), (proc.res_fd, "res")):
            if kind == "res" and proc.session:
                continue
            if fd in proc.open_fds:
                while True:
                    try:
                        data = os.read(fd, 1 << 16)
                    except (BlockingIOError, InterruptedError, OSError):
                        break
                    if not data:
                        self._close_fd(proc, fd)
                        break
                    self._take(proc, kind, data)

    def _close_fd(self, proc, fd):
        if fd in proc.open_fds:
            proc.open_fds.discard(fd)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(fd)
            self.fd_owner.pop(fd, None)
            os.close(fd)

    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.procs.get(pid)
            if proc is not None:
                proc.exited = status
                self._on_exit(proc)
            elif self.zygote is not None and pid == self.zygote.pid:
                self._zygote_died()
            elif self.forking:
                self.early_exits[pid] = (status, time.monotonic())

    def _on_exit(self, proc):
        if proc in self.idle:
            self.idle.remove(proc)
        self._drain(proc)
        self._sweep(proc)  # leftovers die before the result goes out
        if proc.request is not None:
            if proc.closing:
                error = {"name": "SandboxClosed", "value": "the sandbox was closed during the execution"}
                self._finish(proc, {"status": "sandbox_error", "error": {**error, "traceback": ""}})
            elif proc.timed_out:
                self._finish(proc, {"status": "timeout"})
            elif proc.session:
                self._finish(proc, self._exit_result(proc, None))
            else:
                err = None
                if proc.res_raw:
                    with contextlib.suppress(ValueError):
                        err = json.loads(proc.res_raw.decode("utf-8"))
                self._finish(proc, self._exit_result(proc, err))
        self._cleanup(proc)

    def _exit_result(self, proc, payload):
        status = proc.exited
        code = os.waitstatus_to_exitcode(status) if status is not None else None
        if payload is not None:
            error = payload.get("error")
            if error is None:
                return {"status": "ok", "exit_code": code}
            kind = "oom" if error.pop("oom", False) or error.get("name") == "MemoryError" else "error"
            return {"status": kind, "error": error, "exit_code": code}
        if code == 0:
            return {"status": "ok", "exit_code": 0}  # sys.exit(0) before the end of the code
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            value = f"the process was killed by {name}"
        else:
            value = f"the process exited with code {code}"
        if code is not None and code < 0 and -code == signal.SIGXFSZ:
            value = "the code wrote a file larger than the sandbox allows"
        return {
            "status": "crashed",
            "error": {"name": "ProcessExit", "value": value, "traceback": ""},
            "exit_code": code,
        }

    def _finish_cell(self, proc, msg):
        self._drain(proc)
        self._finish(proc, self._exit_result(proc, msg) if msg is not None else None)

    def _finish(self, proc, result):
        req = proc.request
        proc.request = None
        proc.deadline = None
        self.running -= 1
        result = dict(result)
        result.update(
            stdout=proc.out.decode("utf-8", errors="replace"),
            stderr=proc.err.decode("utf-8", errors="replace"),
            stdout_truncated=proc.out_total > len(proc.out),
            stderr_truncated=proc.err_total > len(proc.err),
            duration_s=time.monotonic() - proc.started,
            session_restarted=proc.restarted,
        )
        proc.restarted = False
        self._reply(req, result)

    def _reply(self, req, result):
        result["id"] = req["id"]
        result.setdefault("error", None)
        result.setdefault("exit_code", None)
        try:
            _write_frame(self.out_fd, result)
        except OSError:
            self._shutdown()

    def _check_deadlines(self):
        now = time.monotonic()
        for proc in list(self.procs.values()):
            if proc.deadline is not None and now >= proc.deadline and proc.request is not None and not proc.timed_out:
                # SIGKILL the group now; the result goes out when the child is reaped (milliseconds later), after
                # whatever it left behind is killed too.
                proc.timed_out = True
                proc.deadline = None
                self._kill(proc)

    def _kill(self, proc):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGKILL)

    def _cleanup(self, proc):
        """After a child exited: kill whatever it left behind, release its uid, remove its files."""
        self.procs.pop(proc.pid, None)
        if proc.session and self.sessions.get(proc.session) is proc:
            del self.sessions[proc.session]
            self.dead_sessions.add(proc.session)
        if proc.uid is not None:
            self.free_uids.insert(0, proc.uid)  # reuse the least recently used uid last
        for fd in list(proc.open_fds):
            self._close_fd(proc, fd)
        if proc.ctl_w is not None:
            with contextlib.suppress(OSError):
                os.close(proc.ctl_w)
        self._release_workdir(proc.uid, proc.workdir)
