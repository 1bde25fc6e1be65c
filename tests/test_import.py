"""``import lightning_cort`` must work without the optional extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_import_without_optional_packages():
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"vllm", "bitsandbytes", "e2b", "e2b_code_interpreter"}:
                    raise ImportError(f"blocked optional package {name}")
                return None

        sys.meta_path.insert(0, Block())
        import lightning_cort
        from lightning_cort import formats, sandbox, rollout, modules, callbacks, losses, rewards, tasks, trajectory
        from lightning_cort import hints
        from lightning_cort.recipes import rl
        assert lightning_cort.GRPOModule is modules.GRPOModule
        assert not any(m.split(".")[0] in {"vllm", "bitsandbytes", "e2b_code_interpreter"} for m in sys.modules)
        print(lightning_cort.__version__)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def test_missing_extra_error_names_the_extra(monkeypatch):
    import pytest

    from lightning_cort import _imports

    monkeypatch.setattr(_imports, "_available", lambda module: False)
    with pytest.raises(ImportError, match=r"lightning-cort\[vllm\]"):
        _imports.require("vllm", "the vLLM backend")
