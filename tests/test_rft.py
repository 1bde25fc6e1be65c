"""Rejection fine-tuning: the filters and detectors on scripted trajectories with real executions, AutoCode weights,
and RFTModule rounds with the tiny policy (sample → filter → train; expert iteration)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from test_rollout import ScriptedBackend

from lightning_cort.callbacks import RolloutCallback, SandboxCallback
from lightning_cort.filters import (
    CORT_FILTERS,
    code_decision_weights,
    correct,
    manual_calculations,
    select_trajectories,
    shows_delayed_computation,
    shows_result_distrust,
)
from lightning_cort.formats import CoRTFormat
from lightning_cort.modules import RFTModule, RFTSettings
from lightning_cort.rollout import RolloutConfig, RolloutEngine
from lightning_cort.sandbox import LocalSandbox
from lightning_cort.tasks import CalculatorTask, build_prompt


def _run(tokenizer, sandbox, script, answer="42"):
    engine = RolloutEngine(ScriptedBackend(tokenizer, script), tokenizer, CoRTFormat(), sandbox, RolloutConfig())
    (traj,) = engine.generate(engine.encode_prompts(["What is 6 * 7?"]), [{"answer": answer}])
    return traj


CLEAN = [("It looks tedious.\n```python\nprint(6 * 7)\n```\n", "stop"), ("</think>\n\n\\boxed{42}", "eos")]
DELAYED = [
    ("First 1234 * 56 = 69104, then 69104 + 2217 = 71321.\n```python\nprint(6 * 7)\n```\n", "stop"),
    ("</think>\n\n\\boxed{42}", "eos"),
]
DISTRUST = [
    ("```python\nprint(6 * 7)\n```\n", "stop"),
    ("Let me verify this by hand: 6 * 7 is 42.\n</think>\n\n\\boxed{42}", "eos"),
]
RECOMPUTE = [("```python\nprint(123 * 456)\n```\n", "stop"), ("So 123 * 456 = 56088.\n</think>\n\n\\boxed{42}", "eos")]
WRONG = [("```python\nprint(6 * 7)\n```\n", "stop"), ("</think>\n\n\\boxed{41}", "eos")]


def test_manual_calculation_detector():
    assert manual_calculations("so 1234 * 56 = 69104") == ["1234 * 56"]
    assert manual_calculations("add 12 + 30") == []  # small numbers are not delayed computation
    assert manual_calculations("x_2 + 3 and 2.5 + 1") == []
    assert manual_calculations(r"$345 \times 12$") == [r"345 \times 12"]


def test_detectors_on_real_trajectories(tokenizer, sandbox):
    clean, delayed = _run(tokenizer, sandbox, CLEAN), _run(tokenizer, sandbox, DELAYED)
    distrust, recompute = _run(tokenizer, sandbox, DISTRUST), _run(tokenizer, sandbox, RECOMPUTE)
    assert not shows_delayed_computation(clean) and not shows_result_distrust(clean)
    assert shows_delayed_computation(delayed) and not shows_result_distrust(delayed)
    assert shows_result_distrust(distrust) and not shows_delayed_computation(distrust)
    assert shows_result_distrust(recompute)
    # The code itself never counts as prose: 123 * 456 inside the block is not a manual calculation.
    assert not shows_delayed_computation(recompute)


def test_cort_filters_and_shortest_selection(tokenizer, sandbox):
    scripts = [CLEAN, DELAYED, DISTRUST, WRONG]
    group = [_run(tokenizer, sandbox, s) for s in scripts]
    (kept,) = select_trajectories([group], CORT_FILTERS)
    assert len(kept) == 1 and kept[0] is group[0]
    (kept,) = select_trajectories([group], (correct,), shortest=True, per_prompt=2)
    assert len(kept) == 2 and all(t is not group[3] for t in kept)
    assert kept[0].completion_ids.numel() <= kept[1].completion_ids.numel()


def test_code_decision_weights(tokenizer, sandbox):
    code = _run(tokenizer, sandbox, CLEAN)
    text = _run(tokenizer, sandbox, [("6 times 7 is 42.\n</think>\n\n\\boxed{42}", "eos")])
    # Code solved 2/2, text 1/2: code samples weigh 1.5, text samples 0.5.
    weights = code_decision_weights([code, code, text, text], [True, True, True, False])
    assert weights == [1.5, 1.5, 0.5, 0.5]
    assert code_decision_weights([code, code], [True, False]) == [1.0, 1.0]  # nothing to compare


def test_rft_module_validates_arguments(tokenizer, trained_policy):
    with pytest.raises(ValueError, match="no 'prompt' field"):
        RFTModule(trained_policy, tokenizer, [{"answer": "1"}])
    with pytest.raises(ValueError, match="prompts is empty"):
        RFTModule(trained_policy, tokenizer, [])
    with pytest.raises(ValueError, match="samples_per_prompt must be >= 1"):
        RFTSettings(samples_per_prompt=0)
    with pytest.raises(ValueError, match="per_prompt must be >= 0"):
        RFTSettings(per_prompt=-1)


def _rows(n):
    task = CalculatorTask(digits=3, seed=0)
    return [{"prompt": build_prompt(p.question), "answer": p.answer} for p in task.problems("train", n)]


def _interpreter(config: RolloutConfig) -> list:
    """A local sandbox and the rollout callback that runs code in it."""
    sandbox = SandboxCallback(lambda: LocalSandbox(timeout=5.0))
    return [sandbox, RolloutCallback(CoRTFormat(), config, sandbox=sandbox)]


def _trainer(callbacks, **kw):
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **kw,
    )


def test_rft_rounds_sample_filter_and_train_every_parameter(tokenizer, trained_policy):
    """Two rounds of expert iteration: each samples, keeps only what passes the filter, and trains on it. (The
    briefly warmed-up test policy rarely answers correctly, so the filter here is a successful code call.)"""
    import copy

    from lightning_cort.rewards.functions import successful_code_output

    policy = copy.deepcopy(trained_policy).train()
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    settings = RFTSettings(samples_per_prompt=4, per_prompt=2, batch_size=4, lr=1e-4, temperature=1.0)
    module = RFTModule(policy, tokenizer, _rows(6), settings, filters=[lambda t, row: successful_code_output(t)])
    callbacks = _interpreter(RolloutConfig(max_calls=2, max_total_tokens=160))
    trainer = _trainer(callbacks, max_epochs=2, reload_dataloaders_every_n_epochs=1)
    trainer.fit(module)
    assert len(module.rounds) == 2
    for stats in module.rounds:
        assert stats["sampled"] == 24 and 0 < stats["kept"] <= 12
    assert module.kept and all(successful_code_output(t) for t in module.kept)
    changed = [n for n, p in policy.named_parameters() if not torch.equal(p, before[n])]
    assert sorted(changed) == sorted(before)


def test_rft_needs_reloading_dataloaders_for_several_rounds(tokenizer, trained_policy):
    module = RFTModule(trained_policy, tokenizer, _rows(2))
    callbacks = _interpreter(RolloutConfig(max_calls=1, max_total_tokens=64))
    trainer = _trainer(callbacks, max_epochs=2)
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        trainer.fit(module)


def test_rft_round_with_nothing_kept_is_a_clear_error(tokenizer, trained_policy):
    rows = [{"prompt": r["prompt"], "answer": "not a number"} for r in _rows(2)]
    module = RFTModule(trained_policy, tokenizer, rows, RFTSettings(samples_per_prompt=2))
    callbacks = _interpreter(RolloutConfig(max_calls=1, max_total_tokens=64))
    trainer = _trainer(callbacks, max_epochs=1)
    with pytest.raises(RuntimeError, match="passed the filters"):
        trainer.fit(module)


def test_rft_round_with_nothing_kept_can_be_allowed(tokenizer, trained_policy):
    import copy

    rows = [{"prompt": r["prompt"], "answer": "not a number"} for r in _rows(2)]
    policy = copy.deepcopy(trained_policy)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    module = RFTModule(policy, tokenizer, rows, RFTSettings(samples_per_prompt=2, allow_empty_rounds=True))
    callbacks = _interpreter(RolloutConfig(max_calls=1, max_total_tokens=64))
    trainer = _trainer(callbacks, max_epochs=2, reload_dataloaders_every_n_epochs=1)
    with pytest.warns(UserWarning, match="nothing to train on"):
        trainer.fit(module)
    # Lightning ends the fit at an epoch without batches: the empty first round is the last one.
    assert [r["kept"] for r in module.rounds] == [0.0] and module.kept == []
    assert all(torch.equal(p, before[n]) for n, p in policy.named_parameters())
