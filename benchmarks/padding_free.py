"""Padding-free training against padded batches: trained tokens per second of the same SFT steps.

Both contenders train the same tiny Qwen2 (same seed) on the same text-only calculator traces (the arithmetic worked
out in words: lengths vary by several times, as real reasoning traces do), in the same batches and order, through
``SFTModule.completion_logprobs`` (the log-probs every module trains on), with the same masked token-mean loss and
``torch.optim.AdamW``; the only difference is ``padding_free`` (``lightning_cort.packing``). Each run warms up a few
steps before its timed window; contenders alternate across repeats and the median is reported. The losses of the
two are compared step by step (they must be equal: the same computation without the padding).

    python benchmarks/padding_free.py           # full run, writes its section of docs/benchmarks.md
    python benchmarks/padding_free.py --quick   # smoke run, prints only
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import platform
import statistics
import time
from functools import partial

import torch
from _docs import write_section  # benchmarks/ is on sys.path when run as a script

from lightning_cort.data import ListDataset
from lightning_cort.formats import CoRTFormat
from lightning_cort.models.tiny import tiny_qwen2, tiny_tokenizer
from lightning_cort.modules.sft import SFTModule
from lightning_cort.packing import padding_share
from lightning_cort.recipes._steps import task_traces
from lightning_cort.tasks.calculator import CalculatorTask
from lightning_cort.trajectory import collate_trajectories


def run(tokenizer, examples, batch_size: int, warmup: int, steps: int, packed: bool) -> dict:
    torch.manual_seed(0)
    module = SFTModule(tiny_qwen2(tokenizer, num_layers=4, seed=0).train(), tokenizer)
    module.padding_free = packed
    opt = torch.optim.AdamW(module.model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        ListDataset(examples),
        batch_size=batch_size,
        collate_fn=partial(collate_trajectories, pad_token_id=tokenizer.pad_token_id),
    )
    losses, tokens, start = [], 0, None
    for i, batch in enumerate(loader):
        if i == warmup:
            start = time.perf_counter()
        if i == warmup + steps:
            break
        logp = module.completion_logprobs(batch)  # [B, T]
        mask = batch.loss_mask.to(logp.dtype)
        loss = -(logp * mask).sum() / mask.sum().clamp(min=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if i >= warmup:
            tokens += int(batch.loss_mask.sum())
    assert start is not None
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens_per_s": tokens / seconds, "losses": losses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats, warmup, steps, batch_size = (1, 1, 3, 8) if args.quick else (3, 3, 20, 16)
    tokenizer = tiny_tokenizer()
    n = (warmup + steps) * batch_size
    examples = task_traces(CalculatorTask(seed=0), tokenizer, CoRTFormat(), n, "text")
    lengths = [e.prompt_ids.numel() + e.completion_ids.numel() for e in examples]
    shares = [
        padding_share(collate_trajectories(examples[i : i + batch_size], tokenizer.pad_token_id))
        for i in range(0, n, batch_size)
    ]
    runs: dict[bool, list[dict]] = {False: [], True: []}
    started = time.perf_counter()
    for r in range(repeats):
        for packed in (False, True) if r % 2 == 0 else (True, False):
            runs[packed].append(run(tokenizer, examples, batch_size, warmup, steps, packed))
    total = time.perf_counter() - started
    padded = statistics.median(x["tokens_per_s"] for x in runs[False])
    packed = statistics.median(x["tokens_per_s"] for x in runs[True])
    worst = max(abs(a - b) / abs(a) for x, y in zip(runs[False], runs[True]) for a, b in zip(x["losses"], y["losses"]))
    n_steps = len(runs[True][0]["losses"])
    pad0, pad1 = statistics.mean(s[0] for s in shares), statistics.mean(s[1] for s in shares)
    versions = f"torch {torch.__version__}, Python {platform.python_version()}; torch threads 1"
    section = f"""## Padding-free training

Command: `python benchmarks/padding_free.py` ({total:.0f} s; {versions})

Tiny Qwen2 (4 layers), SFT on {n} text-only calculator traces ({min(lengths)}–{max(lengths)} tokens, mean \
{statistics.mean(lengths):.0f}), batches of {batch_size} in the same order, {warmup} warm-up and {steps} timed steps, \
{repeats} repeats per contender alternating; medians. Both compute the loss through `SFTModule.completion_logprobs`;
the only difference is `padding_free`.

| batches | padding share of computed positions | trained tokens/s | vs padded |
|---|---|---|---|
| padded | {pad0:.0%} | {padded:,.0f} | 1.00x |
| packed (`model.padding_free true`) | {pad1:.0%} | {packed:,.0f} | **{packed / padded:.2f}x** |

- Losses step by step: largest relative difference {worst:.1e} over {n_steps} steps × {repeats} repeats (the
  same computation without the padding).
"""
    print(section)
    if not args.quick:
        write_section("Padding-free training", section)
        print("(written to docs/benchmarks.md)")


if __name__ == "__main__":
    main()
