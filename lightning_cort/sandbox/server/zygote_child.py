"""A one-shot execution child forked by the zygote: the same setup as ``_child_setup``, at a fraction of the cost.

Every page a child writes is copied from the zygote (copy-on-write), and every object its Python code touches has its
reference count written, so a child's cost is roughly the number of distinct objects it touches. For a trivial
snippet most of those were the setup's, not the snippet's (page faults counted per phase: building the three standard
streams ~110, JSON decoding of the code ~45, ``os.environ`` and ``contextlib`` machinery ~50). Here the zygote
prepares once what every child needs (:class:`Prepared`: the standard streams on descriptors 0-2, the limits, the
encoded environment keys, numpy's seeding function), so a child does only what is its own: session and process group,
descriptors, limits, working directory, uid, environment entries, numpy's seed. It then reads its code in a small
binary frame (:func:`encode_code`) and writes its result in the format ``loop.py`` reads from every one-shot
child. Sessions keep the general path (``_child_setup``/``_run_session``): their setup is paid once per session.
"""

# try/except instead of contextlib.suppress below: each ``with`` builds objects the child would copy pages for.
# ruff: noqa: SIM105

import io
import json
import os
import resource
import signal
import struct
import sys

from child import _exec_cell, _exit_code, _system_exit_error

CODE_HEADER = struct.Struct("<Id")  # byte length of the code (UTF-8, lone surrogates kept), timeout in seconds
OK_RESULT = b'{"error": null}'
MAX_FD = 65536


def encode_code(code, timeout):
    """The frame the server writes on a lean child's control pipe."""
    data = code.encode("utf-8", "surrogatepass")
    return CODE_HEADER.pack(len(data), float(timeout or 0.0)) + data


class Prepared:
    """What the zygote builds once for all its one-shot children (see the module docstring)."""

    def __init__(self, cfg):
        self.limits = [
            (resource.RLIMIT_AS, cfg["memory_mb"] << 20),
            (resource.RLIMIT_FSIZE, cfg["max_file_mb"] << 20),
            (resource.RLIMIT_NOFILE, 256),
            (resource.RLIMIT_CORE, 0),
        ]
        self.limits = [(k, v) for k, v in self.limits if v > 0 or k == resource.RLIMIT_CORE]
        self.nproc = cfg["nproc"]
        self.environ = os.environ._data  # what os.environ reads; os.putenv changes the process's own environment
        self.home, self.tmpdir = os.environ.encodekey("HOME"), os.environ.encodekey("TMPDIR")
        # The standard streams, built here while descriptors 0-2 are what they will be in the child: /dev/null
        # read-only for stdin, pipes for stdout and stderr (whether a descriptor is seekable is decided now).
        r, w = os.pipe()
        saved = [os.dup(1), os.dup(2)]
        os.dup2(w, 1)
        os.dup2(w, 2)
        try:
            self.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
            self.stdout, self.stderr = (
                io.TextIOWrapper(
                    io.FileIO(fd, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True
                )
                for fd in (1, 2)
            )
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in (r, w, *saved):
                os.close(fd)
        # ``random`` reseeds itself in every child (its after-fork hook); numpy's global generator does not.
        np = sys.modules.get("numpy")
        self.np_seed = np.random.seed if np is not None and hasattr(np, "random") else None

    def install(self):
        """Make the prepared streams the zygote's own standard streams, so children start with them (replacing them
        in each child would also free the old ones there, ~45 copied pages)."""
        self.replaced = sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__, sys.__stderr__
        sys.stdin, sys.stdout, sys.stderr = self.stdin, self.stdout, self.stderr
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = self.stdin, self.stdout, self.stderr


def run_one_shot(prep, uid, workdir, out_w, err_w, res_w, ctl_r):
    """In the child: set up, wait for the code, run it once, report, exit."""
    os.setsid()
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(res_w, 3)
    os.dup2(ctl_r, 4)
    os.closerange(5, MAX_FD)  # descriptor 0 is the zygote's read-only /dev/null
    setrlimit = resource.setrlimit
    for kind, value in prep.limits:
        try:
            setrlimit(kind, (value, value))
        except (ValueError, OSError):
            pass
    if uid is not None and prep.nproc > 0:
        try:
            setrlimit(resource.RLIMIT_NPROC, (prep.nproc, prep.nproc))
        except (ValueError, OSError):
            pass
    os.chdir(workdir)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    path = workdir.encode()
    os.putenv(prep.home, path)
    os.putenv(prep.tmpdir, path)
    prep.environ[prep.home] = prep.environ[prep.tmpdir] = path
    if prep.np_seed is not None:
        try:
            prep.np_seed(int.from_bytes(os.urandom(4), "little"))
        except Exception:
            pass
    # Inherited from the zygote as they are: the standard streams (``Prepared.install``) and the signals (SIGINT
    # raises KeyboardInterrupt, SIGTERM and SIGCHLD default, no wakeup descriptor).

    data = b""
    need = CODE_HEADER.size
    while len(data) < need:
        chunk = os.read(4, 1 << 20)
        if not chunk:
            os._exit(0)  # the server went away or retired this child
        data += chunk
        if need == CODE_HEADER.size and len(data) >= need:
            need += CODE_HEADER.unpack_from(data)[0]
    n, timeout = CODE_HEADER.unpack_from(data)
    if timeout:
        try:
            setrlimit(resource.RLIMIT_CPU, (int(timeout) + 2, int(timeout) + 2))
        except (ValueError, OSError):
            pass
    code = data[CODE_HEADER.size : CODE_HEADER.size + n].decode("utf-8", "surrogatepass")
    del data
    own_uid = uid is not None
    try:
        error = _exec_cell(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as e:
        _finish(own_uid, _system_exit_error(e) if _exit_code(e) != 0 else None, _exit_code(e))
    _finish(own_uid, error, 0, always=True)


def _finish(own_uid, error, code, always=False):
    """Flush, kill what the code left running (everything else under this uid), report, exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if own_uid:
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    if error is not None or always:
        try:
            os.write(3, OK_RESULT if error is None else json.dumps({"error": error}).encode("utf-8"))
        except Exception:
            pass
    os._exit(code)
