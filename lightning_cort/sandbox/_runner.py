"""Executed as ``python -I _runner.py <job_dir>`` in a fresh process by :class:`LocalSandbox`.

Reads ``cells.json`` (earlier cells of the session, replayed silently, then the new cell), applies resource limits,
runs the cells in one namespace, and writes ``result.json`` with the error of the new cell, if any. Kept free of
lightning_cort imports so the child starts fast.
"""

import contextlib
import io
import json
import os
import resource
import sys
import traceback


def _limit(kind: int, value: int) -> None:
    if value > 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(kind, (value, value))


def main() -> None:
    job = sys.argv[1]
    with open(os.path.join(job, "cells.json"), encoding="utf-8") as f:
        spec = json.load(f)
    _limit(resource.RLIMIT_AS, spec["memory_bytes"])
    _limit(resource.RLIMIT_FSIZE, spec["file_bytes"])
    _limit(resource.RLIMIT_CPU, spec["cpu_seconds"])
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    out = sys.stdout
    for cell in spec["replay"]:
        sys.stdout = io.StringIO()  # earlier cells already showed their output
        # A replayed cell that fails now is skipped, as it would have been dropped.
        with contextlib.suppress(BaseException):
            exec(compile(cell, "<cell>", "exec"), namespace)
    sys.stdout = out
    error = None
    try:
        exec(compile(spec["code"], "<cell>", "exec"), namespace)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.stdout.flush()
        os._exit(code)
    except BaseException as e:
        tb = e.__traceback__
        # Drop this runner's frames: the model should only see its own code.
        while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
            tb = tb.tb_next
        lines = traceback.format_exception(type(e), e, tb)
        error = {"name": type(e).__name__, "value": str(e), "traceback": "".join(lines).rstrip("\n")}
    sys.stdout.flush()
    sys.stderr.flush()
    with open(os.path.join(job, "result.json"), "w", encoding="utf-8") as f:
        json.dump({"error": error}, f)


main()
