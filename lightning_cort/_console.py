"""What a run shows in the terminal: one progress display per phase, and no library noise unless asked for."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(enabled: bool, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar for a phase that is not a Lightning loop (held-out evaluation, generation); yields
    ``advance(n)``. With ``enabled`` false it shows nothing."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def quiet_libraries(verbose: bool) -> None:
    """A newcomer's terminal: no accelerator banners, tips, weight-loading progress bars or library deprecation
    warnings. The recipes call this once their config is parsed; ``--verbose`` keeps everything. Warnings of
    lightning_cort itself are kept."""
    if verbose:
        return
    import logging
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # vLLM logs its configuration, compilation, memory bookkeeping and CPU tuning hints (read when it is imported).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    # Trackers (trainer.logger): W&B's run banners and sync hints, MLflow's "Creating experiment" line.
    os.environ.setdefault("WANDB_SILENT", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # "GPU available: ...", "💡 Tip: ...litlogger", "`max_steps=N` reached", ...: info logs of Lightning.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # bitsandbytes on a CPU logs a `kernels-community` warning at import (peft imports it).
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for module in (
        "lightning",
        "pytorch_lightning",
        "torch",
        "transformers",
        "peft",
        "bitsandbytes",
        "jsonargparse",
        "vllm",
    ):
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
