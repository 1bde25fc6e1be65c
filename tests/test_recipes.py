"""The recipes' front door: every shipped YAML instantiates against its entry point without weights, override
semantics, clear errors, the memory plan, and each training recipe's no-argument run on a tiny setting."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

from lightning_cort.recipes._cli import parse_config

ROOT = Path(__file__).resolve().parents[1]
YAMLS = sorted((ROOT / "recipes").rglob("*.yaml"))
CONFIGS = {"sft": "SFTConfig", "rft": "RFTConfig", "rl": "RLConfig", "eval": "EvalConfig", "synth": "SynthConfig"}


def _recipe(path: Path):
    method = path.parent.name
    module = importlib.import_module(f"lightning_cort.recipes.{method}")
    return module, getattr(module, CONFIGS[method])


def test_every_method_has_yamls():
    assert {p.parent.name for p in YAMLS} == set(CONFIGS)
    for path in YAMLS:
        first = path.read_text().splitlines()[:4]
        assert first[0].startswith("# "), path
        assert any(f"python -m lightning_cort.recipes.{path.parent.name}" in line for line in first), path


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_yaml_instantiates_against_its_entry_point(path, tmp_path):
    """Parse with the recipe's own parser (unknown keys would fail), then build every part on the meta device: the
    policy with its real shape (and LoRA adapters), the module, callbacks and the strategy. GPU configs must fit
    the GPU they are written for, by the memory plan."""
    import torch

    module, config_cls = _recipe(path)
    cfg = parse_config(config_cls, ["--config", str(path)], "test", "")
    raw = yaml.safe_load(path.read_text())
    for section, values in raw.items():  # the file's values arrived (a sample of them, section by section)
        if isinstance(values, dict):
            for key, value in values.items():
                if not isinstance(value, dict):
                    assert getattr(getattr(cfg, section), key) == value, (section, key)
    method = path.parent.name
    if method == "eval":
        cfg = module.apply_preset(cfg)
        if cfg.model.path:
            from lightning_cort.models.architectures import resolve_architecture

            assert resolve_architecture(cfg.model.path).num_params > 1e9
        return
    parts = module.build(cfg, tmp_path, meta=True)
    if method == "synth":
        return
    model = parts.model
    assert all(p.device.type == "meta" for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    from lightning_cort.recipes._plan import policy_architecture

    arch = policy_architecture(cfg.model, len(parts.tokenizer))
    if cfg.model.lora is not None:
        assert trainable == arch.lora_params(cfg.model.lora.r, cfg.model.lora.target_modules)
    else:
        assert trainable == arch.num_params
    assert parts.module.model is model
    if cfg.trainer.strategy == "fsdp2":
        from lightning.pytorch.strategies import ModelParallelStrategy

        assert isinstance(parts.strategy, ModelParallelStrategy)
    plan = module.plan(cfg)
    if cfg.plan.check:
        assert plan.fits, f"{path.name} does not fit {cfg.plan.gpu_memory_gb} GB by its own plan"
    assert torch.device("meta") == next(model.parameters()).device


def test_overrides_later_arguments_win_and_the_saved_config_reloads(tmp_path):
    from lightning_cort.recipes.rl import RLConfig, run

    path = ROOT / "recipes/rl/r1-distill-qwen-1.5b_lora_1gpu.yaml"
    cfg = parse_config(RLConfig, ["--config", str(path), "--grpo.lr", "3e-6", "--model.lora.r", "8"], "t", "")
    assert cfg.grpo.lr == 3e-6 and cfg.model.lora.r == 8 and cfg.model.lora.alpha == 128  # rest of the file kept
    before = parse_config(RLConfig, ["--grpo.lr", "3e-6", "--config", str(path)], "t", "")
    assert before.grpo.lr == 1e-5  # the file, given later, wins
    no_lora = parse_config(RLConfig, ["--config", str(path), "--model.lora", "null"], "t", "")
    assert no_lora.model.lora is None
    summary = run(
        parse_config(RLConfig, ["--config", str(path), "--dry-run", "--run_dir", str(tmp_path / "r")], "t", "")
    )
    saved = tmp_path / "r" / "config.yaml"
    again = parse_config(RLConfig, ["--config", str(saved)], "t", "")
    assert again.grpo.lr == 1e-5 and again.dry_run is True
    assert again.model == parse_config(RLConfig, ["--config", str(path)], "t", "").model
    plan = json.loads((tmp_path / "r" / "memory_plan.json").read_text())
    assert plan == summary["plan"] and plan["fits"] is True and plan["limit_gib"] == 21.6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grpo.stesp", "3"], "did you mean --grpo.steps"),
        (["--modle.lora.r", "3"], "did you mean --model.lora.r"),
        (["--grpo.loss_type", "ppo"], "loss_type"),
        (["--grpo.steps", "many"], "grpo.steps"),
    ],
)
def test_unknown_or_mistyped_options_are_clear_errors(args, message, capsys):
    from lightning_cort.recipes import rl

    with pytest.raises(SystemExit):
        rl.main(args)
    assert message in capsys.readouterr().err


def test_list_options_take_plain_values_as_well_as_a_yaml_list():
    from lightning_cort.recipes.eval import EvalConfig

    assert parse_config(EvalConfig, ["--data", "a/b.jsonl", "--limit", "3"], "t", "").data == ["a/b.jsonl"]
    two = parse_config(EvalConfig, ["--data", "a.jsonl", "b.parquet", "--budgets", "64", "128"], "t", "")
    assert two.data == ["a.jsonl", "b.parquet"] and two.budgets == [64, 128]
    assert parse_config(EvalConfig, ["--data=a.jsonl"], "t", "").data == ["a.jsonl"]
    assert parse_config(EvalConfig, ["--task.kinds", "[gcd, lcm]"], "t", "").task.kinds == ["gcd", "lcm"]


def test_a_yaml_with_a_misspelt_key_is_an_error(tmp_path, capsys):
    from lightning_cort.recipes import sft

    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  epoch: 3\n")
    with pytest.raises(SystemExit):
        sft.main(["--config", str(bad)])
    assert "epoch" in capsys.readouterr().err


def test_help_is_built_from_the_docstrings(capsys):
    from lightning_cort.recipes import sft

    with pytest.raises(SystemExit):
        sft.main(["--help"])
    out = capsys.readouterr().out
    assert "Supervised fine-tuning on reasoning traces" in out
    assert "Drop traces longer than this many tokens" in out  # an attribute docstring
    assert "--model.lora" in out and "--trainer.strategy" in out


def refused(args: list[str], capsys) -> str:
    """The one-line error the RL recipe's option parsing gives for ``args`` (nothing is built or loaded)."""
    from lightning_cort.recipes.rl import RLConfig

    with pytest.raises(SystemExit):
        parse_config(RLConfig, args, "t", "")
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_qlora_with_vllm_rollouts_is_refused_before_loading(capsys):
    path = ROOT / "recipes/rl/r1-distill-qwen-1.5b_qlora_1gpu.yaml"
    assert "QLoRA" in refused(["--config", str(path), "--rollout.backend", "vllm"], capsys)


def test_hf_rollouts_of_an_fsdp2_sharded_policy_are_refused_before_loading(capsys):
    path = ROOT / "recipes/rl/cort_r1-distill-qwen-1.5b_fsdp2_8gpu.yaml"
    line = refused(["--config", str(path), "--rollout.backend", "hf"], capsys)
    assert re.search(r"FSDP2-sharded policy.*rollout\.backend vllm", line)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grpo.group_size", "1"], "error: grpo.group_size must be >= 2"),
        (["--grpo.is_cap", "0.5", "--grpo.minibatches", "0"], "grpo.minibatches must be >= 1"),
        (["--grpo.reward", "no_such_package.rewards:score"], "grpo.reward 'no_such_package.rewards:score' cannot be"),
        (["--grpo.reward", "length"], "grpo.reward must be one of cort, correctness, retool or an import path"),
        (["--grpo.importance_sampling", "token"], "set rollout.sampling.logprobs true"),
        (["--rollout.sampling.temperature", "0"], "rollout.sampling.temperature must be > 0"),
        (["--grpo.dynamic_sampling_rounds", "0"], "grpo.dynamic_sampling_rounds must be >= 1"),
        (["--task.kinds", "multiply", "--task.digits", "1"], "ran out of training problems after 0 of 1"),
        (
            ["--grpo.overlong_buffer", "999"],
            "grpo.overlong_buffer (999) must not exceed the completion budget (rollout.max_total_tokens 160)",
        ),
        (["--code_format", "hermes"], "code_format hermes writes ChatML tool turns"),
    ],
)
def test_bad_rl_settings_are_one_line_errors_at_start(args, message, capsys):
    assert message in refused(args, capsys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task.digits", "4"], "task.* is set but this run does not use it (data.train and data.val are given)"),
        (["--warmup.epochs", "2"], "warmup.* is set but this run does not use it (model.name_or_path is"),
        (["--model.tiny.num_layers", "2"], "model.tiny.* is set but this run does not use it"),
    ],
)
def test_the_tiny_tasks_sections_are_refused_where_they_do_not_apply(args, message, capsys):
    from lightning_cort.recipes.rft import RFTConfig

    path = ROOT / "recipes/rl/r1-distill-qwen-1.5b_lora_1gpu.yaml"
    assert message in refused(["--config", str(path), "--data.val", "v.jsonl", *args], capsys)
    # The default tiny run uses both sections.
    assert parse_config(RFTConfig, ["--task.digits", "4", "--warmup.epochs", "2"], "t", "").task.digits == 4


def test_a_saved_config_leaves_out_the_sections_the_run_does_not_use(tmp_path):
    from lightning_cort.recipes._cli import save_config
    from lightning_cort.recipes.rl import RLConfig

    real = parse_config(RLConfig, ["--config", str(ROOT / "recipes/rl/r1-distill-qwen-1.5b_lora_1gpu.yaml")], "t", "")
    save_config(real, tmp_path)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert "warmup" not in saved and "tiny" not in saved["model"] and "task" not in saved  # data.train, held_out 0
    again = parse_config(RLConfig, ["--config", str(tmp_path / "config.yaml")], "t", "")
    assert again == real
    save_config(RLConfig(), tmp_path)  # the tiny default run uses them all
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert {"task", "warmup"} <= set(saved) and "tiny" in saved["model"]


def test_the_warm_start_trains_through_the_sft_recipes_path_on_the_runs_accelerator(tokenizer, monkeypatch):
    """The warm start is the SFT recipe's ``train_sft`` with the run's accelerator and precision, on one device
    (a 2-process DDP run warm-starts the same way on each rank, from the cache after the first)."""
    from dataclasses import replace

    from lightning_cort.formats import CoRTFormat
    from lightning_cort.models.tiny import TinyConfig
    from lightning_cort.recipes import _steps
    from lightning_cort.recipes.config import TrainerConfig, WarmupConfig
    from lightning_cort.tasks import CalculatorTask

    calls = []
    real_train_sft = _steps.train_sft

    def recording(module, examples, options, trainer, run_dir, **kw):
        calls.append((options, trainer, run_dir, kw["phase"]))
        return real_train_sft(module, examples, options, replace(trainer, precision=None), run_dir, **kw)

    monkeypatch.setattr(_steps, "train_sft", recording)
    warmup = WarmupConfig(examples=8, epochs=1, batch_size=4, cache=False)
    run = TrainerConfig(accelerator="cpu", devices=2, strategy="ddp", precision="bf16-mixed", resume="last")
    model, cached = _steps.warm_start(
        tokenizer, TinyConfig(num_layers=1), warmup, CalculatorTask(seed=5), CoRTFormat(), 0, False, trainer=run
    )
    assert not cached and model.training
    [(options, trainer, run_dir, phase)] = calls
    assert options is warmup and run_dir is None and phase == "warm start (SFT)"
    assert (trainer.accelerator, trainer.precision) == ("cpu", "bf16-mixed")
    assert (trainer.devices, trainer.strategy, trainer.resume, trainer.checkpoint_every_n_steps) == (1, "auto", None, 0)


def test_a_reward_by_import_path_reaches_the_module(tmp_path):
    from lightning_cort.recipes.rl import RLConfig, build
    from lightning_cort.rewards import retool_reward

    cfg = parse_config(
        RLConfig,
        ["--config", str(ROOT / "recipes/rl/r1-distill-qwen-1.5b_lora_1gpu.yaml"), "--grpo.reward",
         "lightning_cort.rewards:retool_reward"],
        "t", "",
    )  # fmt: skip
    assert build(cfg, tmp_path, meta=True).module.reward_fn is retool_reward


def test_vllm_kv_cache_size_reaches_the_engine_and_a_bad_size_is_refused_before_loading(tmp_path):
    from lightning_cort.recipes._steps import vllm_arguments
    from lightning_cort.recipes.rl import RLConfig, build

    cfg = parse_config(RLConfig, ["--rollout.backend", "vllm", "--rollout.vllm_kv_cache_gib", "1.5"], "t", "")
    assert vllm_arguments(cfg.rollout, 0)["kv_cache_memory_bytes"] == 3 * 2**29
    assert "kv_cache_memory_bytes" not in vllm_arguments(parse_config(RLConfig, [], "t", "").rollout, 0)
    from dataclasses import replace

    bad = RLConfig()
    bad.rollout = replace(bad.rollout, vllm_kv_cache_gib=0)
    with pytest.raises(ValueError, match=r"rollout\.vllm_kv_cache_gib must be a positive"):
        build(bad, tmp_path, meta=True)  # a config built in code is checked too


def test_the_tiny_default_plans_without_loading_anything(tmp_path, capsys):
    from lightning_cort.recipes import sft

    out = sft.main(["--dry-run", "--run_dir", str(tmp_path)])
    assert out["plan"]["fits"] is True
    assert "SFT memory plan" in capsys.readouterr().out
    assert not (tmp_path / "policy").exists()


def test_malformed_trace_files_name_the_rows(tmp_path, tokenizer):
    from lightning_cort.data import read_table, trace_examples
    from lightning_cort.formats import CoRTFormat

    path = tmp_path / "traces.jsonl"
    path.write_text('{"prompt": "p", "completion": "c"}\n{"prompt": "p"\n')
    with pytest.raises(ValueError, match=r"traces.jsonl: 1 malformed row\(s\): line 2: not valid JSON"):
        read_table(path)
    rows = [
        {"prompt": "What is 2+2?", "completion": "```python\nprint(4)\n```\n```output\n4\n```\n\\boxed{4}"},
        {"prompt": "x"},
        {"messages": [{"role": "assistant", "content": "hi"}]},
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "```python\nprint(1)\n```\n"},
                {"role": "tool", "content": "1"},
                {"role": "assistant", "content": "\\boxed{1}"},
            ]
        },
    ]
    with pytest.raises(ValueError, match=r"2 malformed trace row\(s\): row 1: .*row 2: messages must start"):
        trace_examples(rows, tokenizer, CoRTFormat(), source="traces.jsonl")
    good = trace_examples([rows[0], rows[3]], tokenizer, CoRTFormat())
    masked = [tokenizer.decode(g.completion_ids[g.loss_mask == 0]) for g in good]
    assert masked == ["```output\n4\n```\n", "```output\n1\n```\n"]  # interpreter output comes from the tool turn


@pytest.mark.slow
def test_sft_recipe_trains_on_a_trace_file_and_resumes(tmp_path):
    from lightning_cort.recipes import sft
    from lightning_cort.tasks import CalculatorTask, build_prompt, trace_for

    task = CalculatorTask(seed=3)
    data = tmp_path / "traces.jsonl"
    with open(data, "w") as f:
        for p in task.problems("train", 48):
            f.write(json.dumps({"prompt": build_prompt(p.question), "completion": trace_for(p, "hint")}) + "\n")
    common = [
        "--data.train", f"[{data}]", "--sft.batch_size", "8", "--held_out.size", "4", "--progress", "false",
        "--trainer.checkpoint_every_n_steps", "3", "--run_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    first = sft.main([*common, "--sft.epochs", "1"])
    assert first["examples"] == 48 and first["optimizer_steps"] == 6
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    resumed = sft.main([*common, "--sft.epochs", "2", "--trainer.resume", "last"])
    assert resumed["optimizer_steps"] == 12  # continued from step 6, not from 0
    assert (tmp_path / "run" / "policy" / "config.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sft", "rft"])
def test_recipe_no_argument_run_on_a_tiny_setting(method, tmp_path):
    """The no-argument defaults, shrunk (fewer traces, prompts and held-out problems), end to end."""
    module = importlib.import_module(f"lightning_cort.recipes.{method}")
    small = {
        "sft": ["--sft.examples", "96", "--sft.epochs", "1", "--sft.batch_size", "16"],
        # The default warm start (cached for the session): a policy that solves most problems, so rounds keep data
        # (the tests' small warm start solves none: its rounds would keep nothing).
        "rft": ["--rft.prompts", "8", "--rft.rounds", "2", "--rft.batch_size", "4"],
    }[method]  # fmt: skip
    summary = module.main([*small, "--held_out.size", "8", "--progress", "false", "--run_dir", str(tmp_path)])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("accuracy_before", "accuracy_after", "tokens_per_response", "tool_calls_per_response"):
        assert key in on_disk
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "policy" / "config.json").exists()
    assert len((tmp_path / "eval_generations.jsonl").read_text().splitlines()) == 8
    if method == "rft":
        assert len(on_disk["rounds"]) == 2 and all(r["sampled"] == 32 for r in on_disk["rounds"])


@pytest.mark.slow
def test_synth_recipe_end_to_end_feeds_the_sft_recipe(tmp_path, tokenizer):
    """The no-argument synthesis, shrunk (fewer traces, a brief teacher warm start): text traces cut at Hint-1,
    continued by the tiny teacher with the sandbox, filtered; kept records train with the SFT recipe's loader."""
    from lightning_cort.data import read_table, trace_examples
    from lightning_cort.formats import CORT_HINT_CALCULATE, CoRTFormat
    from lightning_cort.recipes import synth

    args = ["--synth.examples", "12", "--progress", "false", "--run_dir", str(tmp_path)]
    brief = ["--warmup.examples", "600", "--warmup.epochs", "2", "--warmup.lr", "3e-3"]
    summary = synth.main([*args, *brief])
    report = [json.loads(line) for line in (tmp_path / "synthesis.jsonl").read_text().splitlines()]
    assert summary["traces"] == 12 and len(report) == 12
    # prime_count traces list the primes without any multi-digit arithmetic: the detector proposes no point there.
    no_point = [r for r in report if r["point"] is None]
    assert all(r["rejected_by"] == ["no calculate point"] for r in no_point)
    assert summary["continuations"] == 12 - len(no_point) >= 8
    for r in report:
        if r["point"] is not None:
            assert CORT_HINT_CALCULATE + "\n```python\n" in r["completion"]  # the prefix the teacher continued
            assert r["kept"] == (not r["rejected_by"])
    rows = read_table(tmp_path / "sft.jsonl")
    assert len(rows) == summary["kept"] == sum(r["kept"] for r in report)
    examples = trace_examples(rows, tokenizer, CoRTFormat())
    assert all(int((e.loss_mask == 0).sum()) > 0 for e in examples)  # kept traces ran code; its output is masked
    assert summary["rejected_by"].get("no calculate point", 0) == len(no_point)
