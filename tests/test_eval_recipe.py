"""The eval recipe: the synthetic task end to end, a slice of each CoRT benchmark file, resuming an interrupted
evaluation, presets, and clear errors for malformed data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SMALL_WARMUP_ARGS

from lightning_cort.evaluation import load_rows, read_records
from lightning_cort.models.tiny import TinyConfig
from lightning_cort.recipes import eval as eval_recipe

CORT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cort"
BENCHMARKS = ["aime24", "aime25", "amc23", "math500", "olympiad_bench"]

# fmt: off
TINY = [
    "--progress", "false",
    *SMALL_WARMUP_ARGS,
]
# fmt: on


def _check_run(run_dir: Path, metrics: dict, datasets: list[str]) -> None:
    for name in (
        "generations.jsonl",
        "metrics.json",
        "config.json",
        "accuracy_vs_budget.png",
        "token_distribution.png",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert sorted(k for k in on_disk if not k.startswith("_")) == sorted(datasets)
    for name in datasets:
        m = metrics[name]
        assert 0.0 <= m["accuracy"] <= 1.0 and m["tokens_per_response"] > 0
        assert set(m["budget_accuracy"]) and all(0.0 <= v <= 1.0 for v in m["budget_accuracy"].values())
        assert m["tokens_per_response"] == pytest.approx(m["model_tokens_per_response"] + m["tool_tokens_per_response"])


def test_synthetic_task_end_to_end(tmp_path, trained_policy, capsys):
    run_dir = tmp_path / "run"
    metrics = eval_recipe.main([*TINY, "--run_dir", str(run_dir), "--limit", "12"])
    _check_run(run_dir, metrics, ["calculator"])
    assert metrics["calculator"]["problems"] == 12
    assert "evaluation" in capsys.readouterr().out  # the rich table


@pytest.mark.skipif(not CORT_DATA.exists(), reason=f"the CoRT benchmark files are not at {CORT_DATA}")
def test_slice_of_each_cort_benchmark(tmp_path, trained_policy):
    files = [str(CORT_DATA / f"test_{name}.reason_step.jsonl") for name in BENCHMARKS]
    # fmt: off
    args = [*TINY, "--run_dir", str(tmp_path / "run"), "--data", json.dumps(files), "--limit", "2", "--n", "2",
            "--max_total_tokens", "48", "--max_tokens_per_call", "48", "--max_calls", "1", "--scoring", "cort",
            "--temperature", "0.6", "--top_p", "0.95"]
    # fmt: on
    metrics = eval_recipe.main(args)
    _check_run(tmp_path / "run", metrics, BENCHMARKS)
    records = read_records(tmp_path / "run" / "generations.jsonl")
    assert len(records) == 5 * 2 * 2
    assert all(metrics[name]["samples_per_problem"] == 2 for name in BENCHMARKS)


def test_interrupted_eval_resumes_without_regenerating(tmp_path, trained_policy):
    run_dir = tmp_path / "run"
    args = [*TINY, "--run_dir", str(run_dir), "--limit", "6", "--batch_size", "2"]
    eval_recipe.main(args)
    lines = (run_dir / "generations.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 6
    # An interruption after two batches... and in the middle of writing the third.
    (run_dir / "generations.jsonl").write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])
    metrics = eval_recipe.main(args)
    assert metrics["_run"]["problems_resumed"] == 4 and metrics["_run"]["problems_generated"] == 2
    again = (run_dir / "generations.jsonl").read_text().splitlines(keepends=True)
    assert again[:4] == lines[:4]  # finished samples untouched
    assert sorted(r["index"] for r in read_records(run_dir / "generations.jsonl")) == list(range(6))
    assert metrics["calculator"]["problems"] == 6


def test_presets():
    cfg = eval_recipe.apply_preset(eval_recipe.EvalConfig(preset="cort"))
    assert (cfg.temperature, cfg.top_p, cfg.max_calls, cfg.max_total_tokens, cfg.scoring) == (
        0.6,
        0.95,
        15,
        32768,
        "cort",
    )
    assert [eval_recipe.samples_for(cfg, b) for b in BENCHMARKS] == [16, 16, 16, 4, 4]
    strict = eval_recipe.apply_preset(eval_recipe.EvalConfig(preset="strict", n=3))
    assert strict.scoring == "strict" and eval_recipe.samples_for(strict, "aime24") == 3


def test_malformed_rows_are_a_clear_error(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "gt_answer": "2"}) + "\n" + json.dumps({"question": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"row 1 has no column\(s\) \['problem', 'gt_answer'\]"):
        load_rows(str(path))
    rows = load_rows(str(path), {"problem": "problem", "answer": "gt_answer"}, limit=1, prompt_suffix="Box it.")
    assert rows == [{"id": "bench-0", "prompt": "1+1?\nBox it.", "answer": "2", "problem": "1+1?"}]


def test_loads_a_lora_adapter_and_a_lightning_checkpoint(tmp_path, tokenizer):
    """``--model.adapter`` and ``--model.checkpoint`` evaluate exactly the trained weights."""
    import lightning as L
    import torch

    from lightning_cort.data import trajectory_from_text
    from lightning_cort.formats import CoRTFormat
    from lightning_cort.models.policy import LoraSettings, PolicySettings, export_policy, load_policy
    from lightning_cort.modules import SFTModule, SFTSettings
    from lightning_cort.trajectory import collate_trajectories

    base, _ = load_policy(PolicySettings(tiny=TinyConfig(num_layers=2)), tokenizer)
    export_policy(base, tokenizer, tmp_path / "base", mode="full")
    ids = torch.tensor([tokenizer.encode("What is 12 * 34?")])

    # A LoRA adapter on top of the saved base.
    lora, _ = load_policy(PolicySettings(name_or_path=str(tmp_path / "base"), lora=LoraSettings(r=4, alpha=8)))
    with torch.no_grad():
        for p in lora.parameters():
            if p.requires_grad:
                p.add_(0.05)
    export_policy(lora, None, tmp_path / "adapter", mode="adapter")
    cfg = eval_recipe.EvalConfig(
        model=eval_recipe.EvalModelConfig(path=str(tmp_path / "base"), adapter=str(tmp_path / "adapter"))
    )
    loaded, _ = eval_recipe._load_model(cfg)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, lora.eval()(input_ids=ids).logits)

    # A Lightning checkpoint of an SFT run on the same base.
    policy, _ = load_policy(PolicySettings(name_or_path=str(tmp_path / "base")))
    example = trajectory_from_text(tokenizer, "What is 2 * 3?", "```python\nprint(2 * 3)\n```\n</think>", CoRTFormat())
    loader = torch.utils.data.DataLoader([example] * 4, batch_size=2, collate_fn=lambda b: collate_trajectories(b, 0))
    trainer = L.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(SFTModule(policy, tokenizer, SFTSettings(lr=1e-2, warmup_ratio=0.0, lr_schedule="constant")), loader)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    cfg = eval_recipe.EvalConfig(
        model=eval_recipe.EvalModelConfig(path=str(tmp_path / "base"), checkpoint=str(tmp_path / "run.ckpt"))
    )
    loaded, _ = eval_recipe._load_model(cfg)
    for name, value in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
