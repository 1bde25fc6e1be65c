"""End to end: the RL recipe on a small setting, and the GRPO module's contract."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SMALL_WARMUP_ARGS

from lightning_cort.recipes import rl

# fmt: off
SMALL = [
    "--progress", "false",
    *SMALL_WARMUP_ARGS,
    "--grpo.steps", "3", "--grpo.prompts_per_step", "4", "--grpo.group_size", "4",
    "--held_out.size", "16",
]
# fmt: on


@pytest.mark.slow
def test_rl_recipe_end_to_end(tmp_path):
    summary = rl.main([*SMALL, "--run_dir", str(tmp_path / "run")])
    run_dir = tmp_path / "run"
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("accuracy_before", "accuracy_after", "tool_calls_per_response", "tokens_per_response"):
        assert key in on_disk
    assert 0.0 <= on_disk["accuracy_before"] <= 1.0 and 0.0 <= on_disk["accuracy_after"] <= 1.0
    assert on_disk["tokens_per_response"] > 0
    assert json.loads((run_dir / "config.json").read_text())["grpo"]["steps"] == 3
    metrics = (run_dir / "logs" / "version_0" / "metrics.csv").read_text()
    for name in ("train/loss", "train/reward", "efficiency/accuracy", "rollout/tokens_per_s", "sandbox/executions"):
        assert name in metrics
    assert (run_dir / "policy" / "config.json").exists()
    assert (
        on_disk["training_curves"] == str(run_dir / "training_curves.png")
        and (run_dir / "training_curves.png").exists()
    )
    lines = (run_dir / "eval_generations.jsonl").read_text().splitlines()
    assert len(lines) == 16
    # The second run reuses the cached warm start.
    again = rl.main([*SMALL, "--run_dir", str(tmp_path / "run2"), "--grpo.steps", "1"])
    assert again["warmup_from_cache"] is True
    assert again["accuracy_before"] == summary["accuracy_before"]


@pytest.mark.slow
def test_dapo_options_from_the_command_line_reach_the_step(tmp_path):
    """Dynamic sampling, overlong masking and the soft overlong punishment, set as options, run in the recipe: each
    step draws its reserve prompts and logs what it kept and dropped."""
    args = [
        *SMALL, "--grpo.steps", "2", "--grpo.prompts_per_step", "2", "--held_out.size", "0",
        "--grpo.dynamic_sampling", "true", "--grpo.dynamic_sampling_rounds", "2", "--grpo.mask_truncated", "true",
        "--grpo.overlong_buffer", "40", "--run_dir", str(tmp_path),
    ]  # fmt: skip
    rl.main(args)
    saved = json.loads((tmp_path / "config.json").read_text())["grpo"]
    assert saved["dynamic_sampling"] and saved["mask_truncated"] and saved["overlong_buffer"] == 40
    import csv

    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    kept = [float(r["train/dynamic_kept_groups"]) for r in rows if r.get("train/dynamic_kept_groups")]
    dropped = [float(r["train/dynamic_dropped_groups"]) for r in rows if r.get("train/dynamic_dropped_groups")]
    assert len(kept) == 2 and all(0 <= k <= 2 for k in kept) and len(dropped) == 2


NOISE = (
    "GPU available",
    "TPU available",
    "Tip:",
    "litlogger",
    "LeafSpec",
    "deprecated",
    "Loading weights",
    "max_steps=",
)


@pytest.mark.slow
def test_a_run_shows_its_phases_and_no_library_noise(tmp_path):
    """A newcomer's terminal: the phases, the summary table and where the outputs are; Lightning's banners and tips,
    weight-loading bars and deprecation warnings only with --verbose."""
    import os
    import subprocess
    import sys

    args = [
        sys.executable, "-m", "lightning_cort.recipes.rl", "--model.warm_start", "false", "--grpo.steps", "1",
        "--grpo.prompts_per_step", "2", "--grpo.group_size", "2", "--held_out.size", "2",
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "160"}
    quiet = subprocess.run([*args, "--run_dir", str(tmp_path / "a")], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    out = quiet.stdout + quiet.stderr
    assert not [n for n in NOISE if n in out], out
    assert "GRPO: held-out problems, greedy" in out and f"Run directory: {tmp_path / 'a'}" in out
    loud = subprocess.run(
        [*args, "--run_dir", str(tmp_path / "b"), "--verbose"], capture_output=True, text=True, env=env
    )
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert "GPU available" in loud.stdout + loud.stderr


def test_unknown_option_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        rl.main(["--grpo.stepz", "3"])
    assert "stepz" in capsys.readouterr().err


def test_grpo_module_without_rollout_callback_fails_at_setup(trained_policy, tokenizer):
    import lightning as L

    from lightning_cort.modules import GRPOModule
    from lightning_cort.modules.grpo import GRPOConfig
    from lightning_cort.rollout.sampler import collate_prompts

    module = GRPOModule(trained_policy, tokenizer, GRPOConfig(group_size=2))
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    loader = torch.utils.data.DataLoader([{"prompt": "x"}], batch_size=1, collate_fn=collate_prompts)
    with pytest.raises(RuntimeError, match="RolloutCallback"):
        trainer.fit(module, loader)


def test_grpo_update_moves_logprobs_in_the_advantage_direction(trained_policy, tokenizer):
    """One GRPO update raises the log-prob of the rewarded trajectory and lowers the other's."""
    import copy

    from lightning_cort.data import trajectory_from_text
    from lightning_cort.formats import CoRTFormat
    from lightning_cort.modules import GRPOModule
    from lightning_cort.trajectory import collate_trajectories

    fmt = CoRTFormat()
    good = trajectory_from_text(
        tokenizer,
        "What is 2 * 3?",
        "```python\nprint(2 * 3)\n```\n```output\n6\n```\n</think>\n\n\\boxed{6}",
        fmt,
        row={"answer": "6"},
    )
    bad = trajectory_from_text(tokenizer, "What is 2 * 3?", "</think>\n\n\\boxed{5}", fmt, row={"answer": "6"})
    from lightning_cort.modules.grpo import GRPOConfig, grpo_step

    module = GRPOModule(
        copy.deepcopy(trained_policy).train(), tokenizer, GRPOConfig(group_size=2, minibatches=1, reward="correctness")
    )
    # A small step, so the first-order direction shows (0.05 overshot once the tokenizer changed: both log-probs fell).
    opt = torch.optim.SGD(module.model.parameters(), lr=1e-3)
    data = collate_trajectories([good, bad], tokenizer.pad_token_id)
    rewards = module.score([good, bad])
    assert rewards.tolist() == [1.0, 0.0]
    with torch.no_grad():
        old = module.completion_logprobs(data)
    # The whole step as a plain function: no Trainer, nothing patched.
    result = grpo_step(
        module, [good, bad], rewards, module.config, opt, temperature=1.0, pad_token_id=tokenizer.pad_token_id
    )
    assert result.advantages.tolist() == pytest.approx([0.7071, -0.7071], abs=1e-3) and result.kept.all()
    with torch.no_grad():
        new = module.completion_logprobs(data)
    delta = ((new - old) * data.loss_mask).sum(-1)
    assert delta[0] > 0 and delta[1] < 0


def test_the_readmes_grpo_example_runs(tmp_path, monkeypatch):
    """The README's rollout snippet, then its hand-wired GRPO run, as a newcomer would paste them."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    rollout = next(b for b in blocks if "RolloutEngine(HFBackend(model, tok)" in b)
    grpo = next(b for b in blocks if "collate_fn=collate_prompts" in b)
    monkeypatch.chdir(tmp_path)  # Lightning's default logger writes into the working directory
    namespace: dict = {}
    exec(compile(rollout, "README rollout example", "exec"), namespace)
    exec(
        compile(grpo.replace("max_steps=2", "max_steps=2, enable_progress_bar=False"), "README GRPO", "exec"), namespace
    )
    module = namespace["module"]
    assert module.trainer.global_step == 2 and module.config.group_size == 4
