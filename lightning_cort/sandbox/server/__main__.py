"""Entry point of the sandbox server: ``python -I <this directory> '<json config>'`` (see ``__init__.py``)."""

import contextlib
import io
import json
import os
import shutil
import sys

from child import _CHILD_ENV
from loop import Server
from zygote import use_huge_pages

# Executed code must not import the server's files: off the path, out of the module cache (the functions keep them).
del sys.path[0]
for _name in ("child", "loop", "uids", "zygote", "zygote_child"):
    sys.modules.pop(_name, None)


def main():
    cfg = json.loads(sys.argv[1])
    for name in cfg["preload"]:
        with contextlib.suppress(Exception):
            __import__(name)
    np = sys.modules.get("numpy")
    if np is not None:
        with contextlib.suppress(Exception):
            np.random.seed(0)  # the first call builds numpy's global generator (~20 ms): pay it once, not per child
    if cfg.get("warmup"):
        with contextlib.suppress(BaseException), contextlib.redirect_stdout(io.StringIO()):
            exec(compile(cfg["warmup"], "<warmup>", "exec"), {"__name__": "__warmup__"})
    import gc

    gc.collect()
    gc.freeze()  # children's garbage collections skip the preloaded objects: fewer copy-on-write page copies
    if cfg.get("huge_pages", True):
        use_huge_pages()
    os.environ.clear()
    os.environ.update(_CHILD_ENV)
    server = Server(cfg)
    try:
        server.serve()
    finally:
        server._stop_zygote()
        shutil.rmtree(server.workroot, ignore_errors=True)


main()
