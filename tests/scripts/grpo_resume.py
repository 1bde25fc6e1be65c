"""The RL recipe, killable and resumable: ``python grpo_resume.py <run dir> <cache dir> [--kill-after N] [--resume]``.

Runs ``python -m lightning_cort.recipes.rl`` on the tiny task (4 GRPO steps of 2 prompts × 4 samples, two optimizer
steps each, a checkpoint every RL step) with two probes added to its callbacks: every step's prompts, rewards and loss
are appended to ``<run dir>/steps.jsonl`` (flushed, so a SIGKILL loses nothing written), and ``--kill-after N``
SIGKILLs the process right after the optimizer step ``N`` (before that step's checkpoint is written). ``--resume``
passes ``--trainer.resume last``. The final weights' checksums go to ``<run dir>/final.json``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import SMALL_WARMUP_ARGS


def main() -> None:
    run_dir, cache = Path(sys.argv[1]), sys.argv[2]
    kill_after = int(sys.argv[sys.argv.index("--kill-after") + 1]) if "--kill-after" in sys.argv else None
    os.environ["LIGHTNING_CORT_CACHE"] = cache
    from lightning_cort.recipes import rl

    class Record(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, i: int) -> None:
            step = {
                "step": trainer.global_step,
                "prompts": [r["prompt"] for r in batch.rows],
                "completions": [t.completion_ids.tolist() for t in batch.trajectories],
                "rewards": outputs["rewards"].tolist(),
                "loss": float(outputs["loss"]),
            }
            with open(run_dir / "steps.jsonl", "a") as f:
                f.write(json.dumps(step) + "\n")

    class Kill(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            if kill_after is not None and trainer.global_step >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    build = rl.build

    def build_with_probes(cfg: Any, out: Any, *, meta: bool = False) -> Any:
        parts = build(cfg, out, meta=meta)
        parts.callbacks += [Record(), Kill()]  # Lightning runs checkpointing callbacks after these
        return parts

    rl.build = build_with_probes
    # fmt: off
    args = [
        "--run_dir", str(run_dir / "run"), "--progress", "false", "--seed", "3",
        *SMALL_WARMUP_ARGS,
        "--grpo.steps", "4", "--grpo.prompts_per_step", "2", "--grpo.group_size", "4", "--grpo.minibatches", "2",
        "--grpo.kl_coef", "0.02", "--held_out.size", "4", "--trainer.checkpoint_every_n_steps", "2",
    ]
    # fmt: on
    if "--resume" in sys.argv:
        args += ["--trainer.resume", "last"]
    rl.main(args)
    module_weights = (run_dir / "run" / "policy").glob("*.safetensors")
    from safetensors.torch import load_file

    checksum = {k: float(v.double().sum()) for f in sorted(module_weights) for k, v in load_file(f).items()}
    (run_dir / "final.json").write_text(json.dumps(checksum))


if __name__ == "__main__":
    main()
