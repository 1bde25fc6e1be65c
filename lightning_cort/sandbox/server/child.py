"""The child side of the sandbox fork server, and the server's own isolation (see the package docstring).

Part of the server program in this directory. It imports
nothing from lightning_cort: the server must start fast and survive anything its children do.
"""

import contextlib
import ctypes
import io
import json
import os
import resource
import signal
import struct
import sys
import traceback

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
IS_ROOT = os.geteuid() == 0

_CHILD_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


# --------------------------------------------------------------------------------------------------------------------
# framing
def _write_frame(fd, obj):
    data = json.dumps(obj).encode("utf-8")
    payload = struct.pack("<I", len(data)) + data
    view = memoryview(payload)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _FrameReader:
    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = struct.unpack("<I", self.buf[:4])
            if len(self.buf) < 4 + n:
                break
            out.append(json.loads(bytes(self.buf[4 : 4 + n])))
            del self.buf[: 4 + n]
        return out


# --------------------------------------------------------------------------------------------------------------------
# isolation of the server itself
def _isolate_server(cfg, notes):
    """Move the server (and so every child) into a network namespace without interfaces and a private mount
    namespace with size-capped tmpfs on ``/tmp``, ``/var/tmp`` and ``/dev/shm``; keep the Python installation
    reachable (read-only) for the children's unprivileged uids. Returns the directory for working directories."""
    if not IS_ROOT or not cfg["isolate"]:
        notes.append("not root: no network or mount namespace, no per-execution uid")
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) == 0:
        notes.append("network: private namespace without interfaces")
    else:
        notes.append(f"network: unshare failed ({os.strerror(ctypes.get_errno())}); network is NOT isolated")
    if libc.unshare(CLONE_NEWNS) != 0 or libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        notes.append("files: no mount namespace; /tmp is shared with the host")
        return None
    needed = _python_paths()
    # Handles on the Python directories, taken in the new namespace before anything covers them; bound back after.
    handles = {}
    for path in needed:
        with contextlib.suppress(OSError):
            handles[path] = os.open(path, os.O_PATH)
    covered = []
    opts = f"size={cfg['tmpfs_mb']}m,mode=1777".encode()
    for target in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(target) and libc.mount(b"tmpfs", target.encode(), b"tmpfs", 0, opts) == 0:
            covered.append(target)
    notes.append(f"files: private size-capped tmpfs on {', '.join(covered) or 'nothing'}")
    # Directories other uids cannot traverse (e.g. /root holding pyenv) are replaced by an empty tmpfs.
    for block in sorted({b for p in needed if (b := _others_can_reach(p)) is not None}):
        if libc.mount(b"tmpfs", block.encode(), b"tmpfs", 0, b"size=1m,mode=0755") == 0:
            covered.append(block)
            notes.append(f"files: {block} hidden from the code except the Python installation (read-only)")
    for path, fd in handles.items():
        if any(path == c or path.startswith(c.rstrip("/") + "/") for c in covered):
            with contextlib.suppress(OSError):
                os.makedirs(path, mode=0o755, exist_ok=True)
            src = f"/proc/self/fd/{fd}".encode()
            if libc.mount(src, path.encode(), None, MS_BIND | MS_REC, None) == 0:
                libc.mount(None, path.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, None)
            else:
                notes.append(f"files: could not keep {path} reachable for the code")
        os.close(fd)
    return "/tmp" if "/tmp" in covered else None


def _python_paths():
    """The directories the children's interpreter reads: installation, standard library, site-packages."""
    import sysconfig

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    paths |= {p for p in sys.path if p}
    paths |= set(sysconfig.get_paths().values())
    real = {os.path.realpath(p) for p in paths if os.path.isdir(p)}
    # Keep only the outermost of nested paths: binding a parent brings its children along.
    return sorted(p for p in real if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in real))


def _others_can_reach(path):
    """The first ancestor of ``path`` that other uids cannot traverse (no o+x), or ``None``."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        d = os.sep.join(parts[:i]) or os.sep
        try:
            if not os.stat(d).st_mode & 0o001:
                return d
        except OSError:
            return None
    return None


# --------------------------------------------------------------------------------------------------------------------
# the child side
def _set_limits(cfg, timeout, nproc):
    def lim(kind, value):
        if value > 0 or kind == resource.RLIMIT_CORE:  # a core-size limit of 0 is the point: no core dumps
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(kind, (value, value))

    lim(resource.RLIMIT_AS, cfg["memory_mb"] << 20)
    lim(resource.RLIMIT_FSIZE, cfg["max_file_mb"] << 20)
    lim(resource.RLIMIT_NOFILE, 256)
    lim(resource.RLIMIT_CORE, 0)
    if timeout is not None:
        lim(resource.RLIMIT_CPU, int(timeout) + 2)
    if nproc:
        lim(resource.RLIMIT_NPROC, nproc)


def _child_setup(cfg, uid, workdir, out_w, err_w, res_w, ctl_r, timeout):
    """Runs in the forked child before the user's code: isolation, limits, fresh standard streams."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(res_w, 3)
    keep = 4
    if ctl_r is not None:
        os.dup2(ctl_r, 4)
        keep = 5
    os.closerange(keep, 65536)
    _set_limits(cfg, timeout, cfg["nproc"] if uid is not None else 0)
    os.chdir(workdir)
    if uid is not None:
        global _OWN_UID
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        _OWN_UID = True
    # The server's environment already is the minimal one (see main): only the per-child entries change.
    os.environ["HOME"] = workdir
    os.environ["TMPDIR"] = workdir
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    # Unbuffered text streams: output written before os._exit() or a crash is not lost.
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True
    )
    sys.__stdout__, sys.__stderr__, sys.__stdin__ = sys.stdout, sys.stderr, sys.stdin
    seed = os.urandom(16)
    import random

    random.seed(seed)
    np = sys.modules.get("numpy")
    if np is not None:
        with contextlib.suppress(Exception):
            np.random.seed(int.from_bytes(seed[:4], "little"))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)


def _exec_cell(code, namespace):
    """Execute one cell; returns an error dict or None. SystemExit propagates."""
    try:
        compiled = compile(code, "<cell>", "exec")
        exec(compiled, namespace)
    except SystemExit:
        raise
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
            tb = tb.tb_next
        if isinstance(e, SyntaxError):
            tb = None
        text = "".join(traceback.format_exception(type(e), e, tb)).rstrip("\n")
        return {"name": type(e).__name__, "value": str(e), "traceback": text, "oom": isinstance(e, MemoryError)}
    return None


def _flush():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


_OWN_UID = False  # set in the child when it runs under its own uid


def _kill_leftovers():
    """Under its own uid, ``kill(-1)`` reaches every other process of that uid: whatever the code spawned."""
    if _OWN_UID:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)


def _exit_code(e):
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def _system_exit_error(e):
    return {"name": "SystemExit", "value": str(e.code), "traceback": f"SystemExit: {e.code}", "oom": False}


def _run_one_shot(code):
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        error = _exec_cell(code, namespace)
    except SystemExit as e:
        _flush()
        _kill_leftovers()
        if _exit_code(e) != 0:
            with contextlib.suppress(Exception):
                os.write(3, json.dumps({"error": _system_exit_error(e)}).encode("utf-8"))
        os._exit(_exit_code(e))
    _flush()
    _kill_leftovers()
    with contextlib.suppress(Exception):
        os.write(3, json.dumps({"error": error}).encode("utf-8"))
    os._exit(0)


def _run_one_shot_when_asked():
    """A pre-forked child: wait (already isolated) for the code, then run it once."""
    reader = _FrameReader()
    while True:
        data = os.read(4, 1 << 20)
        if not data:
            os._exit(0)  # the server went away or retired this child
        msgs = reader.feed(data)
        if msgs:
            break
    msg = msgs[0]
    timeout = msg.get("timeout")
    if timeout:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CPU, (int(timeout) + 2, int(timeout) + 2))
    _run_one_shot(msg["code"])


def _run_session():
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    reader = _FrameReader()
    while True:
        data = os.read(4, 1 << 16)
        if not data:
            os._exit(0)
        for msg in reader.feed(data):
            try:
                error = _exec_cell(msg["code"], namespace)
            except SystemExit as e:
                _flush()
                if _exit_code(e) != 0:
                    with contextlib.suppress(Exception):
                        _write_frame(3, {"error": _system_exit_error(e)})
                os._exit(_exit_code(e))
            _flush()
            _write_frame(3, {"error": error})
