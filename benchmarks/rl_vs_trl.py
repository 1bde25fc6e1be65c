"""The same GRPO step in lightning_cort and in TRL's ``GRPOTrainer``, in one run: once without tools, once with a
Python tool.

Both contenders train the real Qwen2.5-Coder-0.5B-Instruct (bfloat16 weights, the same LoRA: r 16 on every linear
layer, same seed, so the same initial adapter) on the same calculator prompts in the same order, with the same group
size, prompts per step, sampling (temperature 1, no top-p/top-k), completion budget (sampled and tool-output tokens
together, as both count it), loss (``dapo`` aggregation, clip 0.2/0.28, no KL, group-scaled advantages), optimizer
(``torch.optim.AdamW``, constant learning rate, gradient clipping at 1) and one optimizer step per generation batch.
TRL's defaults that would change the work are aligned: no gradient checkpointing, no bf16 autocast (the weights
already are bfloat16), no dataset shuffling.

With the tool, both use the same chat-template tool call (Hermes ``<tool_call>`` blocks, the prompt's tool list from
the same schema) and the same sandbox behind it (:class:`~lightning_cort.sandbox.LocalSandbox`, output cut to 800
characters): lightning_cort through :class:`~lightning_cort.formats.HermesFormat` and its rollout engine, TRL through
its ``tools=`` loop with a function that runs the code in that sandbox. The instruct model does not write
``<tool_call>`` blocks reliably by itself (0 of 8 samples in a probe: it writes JSON in markdown fences), so the run
first teaches it the call with a short LoRA SFT on tool-call traces (merged and cached); both contenders start from
those weights, in both arms.

Timed: whole steps (generation, tool calls, scoring, the update), after warm-up steps, in runs that alternate between
the contenders (each run loads the weights afresh); the ratio is of medians. The work is counted from what each
contender actually sampled: completions, sampled tokens, tool-output tokens, calls, and the reward.

    python benchmarks/rl_vs_trl.py               # both arms, writes docs/benchmarks.md (~25 minutes on 2 cores)
    python benchmarks/rl_vs_trl.py --quick       # smoke run, prints only
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import hashlib
import json
import logging
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from _docs import write_section  # benchmarks/ is on sys.path when run as a script

from lightning_cort.answers import check_answer
from lightning_cort.formats import CoRTFormat, HermesFormat, middle_truncate, result_text
from lightning_cort.formats.hermes import PYTHON_TOOL_CODE_DESCRIPTION, PYTHON_TOOL_DESCRIPTION
from lightning_cort.tasks import CalculatorTask, build_prompt
from lightning_cort.tasks.calculator import reference_output

MODEL = "packaged:qwen2.5-coder-0.5b-instruct"
TOOL_SUFFIX = "Use the python tool to compute it, then give the final answer within \\boxed{}."
TEXT_SUFFIX = "Give the final answer within \\boxed{}."
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}
SEED = 0
KINDS = ("multiply", "modpow", "gcd")


@dataclass(frozen=True)
class Arm:
    """One comparison: the same settings for both contenders."""

    name: str
    tools: bool
    prompts: int = 2
    group: int = 4
    max_tokens: int = 160
    max_calls: int = 2
    lr: float = 1e-5

    @property
    def suffix(self) -> str:
        return TOOL_SUFFIX if self.tools else TEXT_SUFFIX


@dataclass
class Run:
    """One contender's run: per timed step, its wall time and the work it did."""

    seconds: list[float] = field(default_factory=list)
    rollout: list[float] = field(default_factory=list)  # of which sampling and tool calls
    completions: list[int] = field(default_factory=list)
    sampled: list[int] = field(default_factory=list)  # sampled (= trained) completion tokens
    tool: list[int] = field(default_factory=list)  # interpreter-output tokens inside completions
    calls: list[int] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)


def rows(arm: Arm, n: int) -> list[dict[str, Any]]:
    task = CalculatorTask(digits=4, kinds=KINDS, seed=SEED)
    return [{"prompt": build_prompt(p.question, arm.suffix), "answer": p.answer} for p in task.problems("train", n)]


# -- the tool-call adaptation (both contenders start from it) ----------------------------------------------------------
def adapted_model(base: str, examples: int, epochs: int) -> Path:
    """The instruct model after a short LoRA SFT on Hermes tool-call traces of calculator problems (merged, cached)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightning_cort.data import trajectory_from_text
    from lightning_cort.trajectory import collate_trajectories

    recipe = [base, examples, epochs, TOOL_SUFFIX, LORA, "rows", 1e-2]
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]
    out = (
        Path(os.environ.get("LIGHTNING_CORT_CACHE", Path.home() / ".cache" / "lightning_cort")) / f"bench-hermes-{key}"
    )
    if (out / "config.json").exists():
        return out
    fmt = HermesFormat()
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    torch.manual_seed(SEED)
    # The tool-call tokens' own rows too, in the embedding and in the (untied) output layer: the model never wrote
    # them (p(<tool_call>) ~ 4e-10 where the call belongs), and an adapter alone cannot make an untrained output row
    # win (it flattens the distribution instead).
    special = tok.convert_tokens_to_ids(["<tool_call>", "</tool_call>"])
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", trainable_token_indices=special, **LORA))
    head = model.get_output_embeddings()
    head_rows = torch.nn.Parameter(torch.zeros(len(special), head.weight.shape[1]))
    rows_at = torch.tensor(special)

    def add_rows(module: Any, inputs: tuple[torch.Tensor, ...], logits: torch.Tensor) -> torch.Tensor:
        extra = (inputs[0].float() @ head_rows.T).to(logits.dtype)
        return logits.index_add(-1, rows_at, extra)

    hook = head.register_forward_hook(add_rows)
    end_of_turn = tok.convert_tokens_to_ids(fmt.turn_end)
    task = CalculatorTask(digits=4, kinds=KINDS, seed=SEED + 1)  # other problems than the RL rows
    traces = []
    for p in task.problems("train", examples):
        output = reference_output(p)
        completion = fmt.render_call(p.code) + fmt.render_output(output) + f"The answer is \\boxed{{{p.answer}}}."
        trace = trajectory_from_text(tok, build_prompt(p.question, TOOL_SUFFIX), completion, fmt)
        for seg in trace.segments:  # the end of the calling turn is the model's to write (TRL's loop samples it)
            if seg.kind == "tool":
                assert int(trace.completion_ids[seg.start]) == end_of_turn
                trace.loss_mask[seg.start] = 1
        traces.append(trace)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in trainable if "trainable_tokens" not in n], "lr": 1e-3},
            {"params": [p for n, p in trainable if "trainable_tokens" in n], "lr": 1e-2},  # two fresh rows
            {"params": [head_rows], "lr": 1e-2},
        ]
    )
    from lightning_cort.modules.base import PolicyModule

    scorer = PolicyModule(model, tok)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        for i in range(0, len(traces), 4):
            batch = collate_trajectories(traces[i : i + 4], tok.pad_token_id)
            logprobs = scorer.completion_logprobs(batch)
            loss = -(logprobs * batch.loss_mask).sum() / batch.loss_mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"  tool-call SFT epoch {epoch + 1}/{epochs}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)")
    hook.remove()
    with torch.no_grad():
        head.weight[rows_at] += head_rows.to(head.weight.dtype)
    merged = model.merge_and_unload()
    merged.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def load(path: Path) -> tuple[Any, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    torch.manual_seed(SEED)  # the same adapter initialisation for both contenders
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA)), tok


# -- lightning_cort ----------------------------------------------------------------------------------------------------
class _OurSteps(L.Callback):
    """First in the callbacks: a step starts before the rollout callback samples and ends after the update."""

    def __init__(self, run: Run, warmup: int) -> None:
        self.run, self.warmup, self.t0, self.t1 = run, warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        seconds = time.perf_counter() - self.t0
        if batch_idx < self.warmup:
            return
        trajs = batch.trajectories
        self.run.seconds.append(seconds)
        self.run.rollout.append(self.t1 - self.t0)
        self.run.completions.append(len(trajs))
        self.run.sampled.append(sum(int(t.loss_mask.sum()) for t in trajs))
        self.run.tool.append(sum(int(t.completion_ids.numel() - t.loss_mask.sum()) for t in trajs))
        self.run.calls.append(sum(len(t.tool_calls) for t in trajs))
        self.run.reward.append(float(outputs["rewards"].float().mean()))


class _RolloutDone(L.Callback):
    """Last in the callbacks: the rollout callback before it has sampled the batch."""

    def __init__(self, steps: _OurSteps) -> None:
        self.steps = steps

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.steps.t1 = time.perf_counter()


def run_ours(arm: Arm, model_dir: Path, data: list[dict[str, Any]], warmup: int, steps: int) -> Run:
    from lightning_cort.callbacks import RolloutCallback, SandboxCallback
    from lightning_cort.data import ListDataset
    from lightning_cort.modules.grpo import GRPOConfig, GRPOModule
    from lightning_cort.rollout import RolloutConfig, SamplingConfig
    from lightning_cort.rollout.sampler import collate_prompts
    from lightning_cort.sandbox import LocalSandbox

    model, tok = load(model_dir)
    fmt = HermesFormat() if arm.tools else CoRTFormat()  # without tools: no tool list, no code stop, no calls
    config = GRPOConfig(
        steps=warmup + steps,
        prompts_per_step=arm.prompts,
        group_size=arm.group,
        reward="correctness",
        lr=arm.lr,
        loss_type="dapo",
        clip_low=0.2,
        clip_high=0.28,
        minibatches=1,
        max_grad_norm=1.0,
    )
    module = GRPOModule(model, tok, config)
    rollout = RolloutConfig(
        max_calls=arm.max_calls if arm.tools else 0,
        max_total_tokens=arm.max_tokens,
        max_tokens_per_call=arm.max_tokens,
        budget_notice=False,
        timeout=10.0,
        sampling=SamplingConfig(temperature=1.0, top_p=1.0, top_k=0),
    )
    run = Run()
    steps_cb = _OurSteps(run, warmup)
    sandbox = SandboxCallback(partial(LocalSandbox, timeout=10.0))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[steps_cb, sandbox, RolloutCallback(fmt, rollout, sandbox=sandbox), _RolloutDone(steps_cb)],
    )
    loader = torch.utils.data.DataLoader(
        ListDataset(data), batch_size=arm.prompts, shuffle=False, collate_fn=collate_prompts
    )
    torch.manual_seed(SEED)
    trainer.fit(module, loader)
    return run


def python_tool(run: Callable[[str], str]) -> Callable[[str], str]:
    """``run`` as TRL takes a tool: a function named ``python`` whose docstring gives the schema HermesFormat puts in
    the prompt."""

    def python(code: str) -> str:
        return run(code)

    python.__doc__ = f"{PYTHON_TOOL_DESCRIPTION}\n\nArgs:\n    code: {PYTHON_TOOL_CODE_DESCRIPTION}\n"
    return python


# -- TRL ---------------------------------------------------------------------------------------------------------------
def run_trl(arm: Arm, model_dir: Path, data: list[dict[str, Any]], warmup: int, steps: int) -> Run:
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from lightning_cort.sandbox import LocalSandbox

    model, tok = load(model_dir)
    run = Run()
    stamps: dict[str, float] = {}
    work: list[dict[str, Any]] = []  # per generation batch: what TRL sampled

    class Steps(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stamps["t0"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step > warmup:
                run.seconds.append(time.perf_counter() - stamps["t0"])

    sandbox = LocalSandbox(timeout=10.0)
    out_dir = tempfile.TemporaryDirectory(prefix="rl_vs_trl-")  # TRL's output_dir; it saves nothing here
    max_chars = HermesFormat().max_output_chars

    python = python_tool(lambda code: middle_truncate(result_text(sandbox.run(code, timeout=10.0)).strip(), max_chars))

    def correctness(prompts: list, completions: list, completion_ids: list, answer: list, **kwargs: Any) -> list[float]:
        texts = [tok.decode(ids, skip_special_tokens=False) for ids in completion_ids]
        rewards = [float(check_answer(t, str(a), mode="strict")) for t, a in zip(texts, answer, strict=True)]
        work.append({"total": sum(len(ids) for ids in completion_ids), "n": len(completion_ids), "reward": rewards})
        return rewards

    config = GRPOConfig(
        output_dir=out_dir.name,
        per_device_train_batch_size=arm.prompts * arm.group,
        num_generations=arm.group,
        max_completion_length=arm.max_tokens,
        max_tool_calling_iterations=arm.max_calls,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=arm.lr,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        weight_decay=0.0,
        beta=0.0,
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.28,
        scale_rewards="group",
        max_grad_norm=1.0,
        bf16=False,
        gradient_checkpointing=False,
        shuffle_dataset=False,
        max_steps=warmup + steps,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=SEED,
    )
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]} for r in data]
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[correctness],
        args=config,
        train_dataset=dataset,
        processing_class=tok,
        tools=[python] if arm.tools else None,
        callbacks=[Steps()],
    )
    trainer.remove_callback(PrinterCallback)
    loop = trainer._tool_call_loop  # what TRL's tool loop returns: the tool mask and the call count

    def counting_loop(*args: Any, **kwargs: Any) -> Any:
        out = loop(*args, **kwargs)
        tool_mask, tool_calls = out[0], out[4]
        work.append({"tool": sum(m.count(0) for m in tool_mask), "calls": tool_calls})
        return out

    trainer._tool_call_loop = counting_loop
    generate = trainer._generate  # sampling and the tool loop

    def timed_generate(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = generate(*args, **kwargs)
        work.append({"rollout_s": time.perf_counter() - t})
        return out

    trainer._generate = timed_generate
    try:
        trainer.train()
    finally:
        sandbox.close()
        out_dir.cleanup()
    per_step = _trl_steps(work)[warmup:]
    for w in per_step:
        run.completions.append(w["n"])
        run.rollout.append(w["rollout_s"])
        run.tool.append(w.get("tool", 0))
        run.sampled.append(w["total"] - w.get("tool", 0))
        run.calls.append(w.get("calls", 0))
        run.reward.append(statistics.fmean(w["reward"]))
    return run


def _trl_steps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join the tool loop's counts (recorded first) with the reward's (recorded after) per generation batch."""
    steps, pending = [], {}
    for e in events:
        pending.update(e)
        if "total" in e:
            steps.append(pending)
            pending = {}
    return steps


# -- report ------------------------------------------------------------------------------------------------------------
def check_prompts(model_dir: Path, data: list[dict[str, Any]]) -> None:
    """Both contenders see the same prompt tokens: ours (HermesFormat's tool list) and the chat template's rendering of
    TRL's tool function."""
    from transformers import AutoTokenizer

    from lightning_cort.data import encode_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)

    python = python_tool(lambda code: code)
    msg = [{"role": "user", "content": data[0]["prompt"]}]
    theirs = tok.apply_chat_template(msg, tools=[python], add_generation_prompt=True, tokenize=False)
    ours = tok.decode(encode_prompt(tok, data[0]["prompt"], tools=HermesFormat().tools), skip_special_tokens=False)
    if ours != theirs:
        raise SystemExit("the two contenders' prompts differ: " + repr(ours[:200]) + " vs " + repr(theirs[:200]))


def summarise(run: Run) -> dict[str, float]:
    total = sum(run.seconds)
    return {
        "step_s": statistics.median(run.seconds),
        "rollout_s": statistics.median(run.rollout),
        "update_s": statistics.median(a - b for a, b in zip(run.seconds, run.rollout, strict=True)),
        "sampled_per_s": sum(run.sampled) / total,
        "all_per_s": (sum(run.sampled) + sum(run.tool)) / total,
        "sampled": statistics.fmean(s / c for s, c in zip(run.sampled, run.completions, strict=True)),
        "tool": statistics.fmean(s / c for s, c in zip(run.tool, run.completions, strict=True)),
        "calls": statistics.fmean(s / c for s, c in zip(run.calls, run.completions, strict=True)),
        "reward": statistics.fmean(run.reward),
        "steps": len(run.seconds),
    }


def merge(runs: list[Run]) -> Run:
    out = Run()
    for r in runs:
        for f in ("seconds", "rollout", "completions", "sampled", "tool", "calls", "reward"):
            getattr(out, f).extend(getattr(r, f))
    return out


def report(results: dict[str, dict[str, Run]], arms: list[Arm], args: argparse.Namespace, wall: float) -> str:
    import transformers
    import trl

    lines = [
        "## RL step against TRL",
        "",
        f"Command: `python benchmarks/rl_vs_trl.py` ({wall / 60:.0f} min; {os.cpu_count()} CPU cores "
        f"({platform.machine()}), no GPU; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"trl {trl.__version__}, lightning {L.__version__})",
        "",
        "Qwen2.5-Coder-0.5B-Instruct (bfloat16 weights; after a "
        f"{args.sft_examples}-trace LoRA SFT that teaches it the `<tool_call>` block, merged; both contenders start "
        "from it), LoRA r 16 on every linear layer with the same "
        f"initial adapter, {arms[0].prompts} calculator prompts × group {arms[0].group} per step, temperature 1, "
        f"completions ≤ {arms[0].max_tokens} tokens (sampled and tool output), `dapo` loss with clip 0.2/0.28, no KL, "
        "AdamW at a constant learning rate, one optimizer step per generation batch. With the tool: the same "
        f"chat-template tool call and the same sandbox (≤ {arms[0].max_calls} calls; TRL: "
        "`max_tool_calling_iterations`). Per contender and arm: "
        f"{args.rounds} runs × ({args.warmup} warm-up + {args.steps} timed steps), runs alternating between the "
        "contenders; step time is the median, throughput is over all timed steps.",
        "",
        "| arm | contender | step (s) | of which rollout (s) | rest: scoring and update (s) | "
        "sampled tokens/s | tokens/s with tool output | sampled tokens "
        "per completion | tool-output tokens per completion | calls per completion | mean reward | vs TRL |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for arm in arms:
        ours, theirs = (summarise(merge(results[arm.name][c])) for c in ("ours", "trl"))
        ratio = ours["sampled_per_s"] / theirs["sampled_per_s"]
        for name, s in (("lightning_cort `GRPOModule`", ours), ("TRL `GRPOTrainer`", theirs)):
            mine = s is ours
            lines.append(
                f"| {arm.name} | {name} | {s['step_s']:.1f} | {s['rollout_s']:.1f} | {s['update_s']:.1f} | "
                f"{s['sampled_per_s']:.1f} | {s['all_per_s']:.1f} | "
                f"{s['sampled']:.1f} | {s['tool']:.1f} | {s['calls']:.2f} | {s['reward']:.2f} | "
                + (f"**{ratio:.2f}x**" if mine else "1.00x")
                + " |"
            )
        target = 1.5 if arm.tools else 1.2
        verdicts.append(
            f"- {arm.name}: {ratio:.2f}x TRL's sampled (= trained) tokens/s, step time "
            f"{theirs['step_s'] / ours['step_s']:.2f}x shorter (target ≥ {target}x: "
            f"{'met' if ratio >= target else 'missed'})"
        )
    notes = [
        "- Same work: the counts above are what each contender sampled. Each run is seeded, so both runs of a "
        "contender sample the same completions; between the contenders the samples differ (two samplers), and the "
        "ratio is per sampled token. Sampled tokens are the trained tokens in both (tool output is masked; nothing "
        "is dropped).",
        "- Rollout: sampling and tool calls (lightning_cort: the rollout callback; TRL: `_generate`, its tool loop "
        "included). The rest: rewards, the log-prob forward and backward, the optimizer step.",
        "- Without the tool the model cannot do 4-digit arithmetic in words: rewards are 0, advantages 0, and both "
        "contenders still run the whole update.",
    ]
    return "\n".join([*lines, "", *verdicts, *notes, ""])


def quiet() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "transformers", "trl", "datasets", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    try:
        from datasets.utils.logging import disable_progress_bar
        from transformers.utils import logging as hf_logging

        disable_progress_bar()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run × (1 + 1) steps per contender and arm; prints only")
    parser.add_argument("--rounds", type=int, default=2, help="runs per contender and arm (alternating)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of each run")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run")
    parser.add_argument("--arms", default="python tool,no tools", help="comma-separated: 'python tool', 'no tools'")
    parser.add_argument("--sft-examples", type=int, default=48, help="tool-call traces of the adaptation SFT")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.steps = 1, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet()
    from lightning_cort.models.real import resolve_model

    t_start = time.perf_counter()
    print("adapting the model to tool calls (cached after the first run) ...", flush=True)
    model_dir = adapted_model(resolve_model(MODEL), args.sft_examples, epochs=2)
    all_arms = {"no tools": Arm("no tools", tools=False), "python tool": Arm("python tool", tools=True)}
    arms = [all_arms[a.strip()] for a in args.arms.split(",")]
    results: dict[str, dict[str, list[Run]]] = {}
    for arm in arms:
        data = rows(arm, arm.prompts * (args.warmup + args.steps))
        if arm.tools:
            check_prompts(model_dir, data)
        results[arm.name] = {"ours": [], "trl": []}
        for r in range(args.rounds):
            order = ("ours", "trl") if r % 2 == 0 else ("trl", "ours")
            for contender in order:
                fn = run_ours if contender == "ours" else run_trl
                t = time.perf_counter()
                run = fn(arm, model_dir, data, args.warmup, args.steps)
                results[arm.name][contender].append(run)
                print(
                    f"  {arm.name:12s} {contender:5s} run {r + 1}: steps "
                    + ", ".join(f"{s:.1f}" for s in run.seconds)
                    + " s (rollout "
                    + ", ".join(f"{s:.1f}" for s in run.rollout)
                    + f" s); sampled {sum(run.sampled)}, tool {sum(run.tool)}, calls {sum(run.calls)}"
                    + f" ({time.perf_counter() - t:.0f} s)",
                    flush=True,
                )
    section = report(results, arms, args, time.perf_counter() - t_start)
    print(section)
    if not args.quick:
        write_section("RL step against TRL", section)


if __name__ == "__main__":
    main()
