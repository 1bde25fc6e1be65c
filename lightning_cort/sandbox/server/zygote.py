"""The zygote of the sandbox fork server: a process that forks the execution children (see the package docstring).

Forking a process costs page-table copies for everything it maps, and after every ``fork()`` each page the forking
process writes is copied (copy-on-write) while children still share it. The server runs an event loop that
allocates all the time, so when it forks the children itself it pays those copies after every fork, and its writes
split the huge pages its preloaded heap was collapsed into (see ``use_huge_pages``), making later forks and the
children's exits dearer. The zygote is forked from the server once, after preloading: it collapses its copy of the
heap into huge pages and then does nothing but fork, so its address space stays cheap to copy and it takes almost
no copy-on-write faults. The server sends it one request per child (uid, working directory, and the child's ends of
the four pipes as ``SCM_RIGHTS``) over a ``SOCK_SEQPACKET`` socket; the zygote answers with the child's pid.

The children are created with ``clone3(CLONE_PARENT)``, so their parent is the server, exactly as if it had forked
them: it reaps them, gets their exit status and ``SIGCHLD``, and nothing about their isolation changes (own session
and process group, own uid, limits, scrubbed environment and streams: sessions run ``_child_setup``, one-shot
children the equivalent, cheaper setup of ``zygote_child.py``). The zygote runs in the server's namespaces and
process group, dies with the server (``PR_SET_PDEATHSIG``) and is respawned by the server when it dies.

Like the rest of the server, this file imports nothing from lightning_cort.
"""

import contextlib
import ctypes
import fcntl
import gc
import os
import select
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import traceback

from child import _child_setup, _run_session
from zygote_child import Prepared, run_one_shot

CLONE_PARENT = 0x00008000
CLONE_CHILD_CLEARTID = 0x00200000
CLONE_CHILD_SETTID = 0x01000000
SYS_CLONE3 = 435  # the same number on every Linux architecture
PR_SET_PDEATHSIG = 1
REQUEST = struct.Struct("<qiB")  # request tag, uid (-1: none), session flag; then the working directory
REPLY = struct.Struct("<qq")  # request tag, child pid (or -errno)
FDS = struct.Struct("4i")  # the child's ends of its stdout, stderr, result and control pipes
ZYGOTE_PATIENCE_S = 10.0  # a request unanswered for this long means the zygote is stuck


class _Cloner:
    """``fork()`` whose child gets the caller's parent as its parent (``clone3`` with ``CLONE_PARENT``).

    Done as ``os.fork`` does it (``PyOS_BeforeFork``, the system call, ``PyOS_AfterFork_Child``/``_Parent``, with the
    GIL held throughout), and as glibc's ``fork`` does for the thread id it keeps in the thread descriptor
    (``CLONE_CHILD_SETTID`` on its address, found through the ``_thread_db_pthread_tid`` descriptor glibc exports for
    debuggers). glibc's ``pthread_atfork`` handlers do not run: the zygote is single-threaded and holds no lock.
    Raises ``OSError`` where any of this is unavailable (not glibc, kernels before 5.3, a seccomp filter).
    """

    def __init__(self):
        if not sys.platform.startswith("linux"):
            raise OSError("clone3 needs Linux")
        try:
            libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held across the call, as in os.fork
            offset = (ctypes.c_uint32 * 3).in_dll(libc, "_thread_db_pthread_tid")[2]
            pthread_self = libc.pthread_self
            self._syscall = libc.syscall
            api = ctypes.pythonapi
            self._before, self._child = api.PyOS_BeforeFork, api.PyOS_AfterFork_Child
            self._parent = api.PyOS_AfterFork_Parent
        except (AttributeError, ValueError) as e:
            raise OSError(f"no glibc thread descriptor layout or fork hooks: {e}") from None
        pthread_self.restype = ctypes.c_void_p
        self._syscall.restype = ctypes.c_long
        self._syscall.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t]
        tid_addr = pthread_self() + offset
        if ctypes.c_int.from_address(tid_addr).value != threading.get_native_id():
            raise OSError("unexpected glibc thread descriptor layout")
        flags = CLONE_PARENT | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID
        # struct clone_args (version 0): flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls.
        # With CLONE_PARENT the exit signal must be 0: the child inherits the caller's (SIGCHLD, to the server).
        self._args = (ctypes.c_uint64 * 8)(flags, 0, tid_addr, 0, 0, 0, 0, 0)

    def clone(self):
        """Returns 0 in the child and the child's pid in the caller."""
        self._before()
        pid = self._syscall(SYS_CLONE3, ctypes.addressof(self._args), ctypes.sizeof(self._args))
        if pid == 0:
            self._child()
            return 0
        err = ctypes.get_errno()
        self._parent()
        if pid < 0:
            raise OSError(err, f"clone3: {os.strerror(err)}")
        return pid


def use_huge_pages(all_anonymous=False):
    """Back the preloaded heap with transparent huge pages where the kernel allows it (best effort).

    ``fork()`` copies one page-table entry per 4 KiB page of the ~60 MB of private memory and the child's exit tears
    them down again; with that memory in 2 MiB pages both cost a fraction (see docs/benchmarks.md). Pages a child
    writes are still copied 4 KiB at a time. ``all_anonymous`` covers every anonymous private mapping (pymalloc's
    arenas, numpy's buffers), not only the ``[heap]``. Needs ``MADV_COLLAPSE`` (Linux 6.1+); elsewhere nothing
    changes.
    """
    huge = 1 << 21
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except (OSError, AttributeError):
        return
    for line in lines:
        parts = line.split()
        if len(parts) < 5 or parts[1][:2] != "rw":
            continue
        name = parts[5] if len(parts) > 5 else ""
        if name != "[heap]" and not (all_anonymous and not name):
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        lo, hi = (lo + huge - 1) & ~(huge - 1), hi & ~(huge - 1)
        if hi > lo and libc.madvise(lo, hi - lo, 14) == 0:  # MADV_HUGEPAGE
            libc.madvise(lo, hi - lo, 25)  # MADV_COLLAPSE


# --------------------------------------------------------------------------------------------------------------------
# the zygote process
def _zygote_main(cfg, sock, server_pid):
    """Set up (descriptors, signals, what the children share), say whether cloning works, then serve."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != server_pid:  # the server died before the line above
        os._exit(0)
    # The children inherit these: SIGINT raises KeyboardInterrupt, SIGTERM and SIGCHLD default, no wakeup fd.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # Only stdin (/dev/null, read-only, as the children's), stdout (/dev/null), stderr (the server's) and the socket
    # stay open: no copy of the server's pipes to running children may outlive it. Descriptors 3 and 4 are held by
    # /dev/null so the four descriptors received with each request land above 4, where a child can move them to 1-4
    # without overwriting one.
    fd = fcntl.fcntl(sock.detach(), fcntl.F_DUPFD, 10)
    os.closerange(3, fd)
    os.closerange(fd + 1, 65536)
    sock = socket.socket(fileno=fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    if null != 3:
        os.dup2(null, 3)
    os.dup2(null, 4)
    try:
        cloner = _Cloner()
        pid = cloner.clone()  # a trial child (the server reaps it): clone3 may be filtered out
        if pid == 0:
            os._exit(0)
    except OSError as e:
        sock.send(f"unavailable: {e}".encode())
        os._exit(0)
    prep = Prepared(cfg)
    prep.install()
    if cfg.get("huge_pages", True):
        use_huge_pages(all_anonymous=True)
    gc.freeze()  # children's collections skip what the zygote holds (the server collected before its own freeze)
    sock.send(b"ok")
    _serve(cfg, sock, cloner, prep)


def _serve(cfg, sock, cloner, prep):
    """Fork one child per request. Kept to few objects and calls: every page this loop writes is copied again
    after each fork while children share it."""
    recvmsg, send, clone, close = sock.recvmsg, sock.send, cloner.clone, os.close
    ancillary = socket.CMSG_SPACE(FDS.size)
    while True:
        try:
            data, anc, _, _ = recvmsg(4096, ancillary)
        except InterruptedError:
            continue
        except OSError:
            os._exit(0)
        if not data:
            os._exit(0)  # the server closed the socket or died
        fds = ()
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4])
        tag, uid, session = REQUEST.unpack_from(data)
        if len(fds) != 4:
            for fd in fds:
                close(fd)
            send(REPLY.pack(tag, -22))  # EINVAL
            continue
        try:
            pid = clone()
        except OSError as e:
            pid = -(e.errno or 1)
        if pid == 0:  # the execution child: its parent is the server
            sock.detach()
            uid = None if uid < 0 else uid
            workdir = data[REQUEST.size :].decode()
            try:
                if session:
                    _child_setup(cfg, uid, workdir, *fds, None)
                    _run_session()
                else:
                    run_one_shot(prep, uid, workdir, *fds)
            except BaseException:
                with contextlib.suppress(Exception):
                    os.write(2, traceback.format_exc().encode())
            os._exit(70)
        for fd in fds:
            close(fd)
        send(REPLY.pack(tag, pid))


# --------------------------------------------------------------------------------------------------------------------
# the server's handle on its zygote
class Zygote:
    """A live zygote as seen by the server: its pid and the socket to it.

    Raises ``OSError`` when the zygote cannot be started or cannot clone on this system (the server then forks the
    children itself).
    """

    def __init__(self, cfg):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                mine.close()
                _zygote_main(cfg, theirs, server_pid)
            except BaseException:
                with contextlib.suppress(Exception):
                    os.write(2, traceback.format_exc().encode())
            os._exit(70)
        theirs.close()
        self.pid = pid
        self.sock = mine
        try:
            hello = mine.recv(4096) if select.select([mine], [], [], 60)[0] else b"no answer within 60 s"
        except OSError as e:
            hello = f"no answer ({e})".encode()
        if hello != b"ok":
            self.close()
            raise OSError(hello.decode(errors="replace") or "the zygote exited during its start")

    def fileno(self):
        return self.sock.fileno()

    def request(self, tag, uid, workdir, session, fds):
        """Ask for a child; its pid comes back from :meth:`replies` under ``tag``."""
        data = REQUEST.pack(tag, -1 if uid is None else uid, bool(session)) + workdir.encode()
        self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, FDS.pack(*fds))])

    def replies(self, wait=0.0):
        """``(tag, pid)`` pairs received so far, waiting up to ``wait`` seconds for the first; ``None`` once the
        zygote is gone."""
        out = []
        if wait and not select.select([self.sock], [], [], wait)[0]:
            return out
        while True:
            try:
                data = self.sock.recv(REPLY.size, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:
                data = b""
            if not data:  # the zygote is gone; what it answered before still counts
                return out or None
            out.append(REPLY.unpack(data))

    def close(self):
        """Stop the zygote (it exits when its socket closes; ``SIGKILL`` makes sure)."""
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------------------------------
# the server's side: asking the zygote for children (mixed into the server class of ``loop.py``)
class ZygoteForks:
    """Server methods that get children from the zygote.

    One-shot children are asked for ahead of need and arrive asynchronously (the answer is read in the event loop, so
    the server never waits while the zygote forks); a session's child is waited for. A zygote that dies is noticed
    when it is reaped or its socket closes, and a new one is forked from the server when children are next needed;
    if none can be started the server forks the children itself from then on.
    """

    def _start_zygote(self):
        """Start a zygote; ``False`` (and forking from the server from now on) if that is impossible here."""
        try:
            zygote = Zygote(self.cfg)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.write(2, f"sandbox: zygote unavailable ({e}); forking from the server\n".encode())
            self.use_zygote = False
            return False
        self.zygote = zygote
        self.zygote_restarts += 1
        self.sel.register(zygote.fileno(), selectors.EVENT_READ, ("zygote", None))
        return True

    def _stop_zygote(self):
        """Stop the zygote and give back what its unanswered requests held."""
        zygote, self.zygote = self.zygote, None
        if zygote is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.sel.unregister(zygote.fileno())
            zygote.close()
        forking, self.forking = self.forking, {}
        for uid, workdir, ends, _, _ in forking.values():
            self._release_resources(uid, workdir, ends, maybe_started=True)
        self.early_exits.clear()

    def _zygote_died(self):
        self._stop_zygote()  # a new one is started when children are next needed

    def _release_resources(self, uid, workdir, ends, maybe_started=False):
        for fd in ends:
            with contextlib.suppress(OSError):
                os.close(fd)
        if uid is not None:
            if maybe_started:  # the zygote may have cloned the child before it died: nothing may run as the uid
                self._kill_uid(uid)
            self.free_uids.insert(0, uid)
        self._release_workdir(uid, workdir)

    def _request_fork(self, session=None):
        """Ask the zygote for a child (starting a zygote if there is none); returns the request's tag."""
        if self.zygote is None and not self._start_zygote():
            raise OSError("the zygote could not be started")
        uid, workdir, ends, theirs = self._child_resources()
        self.fork_tag += 1
        try:
            self.zygote.request(self.fork_tag, uid, workdir, session, theirs)
        except OSError:
            self._release_resources(uid, workdir, ends)
            self._zygote_died()
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        self.forking[self.fork_tag] = (uid, workdir, ends, session, time.monotonic())
        return self.fork_tag

    def _on_zygote(self, wait=0.0):
        """Adopt the children the zygote has answered with."""
        replies = self.zygote.replies(wait) if self.zygote is not None else None
        if replies is None:
            self._zygote_died()
            return
        for tag, pid in replies:
            entry = self.forking.pop(tag, None)
            if entry is None:
                continue
            uid, workdir, ends, session, sent = entry
            if pid <= 0:
                self._release_resources(uid, workdir, ends)
                self._fork_failed(OSError(-pid, f"the zygote could not fork: {os.strerror(-pid)}"))
                continue
            proc = self._adopt(pid, uid, workdir, ends, session)
            early = self.early_exits.pop(pid, None)
            if early is not None and early[1] >= sent:  # it died before it was known: not usable
                proc.exited = early[0]
                self._on_exit(proc)
            elif session is None:
                proc.lean = True
                self.idle.append(proc)
            else:
                self.session_forks[tag] = proc
        if not self.forking:
            self.early_exits.clear()

    def _fork_failed(self, error):
        """No child could be made: the first one-shot request that was waiting for one fails (as it would have if
        the server had forked it)."""
        for i, req in enumerate(self.queue):
            if not req.get("session"):
                del self.queue[i]
                error = {"name": "OSError", "value": str(error), "traceback": ""}
                self._reply(req, {"status": "sandbox_error", "error": error})
                return

    def _ask_for_children(self):
        """Keep ``prefork`` children waiting for code, and up to ``fork_burst`` while one-shot requests are queued."""
        if self.stopping:
            return
        if self.forking and time.monotonic() - min(e[4] for e in self.forking.values()) > ZYGOTE_PATIENCE_S:
            self._zygote_died()  # alive but not answering (stopped, stuck): replace it
        burst, waiting = self.cfg.get("fork_burst", 8), 0
        for req in self.queue:
            if not req.get("session"):
                waiting += 1
                if waiting >= burst:
                    break
        target = max(self.cfg["prefork"], waiting)
        pending = sum(1 for entry in self.forking.values() if entry[3] is None)
        for _ in range(target - len(self.idle) - pending):
            if not self.use_zygote:
                return
            try:
                self._request_fork()
            except OSError as e:
                if self.use_zygote:
                    self._fork_failed(e)
                return

    def _fork_via_zygote(self, session):
        """A session's child, waited for (other answers that arrive meanwhile are adopted as usual)."""
        for _ in range(2):  # a zygote found dead is replaced once
            tag = self._request_fork(session)
            deadline = time.monotonic() + ZYGOTE_PATIENCE_S
            while tag in self.forking and self.zygote is not None and time.monotonic() < deadline:
                self._on_zygote(wait=0.5)
            proc = self.session_forks.pop(tag, None)
            if proc is not None:
                return proc
            if tag in self.forking:  # no answer in time
                self._zygote_died()
            if not self.use_zygote:
                break
        raise OSError("the zygote could not fork a child for the session")
