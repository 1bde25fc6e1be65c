"""The fork server behind :class:`~lightning_cort.sandbox.LocalSandbox`.

A program of its own, not imported by the client: :class:`~lightning_cort.sandbox.LocalSandbox` starts it as
``python -I <this directory> '<json config>'`` (``__main__.py`` is the entry point). It imports the preloaded
modules once, isolates itself (a network namespace without interfaces and a private ``/tmp`` when it runs as root),
then serves requests read from its stdin and answers on its stdout, both as 4-byte length-prefixed JSON frames:

* ``{"id", "op": "run", "code", "session", "timeout"}`` → a result frame with the same ``id``;
* ``{"op": "close_session", "session"}``;
* ``{"id", "op": "stats"}`` → pids of the pre-forked idle children and of the zygote, counts of running, queued,
  sessions, zygote restarts;
* ``{"op": "shutdown"}``.

Each one-shot execution is a forked child of this process, so it pays no interpreter start or import cost; a
session is a long-lived forked child that executes its cells in one namespace. The forks are done by a zygote
(``zygote.py``: a copy of this process made after preloading that does nothing but fork, so the event loop here is
never the process being forked) unless it is switched off or unavailable; the children are this process's children
either way. Every child runs in its own process
group, under its own unprivileged uid when the server is root (so ``RLIMIT_NPROC`` caps fork bombs and every process
the code left behind can be killed by uid), with resource limits, a private working directory, stdin on
``/dev/null``, and a scrubbed environment. The server enforces wall-clock deadlines by ``SIGKILL``, drains output
while the code runs and caps what it keeps.

The files:

* ``__main__.py``: the entry point: preload, freeze the heap, scrub the environment, serve.
* ``loop.py``: :class:`Server`, the event loop (requests, children, deadlines, output, results); the two parts below
  are its methods, written beside the state they manage.
* ``uids.py``: execution uids and working directories (``UidsAndWorkdirs``).
* ``zygote.py``: the zygote process, and the server's side of asking it for children (``ZygoteForks``).
* ``child.py``: what runs in a child (limits, uid, streams, executing cells), and the server's own isolation.
* ``zygote_child.py``: the cheaper setup of a one-shot child forked by the zygote.

Nothing here imports lightning_cort: the server must start fast and survive anything the children do. The files
import each other by their bare names because the directory is the program (Python puts it first on ``sys.path``
when it runs a directory); ``__main__.py`` takes the directory off ``sys.path`` and the files out of
``sys.modules`` before serving, so executed code cannot import them.
"""
