"""Execution uids and working directories of the sandbox fork server (see the package docstring).

Under uid isolation every execution runs as its own unprivileged uid, which owns only the execution's working
directory; what an execution leaves running is found, and killed, by that uid. Like the rest of the server, this
file imports nothing from lightning_cort.
"""

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import tempfile


def _reserve_uids(base, count, notes):
    """The first range ``base + k * count`` (k < 64) of execution uids no other live sandbox server on this machine
    holds, and the descriptor whose lock holds it until this process exits.

    Two servers giving out the same uids would let one's executions signal the other's (an execution ends by killing
    every process of its uid). The lock is an ``flock`` on a root-only file under ``/run``; children close the
    descriptor during their setup.
    """
    directory = "/run/lightning_cort"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as e:
        notes.append(f"uids: no lock directory ({e}); another sandbox on this machine may use the same uids")
        return base, None
    for k in range(64):
        start = base + k * count
        try:
            fd = os.open(f"{directory}/uids-{start}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return start, fd
        except OSError:
            os.close(fd)
    notes.append("uids: every range is held by another sandbox; sharing uids with one of them")
    return base, None


class UidsAndWorkdirs:
    """Server methods (mixed into the server class of ``loop.py``): working directories per uid, and killing what
    an execution left behind."""

    def _workdir(self, uid):
        """An empty working directory for a child: one kept per uid (emptied after use), or a fresh one."""
        if uid is None:
            return tempfile.mkdtemp(dir=self.workroot)
        path = os.path.join(self.workroot, str(uid))
        if not os.path.isdir(path):
            os.mkdir(path, 0o700)
            os.chown(path, uid, uid)
        return path

    def _release_workdir(self, uid, path):
        if uid is None:
            shutil.rmtree(path, ignore_errors=True)
            return
        try:
            if os.listdir(path):  # the code left files: remove them (and any permissions it changed)
                shutil.rmtree(path, ignore_errors=True)
            st = os.stat(path) if os.path.exists(path) else None
            if st is None or st.st_uid != uid or (st.st_mode & 0o777) != 0o700:
                shutil.rmtree(path, ignore_errors=True)
                os.mkdir(path, 0o700)
                os.chown(path, uid, uid)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)

    def _sweep(self, proc):
        """Kill what an exited child left behind (grandchildren, daemons, escaped process groups).

        Under uid isolation, a child that finished normally has already done this itself (``kill(-1)`` as its uid,
        which reaches exactly its own leftovers, at no cost); after a crash, a timeout or a session's end the server
        does it with a helper process that takes the uid. Without uid isolation only the process group is killed.
        """
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        cleaned_itself = proc.answered_early or (proc.res_raw and not proc.session and not proc.timed_out)
        if proc.uid is not None and not cleaned_itself:
            self._kill_uid(proc.uid)

    def _kill_uid(self, uid):
        """Kill every process running as ``uid`` (grandchildren that escaped the process group): a helper that
        becomes ``uid`` and sends ``kill(-1, SIGKILL)`` reaches exactly those."""
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            except OSError as e:
                os._exit(0 if e.errno == errno.ESRCH else 1)
            os._exit(0)
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
