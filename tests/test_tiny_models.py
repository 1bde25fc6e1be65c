from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from lightning_cort.models.tiny import build_tiny_tokenizer, save_tokenizer, tiny_qwen2, tiny_tokenizer
from lightning_cort.tasks import CalculatorTask, build_prompt, code_trace, reference_output, text_trace

SAMPLES = [
    "What is 123 * 456?\n```python\nprint(123 * 456)\n```\n```output\n56088\n```\n",
    "  leading spaces,\ttabs\r\nand CRLF ünïcödé 🙂 ```\n\n``` `x`\n",
]


def test_tokenizer_is_deterministic(tmp_path):
    a = build_tiny_tokenizer()
    b = build_tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    cached = tiny_tokenizer(tmp_path)
    assert cached.get_vocab() == a.get_vocab()


def test_both_loading_paths_give_identical_ids(tokenizer, tmp_path):
    model = tiny_qwen2(tokenizer)
    model.save_pretrained(tmp_path)
    save_tokenizer(tokenizer, tmp_path)
    auto = AutoTokenizer.from_pretrained(tmp_path)  # a Qwen2Tokenizer next to a qwen2 config
    fast = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    p = CalculatorTask(seed=0).problems("test", 3)
    texts = [*SAMPLES, *(code_trace(x, reference_output(x)) for x in p), *(text_trace(x) for x in p)]
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert auto.encode(text, add_special_tokens=False) == ids
        assert fast.encode(text, add_special_tokens=False) == ids
        assert tokenizer.decode(ids) == text
    msgs = [{"role": "user", "content": build_prompt(p[0].question)}]
    prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<｜Assistant｜><think>\n")
    assert auto.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == prompt
    assert (auto.eos_token_id, auto.pad_token_id, auto.bos_token_id) == (
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
    )
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("12345", add_special_tokens=False)) == list("12345")


def test_tiny_model_is_configurable_and_round_trips(tokenizer, tmp_path):
    model = tiny_qwen2(tokenizer, hidden_size=64, num_layers=1, num_heads=1, num_kv_heads=1, intermediate_size=128)
    assert model.config.num_hidden_layers == 1 and model.config.vocab_size == len(tokenizer)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "qwen2"
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([tokenizer.encode("What is 2 * 3?")])
    torch.testing.assert_close(model(ids).logits, again(ids).logits)
    assert torch.equal(
        tiny_qwen2(tokenizer, seed=1).model.embed_tokens.weight, tiny_qwen2(tokenizer, seed=1).model.embed_tokens.weight
    )


def test_pretokenizer_is_qwen2s():
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from lightning_cort.models.tiny import QWEN2_PRETOKENIZE_REGEX

    assert QWEN2_PRETOKENIZE_REGEX == PRETOKENIZE_REGEX
