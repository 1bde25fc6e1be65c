"""Training-step cost: SFT throughput of ``SFTModule`` under a Lightning Trainer against a plain PyTorch loop and TRL's
``SFTTrainer``, and where the time of one GRPO step goes.

SFT: every contender trains the same tiny Qwen2 (4 layers, same seed, so the same initial weights) on the same
code-integrated calculator traces (built with ``trajectory_from_text``), in the same batches and order, for the same
number of steps, with ``torch.optim.AdamW`` at the same learning rate, no weight decay, no gradient clipping, no
learning-rate schedule, float32. The loss is the token mean of the cross-entropy over the sampled completion tokens
(interpreter output and the prompt are masked out), and throughput counts exactly those tokens. Each contender warms
up a few steps before the timed window; contenders are interleaved across repeats (the order rotates) and the median
is reported. The plain loop is the baseline.

GRPO: one step of ``GRPOModule`` (with ``kl_coef > 0``, so a reference model) driven by a Lightning Trainer with the
real ``RolloutCallback`` (``RolloutEngine`` + ``HFBackend``) and ``SandboxCallback`` (``LocalSandbox``), on a tiny
policy briefly warm-started on code traces (cached on disk, so it writes code calls), split into generation, tool
execution, old log-probs, reference log-probs and the update.

Prints a markdown section; the full run also writes it into docs/benchmarks.md (replacing its "## Training step"
section).

    python benchmarks/train.py            # full run (~3 minutes on 2 cores), writes docs/benchmarks.md
    python benchmarks/train.py --quick    # smoke run, prints only
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import logging
import platform
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from _docs import write_section  # benchmarks/ is on sys.path when run as a script

from lightning_cort.data import ListDataset, trajectory_from_text
from lightning_cort.formats import CoRTFormat
from lightning_cort.models.tiny import tiny_qwen2, tiny_tokenizer
from lightning_cort.modules.sft import SFTModule, SFTSettings
from lightning_cort.tasks.calculator import CalculatorTask, build_prompt, code_trace, reference_output
from lightning_cort.trajectory import Trajectory, collate_trajectories

NUM_LAYERS = 4
INIT_SEED = 0
LR = 1e-3


# -- SFT contenders ------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One timed run of one contender.

    Attributes:
        seconds: Wall time of the timed window (the steps after the warm-up).
        tokens: Trained (loss-mask) tokens per step, every step in order.
        nonpad: Non-pad tokens (prompt and completion) per step.
        padded: Padded positions (``batch × width``) per step.
        model: The trained model (for the same-training check).
    """

    seconds: float
    tokens: list[int]
    nonpad: list[int]
    padded: list[int]
    model: torch.nn.Module


@dataclass
class SFTSetup:
    tokenizer: Any
    examples: list[Trajectory]
    batch_size: int
    warmup: int
    steps: int
    stamps: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.warmup + self.steps

    def model(self) -> torch.nn.Module:
        return tiny_qwen2(self.tokenizer, num_layers=NUM_LAYERS, seed=INIT_SEED).train()

    def loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            ListDataset(self.examples),
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=partial(collate_trajectories, pad_token_id=self.tokenizer.pad_token_id),
        )

    def window(self, stamps: dict[int, float]) -> float:
        """Seconds from the end of the last warm-up step to the end of the last step."""
        return stamps[self.total] - stamps[self.warmup]


def run_plain(s: SFTSetup) -> Run:
    """The baseline: the forward with the same inputs, masked cross-entropy, backward, AdamW step."""
    model = s.model()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    stamps, tokens, nonpad, padded = {}, [], [], []
    for i, batch in enumerate(s.loader()):
        t = batch.completion_ids.shape[1]
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            logits_to_keep=t + 1,
            use_cache=False,
        )
        logits = out.logits[:, :-1]  # [B, T, V]
        nll = F.cross_entropy(logits.flatten(0, 1).float(), batch.completion_ids.flatten(), reduction="none")
        mask = batch.loss_mask.to(nll.dtype)
        loss = (nll.view_as(mask) * mask).sum() / mask.sum().clamp(min=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tokens.append(int(batch.loss_mask.sum()))
        nonpad.append(int(batch.attention_mask.sum()))
        padded.append(batch.input_ids.numel())
        stamps[i + 1] = time.perf_counter()
    return Run(s.window(stamps), tokens, nonpad, padded, model)


class _LightningStamps(L.Callback):
    def __init__(self) -> None:
        self.stamps: dict[int, float] = {}
        self.tokens: list[int] = []
        self.nonpad: list[int] = []
        self.padded: list[int] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.stamps[batch_idx + 1] = time.perf_counter()
        self.tokens.append(int(batch.loss_mask.sum()))
        self.nonpad.append(int(batch.attention_mask.sum()))
        self.padded.append(batch.input_ids.numel())


def run_lightning(s: SFTSetup) -> Run:
    """``SFTModule`` under ``lightning.Trainer`` with its defaults, minus logger, checkpointing and progress bar."""
    model = s.model()
    stamps = _LightningStamps()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=s.total,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[stamps],
    )
    trainer.fit(SFTModule(model, s.tokenizer, SFTSettings(lr=LR, warmup_ratio=0.0, lr_schedule="constant")), s.loader())
    return Run(s.window(stamps.stamps), stamps.tokens, stamps.nonpad, stamps.padded, model)


def trl_dataset(examples: list[Trajectory]) -> Any:
    """Pre-tokenized rows: the same ids, with ``completion_mask`` = the trained tokens (prompt and tool output 0)."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "input_ids": [*e.prompt_ids.tolist(), *e.completion_ids.tolist()],
                "completion_mask": [0] * e.prompt_ids.numel() + e.loss_mask.tolist(),
            }
            for e in examples
        ]
    )


def run_trl(s: SFTSetup, dataset: Any) -> Run:
    """TRL's ``SFTTrainer`` on the same rows in the same order. TRL's defaults that would change the math or the work
    are aligned with the others: float32 (not bf16 autocast), no gradient checkpointing, ``torch.optim.AdamW`` (not
    the fused kernel), constant learning rate, no gradient clipping."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    stamps: dict[int, float] = {}

    class Stamps(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stamps[state.global_step] = time.perf_counter()

    tokens, nonpad, padded = [], [], []

    def counting(collate: Callable[[list], dict]) -> Callable[[list], dict]:
        def wrapped(rows: list) -> dict:
            out = collate(rows)
            tokens.append(int((out["labels"] != -100).sum()))
            nonpad.append(int(out["attention_mask"].sum()))
            padded.append(out["input_ids"].numel())
            return out

        return wrapped

    model = s.model()
    with tempfile.TemporaryDirectory() as out_dir:
        config = SFTConfig(
            output_dir=out_dir,
            per_device_train_batch_size=s.batch_size,
            max_steps=s.total,
            completion_only_loss=True,  # train on ``completion_mask`` (needed for pre-tokenized rows)
            learning_rate=LR,
            weight_decay=0.0,
            lr_scheduler_type="constant",
            optim="adamw_torch",
            max_grad_norm=0.0,
            bf16=False,
            gradient_checkpointing=False,
            train_sampling_strategy="sequential",
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            dataloader_num_workers=0,
            seed=0,
        )
        trainer = SFTTrainer(
            model=model, args=config, train_dataset=dataset, processing_class=s.tokenizer, callbacks=[Stamps()]
        )
        trainer.remove_callback(PrinterCallback)  # it prints the end-of-training metrics into the report
        trainer.data_collator = counting(trainer.data_collator)
        trainer.train()
    # Accelerate's loader collates one batch ahead; the counts of the trained batches are the first ``total``.
    return Run(s.window(stamps), tokens[: s.total], nonpad[: s.total], padded[: s.total], model)


@torch.no_grad()
def first_batch_loss(model: torch.nn.Module, s: SFTSetup) -> float:
    """The training loss of batch 0 after training (the same for every contender if they trained the same)."""
    batch = next(iter(s.loader()))
    model.eval()
    out = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=False
    )
    t = batch.completion_ids.shape[1]
    logits = out.logits[:, -t - 1 : -1]
    nll = F.cross_entropy(logits.flatten(0, 1).float(), batch.completion_ids.flatten(), reduction="none")
    mask = batch.loss_mask.flatten().float()
    return float((nll * mask).sum() / mask.sum())


def max_param_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return max(float((pa[k].detach() - pb[k].detach()).abs().max()) for k in pa)


def bench_sft(s: SFTSetup, repeats: int, with_trl: bool) -> dict[str, Any]:
    dataset = trl_dataset(s.examples) if with_trl else None
    contenders: dict[str, Callable[[], Run]] = {
        "plain": lambda: run_plain(s),
        "lightning": lambda: run_lightning(s),
    }
    if with_trl:
        contenders["trl"] = lambda: run_trl(s, dataset)
    names = list(contenders)
    runs: dict[str, list[Run]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate, so no contender always goes first
        for name in order:
            runs[name].append(contenders[name]())
    return {"names": names, "runs": runs}


# -- GRPO step ------------------------------------------------------------------------------------------------------
class _Phases:
    """Accumulates wall time per phase for the current step.

    Generation and tool calls overlap in the rollout engine (executions run in threads while the backend
    generates), so their time is accumulated as wall-clock intervals: ``tool`` is the time when an execution was in
    flight and no generation ran (the rollout waited on tools only), ``tool_any`` the time when any execution was in
    flight.
    """

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.steps: list[dict[str, float]] = []
        self._lock = threading.Lock()
        self._active = {"generation": 0, "tool": 0}
        self._last = time.perf_counter()

    def add(self, phase: str, seconds: float) -> None:
        self.current[phase] = self.current.get(phase, 0.0) + seconds

    def _advance(self) -> None:
        now = time.perf_counter()
        dt, self._last = now - self._last, now
        if self._active["tool"]:
            self.add("tool_any", dt)
            if not self._active["generation"]:
                self.add("tool", dt)

    def timed(self, phase: str, fn: Callable) -> Callable:
        overlapping = phase in self._active

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            if overlapping:
                with self._lock:
                    self._advance()
                    self._active[phase] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                if overlapping:
                    with self._lock:
                        self._advance()
                        self._active[phase] -= 1
                if phase != "tool":
                    self.add(phase, time.perf_counter() - t)

        return wrapped


class _StepStart(L.Callback):
    """First in the callback list: the step starts before the rollout callback samples."""

    def __init__(self, phases: _Phases) -> None:
        self.phases = phases
        self.t0 = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.phases.current = {}
        self.t0 = time.perf_counter()


class _PhaseTimer(L.Callback):
    """After the rollout callback: wraps the engine's backend and sandbox and the module's log-prob and update methods
    with timers, and closes each step's record."""

    def __init__(self, phases: _Phases, start: _StepStart, rollout_cb: Any) -> None:
        self.phases = phases
        self.start = start
        self.rollout_cb = rollout_cb
        self.t1 = 0.0
        self.stats: list[dict[str, float]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        p = self.phases
        engine = self.rollout_cb.engine
        engine.backend.generate = p.timed("generation", engine.backend.generate)
        if hasattr(engine.backend, "open_stream"):  # the continuous schedule generates through decode-stream steps
            open_stream = engine.backend.open_stream

            def timed_open_stream(*args: Any, **kwargs: Any) -> Any:
                stream = open_stream(*args, **kwargs)
                stream.step = p.timed("generation", stream.step)
                return stream

            engine.backend.open_stream = timed_open_stream
        for name in ("run_many", "open_session", "close_session"):
            setattr(engine.sandbox, name, p.timed("tool", getattr(engine.sandbox, name)))
        in_reference = False
        logprobs = pl_module.completion_logprobs
        reference = pl_module.reference_logprobs

        def completion_logprobs(*args: Any, **kwargs: Any) -> Any:
            if in_reference or torch.is_grad_enabled():  # counted in "reference" / "update"
                return logprobs(*args, **kwargs)
            return p.timed("old", logprobs)(*args, **kwargs)

        def reference_logprobs(*args: Any, **kwargs: Any) -> Any:
            nonlocal in_reference
            in_reference = True
            try:
                return p.timed("reference", reference)(*args, **kwargs)
            finally:
                in_reference = False

        pl_module.completion_logprobs = completion_logprobs
        pl_module.reference_logprobs = reference_logprobs
        import lightning_cort.modules.grpo as grpo

        grpo.grpo_update = p.timed("update", grpo.grpo_update)  # what grpo_step calls for the optimizer steps

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.t1 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        t2 = time.perf_counter()
        cur = self.phases.current
        cur["rollout"] = self.t1 - self.start.t0
        cur["total"] = t2 - self.start.t0
        self.phases.steps.append(dict(cur))
        trajs = batch.trajectories
        self.stats.append(
            {
                "trajectories": len(trajs),
                "calls": sum(len(t.tool_calls) for t in trajs),
                "sampled": sum(t.num_model_tokens for t in trajs),
                "tool_tokens": sum(t.num_tool_tokens for t in trajs),
                "reward": float(outputs["rewards"].mean()),
            }
        )


def bench_grpo(tokenizer: Any, prompts: int, group: int, steps: int, warmup_steps: int) -> dict[str, Any]:
    from lightning_cort.callbacks import RolloutCallback, SandboxCallback
    from lightning_cort.models.tiny import TinyConfig
    from lightning_cort.modules.grpo import GRPOConfig, GRPOModule
    from lightning_cort.recipes._steps import task_rows, warm_start
    from lightning_cort.recipes.config import WarmupConfig
    from lightning_cort.rewards import cort_reward
    from lightning_cort.rollout import RolloutConfig, SamplingConfig
    from lightning_cort.rollout.sampler import collate_prompts
    from lightning_cort.sandbox import LocalSandbox

    fmt = CoRTFormat()
    task = CalculatorTask(digits=3, seed=0)
    # The tests' small warm start (cached): a policy that writes code calls, so the sandbox really runs.
    warmup = WarmupConfig(examples=1200, epochs=3, lr=3e-3, batch_size=32)
    t = time.perf_counter()
    model, cached = warm_start(tokenizer, TinyConfig(num_layers=NUM_LAYERS), warmup, task, fmt, 0, progress=False)
    warm_s = time.perf_counter() - t
    total = warmup_steps + steps
    rows = task_rows(task, "train", total * prompts, start=warmup.examples)
    rollout_cfg = RolloutConfig(
        max_calls=2,
        max_total_tokens=160,
        max_tokens_per_call=128,
        timeout=5.0,
        sampling=SamplingConfig(temperature=1.0),
    )
    minibatches = 2
    config = GRPOConfig(group_size=group, lr=2e-5, clip_high=0.28, kl_coef=0.04, minibatches=minibatches)
    module = GRPOModule(model, tokenizer, config, reward_fn=cort_reward)
    phases = _Phases()
    start = _StepStart(phases)
    sandbox = SandboxCallback(partial(LocalSandbox, timeout=5.0))
    rollout_cb = RolloutCallback(fmt, rollout_cfg, sandbox=sandbox)
    timer = _PhaseTimer(phases, start, rollout_cb)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=total * minibatches,  # manual optimization: the trainer counts optimizer steps
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[start, sandbox, rollout_cb, timer],
    )
    loader = torch.utils.data.DataLoader(
        ListDataset(rows), batch_size=prompts, shuffle=False, collate_fn=collate_prompts
    )
    torch.manual_seed(0)
    trainer.fit(module, loader)
    return {
        "steps": phases.steps[warmup_steps:],
        "stats": timer.stats[warmup_steps:],
        "warm_cached": cached,
        "warm_s": warm_s,
        "prompts": prompts,
        "group": group,
        "minibatches": minibatches,
        "config": rollout_cfg,
    }


# -- report ---------------------------------------------------------------------------------------------------------
def build_examples(tokenizer: Any, n: int) -> list[Trajectory]:
    fmt = CoRTFormat()
    problems = CalculatorTask(digits=3, seed=0).problems("train", n)
    return [
        trajectory_from_text(
            tokenizer, build_prompt(p.question), code_trace(p, reference_output(p), fmt), fmt, row=p.to_row()
        )
        for p in problems
    ]


def versions() -> str:
    import importlib.metadata as md

    names = ["torch", "lightning", "transformers", "trl", "datasets", "accelerate"]
    out = []
    for n in names:
        try:
            out.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            out.append(f"{n} (not installed)")
    return ", ".join(out)


def sft_report(s: SFTSetup, res: dict[str, Any]) -> list[str]:
    names, runs = res["names"], res["runs"]
    label = {
        "plain": "plain PyTorch loop (baseline)",
        "lightning": "`SFTModule` + `lightning.Trainer`",
        "trl": "TRL `SFTTrainer`",
    }
    w = s.warmup
    # Every run of every contender must have trained the very same tokens in the same steps.
    ref = runs["plain"][0]
    same = all(r.tokens == ref.tokens and r.nonpad == ref.nonpad for n in names for r in runs[n])
    rate = {n: [sum(r.tokens[w:]) / r.seconds for r in runs[n]] for n in names}
    step_ms = {n: [1e3 * r.seconds / s.steps for r in runs[n]] for n in names}
    # Paired ratios: each repeat ran every contender back to back.
    ratio = {n: [a / b for a, b in zip(rate[n], rate["plain"])] for n in names}
    med = {n: statistics.median(v) for n, v in rate.items()}
    med_ratio = {n: statistics.median(v) for n, v in ratio.items()}
    tok_step = sum(ref.tokens[w:]) / s.steps
    nonpad_step = sum(ref.nonpad[w:]) / s.steps
    pad_step = {n: sum(runs[n][0].padded[w:]) / s.steps for n in names}

    lines = [
        "| contender | trained tokens/s (median) | min – max | ms/step (median) "
        "| vs plain loop (median of paired ratios) |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        lines.append(
            f"| {label[n]} | {med[n]:,.0f} | {min(rate[n]):,.0f} – {max(rate[n]):,.0f} | "
            f"{statistics.median(step_ms[n]):.1f} | {med_ratio[n]:.3f}x |"
        )
    lines.append("")
    lines.append(
        f"- tokens per timed step: {tok_step:.1f} trained (completion tokens in the loss; interpreter output and "
        f"prompt excluded) of {nonpad_step:.1f} non-pad tokens; identical in every step of every run of every "
        f"contender: **{'yes' if same else 'NO'}**"
    )
    pads = ", ".join(f"{label[n]} {pad_step[n]:.0f}" for n in names)
    lines.append(
        f"- padded positions per step: {pads} (`collate_trajectories` left-pads prompts and right-pads completions; "
        "TRL right-pads whole rows)"
    )
    last = {n: runs[n][-1].model for n in names}
    losses = ", ".join(f"{label[n]} {first_batch_loss(last[n], s):.4f}" for n in names)
    diffs = ", ".join(f"{label[n]} {max_param_diff(last[n], last['plain']):.1e}" for n in names if n != "plain")
    lines.append(f"- same training: loss on batch 0 after the {s.total} steps: {losses}")
    lines.append(f"- largest parameter difference from the plain loop after training: {diffs}")
    gap = statistics.median(step_ms["lightning"]) - statistics.median(step_ms["plain"])
    lines.append(
        f"- `SFTModule` + Trainer costs {gap:+.1f} ms per step against the plain loop "
        f"({100 * gap / statistics.median(step_ms['plain']):+.1f}% of a {statistics.median(step_ms['plain']):.0f} ms "
        "step)"
    )
    lines.append("")
    lines.append("| target | measured | |")
    lines.append("|---|---|---|")
    lm = med_ratio["lightning"]
    lines.append(f"| `SFTModule` ≥ 0.95x the plain loop | {lm:.3f}x | {'met' if lm >= 0.95 else '**not met**'} |")
    if "trl" in names:
        vs_trl = statistics.median([a / b for a, b in zip(rate["lightning"], rate["trl"])])
        verdict = "met" if vs_trl >= 1.0 else "**not met**"
        lines.append(f"| `SFTModule` ≥ 1.0x TRL `SFTTrainer` | {vs_trl:.3f}x | {verdict} |")
    return lines


def grpo_report(res: dict[str, Any]) -> list[str]:
    steps, stats = res["steps"], res["stats"]
    n = len(steps)

    def mean(key: str) -> float:
        return sum(st.get(key, 0.0) for st in steps) / n

    total = mean("total")
    gen, tool = mean("generation"), mean("tool")
    rows = [
        ("generation (`HFDecodeStream` steps, the default continuous schedule)", gen),
        ("tool execution not overlapped by generation (`LocalSandbox`: `run_many`, sessions)", tool),
        ("rest of the rollout (engine bookkeeping, tokenizing outputs, rollout stats)", mean("rollout") - gen - tool),
        ("old log-probs (no grad)", mean("old")),
        ("reference log-probs (no grad, `kl_coef=0.04`)", mean("reference")),
        (f"update ({res['minibatches']} minibatches: forward, backward, clip, AdamW)", mean("update")),
    ]
    rows.append(("rest of the step (scoring, collation, logging, Lightning)", total - sum(v for _, v in rows)))
    cfg = res["config"]
    st = {k: sum(s[k] for s in stats) / n for k in stats[0]}
    lines = [
        f"One step: {res['prompts']} prompts × {res['group']} samples = {int(st['trajectories'])} trajectories, "
        f"at most {cfg.max_calls} executions and {cfg.max_total_tokens} completion tokens each; per step on average "
        f"{st['sampled']:.0f} sampled tokens, {st['calls']:.0f} executions, {st['tool_tokens']:.0f} interpreter-output "
        f"tokens, mean reward {st['reward']:.2f}; generation ran at {st['sampled'] / gen:,.0f} sampled tokens/s. "
        f"Mean of {n} step{'s' if n > 1 else ''} after one warm-up step; the policy is the tests' small warm start "
        f"({'from the cache' if res['warm_cached'] else 'trained in this run'}).",
        "",
        "| phase | s/step | share |",
        "|---|---|---|",
    ]
    for name, v in rows:
        lines.append(f"| {name} | {v:.3f} | {100 * v / total:.1f}% |")
    lines.append(f"| **total** | **{total:.3f}** | 100% |")
    tool_any = mean("tool_any")
    lines += [
        "",
        f"- executions were in flight {tool_any:.3f} s per step, {tool_any - tool:.3f} s of it while the backend "
        "generated for other trajectories (the rollout engine overlaps the two)",
    ]
    return lines


def quiet() -> None:
    """Keep the report readable: Lightning's info lines and known harmless warnings go away."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers", "trl", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # GRPO's frozen reference model
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few steps and repeats; prints only")
    ap.add_argument("--no-docs", action="store_true", help="print only, do not update docs/benchmarks.md")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared 2-core machine, 2 threads stall whenever another process "
        "takes a core, which made HF generation up to 12x slower and step times erratic)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    quiet()
    if args.quick:
        repeats, warmup, steps, batch = 2, 2, 5, 16
        prompts, group, grpo_steps = 4, 4, 1
    else:
        repeats, warmup, steps, batch = 6, 4, 30, 16
        prompts, group, grpo_steps = 8, 8, 3

    import importlib.util

    with_trl = importlib.util.find_spec("trl") is not None
    started = time.perf_counter()
    tokenizer = tiny_tokenizer()
    s = SFTSetup(tokenizer, build_examples(tokenizer, (warmup + steps) * batch), batch, warmup, steps)
    sft = bench_sft(s, repeats, with_trl)
    grpo = bench_grpo(tokenizer, prompts, group, grpo_steps, warmup_steps=1)
    elapsed = time.perf_counter() - started

    n_params = sum(p.numel() for p in s.model().parameters())
    out = [
        f"## Training step ({os.cpu_count()} cores, Python {platform.python_version()})",
        "",
        f"Command: `python benchmarks/train.py{' --quick' if args.quick else ''}` ({elapsed:.0f} s; {versions()}; "
        f"torch threads {torch.get_num_threads()})",
        "",
        "### SFT throughput",
        "",
        f"Tiny Qwen2 ({NUM_LAYERS} layers, hidden 128, {n_params / 1e6:.2f}M parameters, vocabulary {len(tokenizer)}, "
        f"init seed {INIT_SEED}), float32; {batch} code-integrated calculator traces per step, the same batches in the "
        f"same order for every contender; AdamW lr {LR:g}, no weight decay, no clipping, constant lr. Each run: "
        f"{warmup} warm-up steps, then {steps} timed steps; {repeats} repeats per contender, interleaved (order "
        "rotated each repeat). Throughput counts the trained tokens: sampled completion tokens in the loss.",
        "",
        *sft_report(s, sft),
        "",
        "### GRPO step",
        "",
        *grpo_report(grpo),
    ]
    if not with_trl:
        out.insert(5, "TRL is not installed: its row is missing (`pip install trl`).\n")
    section = "\n".join(out) + "\n"
    print(section)
    if not args.quick and not args.no_docs:
        write_section("Training step", section)
        print("(written to docs/benchmarks.md)")


if __name__ == "__main__":
    main()
