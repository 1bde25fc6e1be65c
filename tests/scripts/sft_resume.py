"""SFT that can be killed and resumed: ``python sft_resume.py <run dir> <cache dir> [--kill-after N] [--resume]``.

Every trained batch's example ids are appended to ``<run dir>/batches.jsonl`` (flushed, so a SIGKILL loses
nothing written); a checkpoint is saved every 2 optimizer steps (``last.ckpt``); ``--kill-after N`` SIGKILLs the
process right after the N-th trained batch; the final weights' checksum goes to ``<run dir>/final.json``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch


def main() -> None:
    run_dir, cache = Path(sys.argv[1]), sys.argv[2]
    kill_after = int(sys.argv[sys.argv.index("--kill-after") + 1]) if "--kill-after" in sys.argv else None
    resume = "--resume" in sys.argv
    os.environ["LIGHTNING_CORT_CACHE"] = cache
    from lightning_cort.data import ResumableDataLoader, trajectory_from_text
    from lightning_cort.formats import CoRTFormat
    from lightning_cort.models.tiny import tiny_qwen2, tiny_tokenizer
    from lightning_cort.modules import SFTModule, SFTSettings
    from lightning_cort.trajectory import collate_trajectories

    L.seed_everything(0, verbose=False)
    tokenizer = tiny_tokenizer()
    fmt = CoRTFormat()
    examples = []
    for i in range(14):
        a, b = 11 + i, 7 + 3 * i
        text = f"```python\nprint({a} * {b})\n```\n```output\n{a * b}\n```\n</think>\n\n\\boxed{{{a * b}}}"
        examples.append(trajectory_from_text(tokenizer, f"What is {a} * {b}?", text, fmt, row={"id": i}))

    def collate(batch: list[Any]) -> Any:
        return collate_trajectories(batch, tokenizer.pad_token_id), [t.row["id"] for t in batch]

    class Module(SFTModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            data, ids = batch
            with open(run_dir / "batches.jsonl", "a") as f:
                f.write(json.dumps({"epoch": self.current_epoch, "step": self.global_step, "ids": ids}) + "\n")
            return super().training_step(data, batch_idx)

    class Kill(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            if kill_after is not None and trainer.global_step >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    constant = SFTSettings(lr=1e-3, warmup_ratio=0.0, lr_schedule="constant")
    module = Module(tiny_qwen2(tokenizer, num_layers=1, seed=0), tokenizer, constant)
    loader = ResumableDataLoader(examples, batch_size=3, shuffle=True, seed=1, collate_fn=collate)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=run_dir / "ckpt", every_n_train_steps=2, save_last=True)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ckpt, Kill()],
    )
    trainer.fit(module, loader, ckpt_path=str(run_dir / "ckpt" / "last.ckpt") if resume else None)
    checksum = {k: float(v.double().sum()) for k, v in module.model.state_dict().items()}
    (run_dir / "final.json").write_text(json.dumps(checksum))


if __name__ == "__main__":
    main()
