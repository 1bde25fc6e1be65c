"""Tiny Qwen2-architecture models and a locally trained tokenizer, so everything runs offline on a CPU.

The tokenizer is a byte-level BPE trained on text of the built-in tasks with *exactly* Qwen2's normalizer,
pre-tokenizer and decoder. That matters: ``AutoTokenizer`` on a directory whose config says ``qwen2`` builds a
``Qwen2Tokenizer``, which re-creates Qwen2's pipeline around the saved vocabulary and merges; any other pre-tokenizer
would silently give different ids through the two loading paths. Digits are split one per token, as in Qwen2.

Special tokens mirror DeepSeek-R1-Distill-Qwen (the base models of CoRT): ``<｜begin▁of▁sentence｜>``,
``<｜end▁of▁sentence｜>``, ``<｜User｜>``, ``<｜Assistant｜>``, plus ``<think>``/``</think>``; the chat template's
generation prompt ends with ``<｜Assistant｜><think>\\n`` like R1-Distill's.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

#: Qwen2's pre-tokenization regex (letters grouped, digits one by one, punctuation runs with trailing newlines).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: A DeepSeek-R1-Distill-style chat template: the generation prompt opens the thinking.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '<｜Assistant｜>' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)

# Bump when the corpus or the training procedure changes, so cached tokenizers are rebuilt.
_TOKENIZER_VERSION = 4


def default_cache_dir() -> Path:
    """Where tiny tokenizers and warm-started policies are cached (``$LIGHTNING_CORT_CACHE`` or
    ``~/.cache/lightning_cort``)."""
    return Path(os.environ.get("LIGHTNING_CORT_CACHE", Path.home() / ".cache" / "lightning_cort"))


def _corpus() -> list[str]:
    """Deterministic training text: prompts and traces of the built-in task in every format and style."""
    from lightning_cort.formats import CORT_HINT_CALCULATE, CORT_HINT_TRUST, CoRTFormat, ReToolFormat
    from lightning_cort.tasks.calculator import (
        ALL_KINDS,
        CalculatorTask,
        build_prompt,
        code_trace,
        hint_trace,
        reasoning_trace,
        reference_output,
        text_trace,
    )

    texts: list[str] = [CORT_HINT_CALCULATE, CORT_HINT_TRUST]
    for digits in (2, 3, 4):
        for p in CalculatorTask(kinds=ALL_KINDS, digits=digits, seed=12345).problems("train", 400):
            texts.append(build_prompt(p.question))
            # Hint-Engineering and reasoning traces are in the corpus too, so their recurring sentences (Hint-1,
            # Hint-2, the one-line plans) get merges. A real BPE vocabulary trained on web text encodes such common
            # English compactly (Qwen2 spends about 14 tokens on Hint-1); without them in the corpus this 1024-entry
            # vocabulary spent 32, and hint traces cost more than the hand arithmetic they replace. CoRT's strings
            # are unchanged; only how many tokens they take.
            texts.append(reasoning_trace(p))
            for fmt in (CoRTFormat(), ReToolFormat()):
                texts.append(code_trace(p, p.answer, fmt))
                texts.append(text_trace(p, fmt))
                texts.append(hint_trace(p, reference_output(p), fmt))
    fmt = CoRTFormat()
    texts.append(fmt.render_output('Traceback (most recent call last):\n  File "<cell>", line 1\nNameError: x'))
    texts.append(fmt.render_output("Timeout Error", budget_notice=True))
    texts.append("The quick brown fox jumps over the lazy dog. Let me check: the result is correct.")
    return texts


def build_tiny_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerBase:
    """Train the tiny tokenizer (deterministic; prefer :func:`tiny_tokenizer`, which caches it)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [BOS, EOS, PAD, USER, ASSISTANT]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    from tokenizers import AddedToken

    tok.add_tokens(
        [
            AddedToken(THINK_OPEN, special=False, normalized=False),
            AddedToken(THINK_CLOSE, special=False, normalized=False),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=None,
        additional_special_tokens=[USER, ASSISTANT],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def tiny_tokenizer(cache_dir: str | os.PathLike | None = None, vocab_size: int = 1024) -> PreTrainedTokenizerBase:
    """The tiny tokenizer, trained once and cached on disk; identical ids however it is loaded.

    Args:
        cache_dir: Cache root (defaults to :func:`default_cache_dir`).
        vocab_size: BPE vocabulary size including special tokens.

    Returns:
        A ``PreTrainedTokenizerFast`` with left padding and the R1-Distill-style chat template.
    """
    from transformers import PreTrainedTokenizerFast

    key = hashlib.sha256(f"{_TOKENIZER_VERSION}/{vocab_size}".encode()).hexdigest()[:12]
    path = Path(cache_dir or default_cache_dir()) / f"tokenizer-{key}"
    if not (path / "tokenizer.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tok = build_tiny_tokenizer(vocab_size)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tokenizer-"))
        save_tokenizer(tok, tmp)
        try:
            tmp.rename(path)  # atomic: concurrent builders cannot leave a half-written cache
        except OSError:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    tok.padding_side = "left"
    return tok


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike) -> None:
    """Save a tokenizer so that ``AutoTokenizer`` (which picks ``Qwen2Tokenizer`` next to a qwen2 config) and
    ``PreTrainedTokenizerFast`` load it identically."""
    tokenizer.save_pretrained(str(path))
    cfg_path = Path(path) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["padding_side"] = "left"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))


@dataclass
class TinyConfig:
    """The shape of the tiny Qwen2 policy (built from this config, with the locally trained tokenizer).

    Attributes:
        hidden_size: Model width.
        num_layers: Transformer blocks.
        num_heads: Attention heads (head_dim = hidden_size / num_heads).
        num_kv_heads: Key/value heads.
        intermediate_size: MLP width.
        init_seed: Initialisation seed.
    """

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 2
    num_kv_heads: int = 1
    intermediate_size: int = 512
    init_seed: int = 0


def tiny_from_config(tokenizer: PreTrainedTokenizerBase, config: TinyConfig) -> PreTrainedModel:
    """A randomly initialised tiny Qwen2 of the shape ``config`` describes."""
    return tiny_qwen2(
        tokenizer,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        num_kv_heads=config.num_kv_heads,
        intermediate_size=config.intermediate_size,
        seed=config.init_seed,
    )


def tiny_qwen2(
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    intermediate_size: int = 512,
    max_position_embeddings: int = 2048,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised ``Qwen2ForCausalLM`` sized for CPU experiments.

    The defaults give head_dim 64 (the smallest vLLM's CPU backend accepts) and ~0.5M parameters.

    Args:
        tokenizer: Provides the vocabulary size and special token ids.
        hidden_size: Model width.
        num_layers: Transformer blocks.
        num_heads: Attention heads (``hidden_size`` must be divisible by it).
        num_kv_heads: Key/value heads (grouped-query attention).
        intermediate_size: MLP width.
        max_position_embeddings: Longest sequence.
        seed: Initialisation seed.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}), "
            f"and num_heads by num_kv_heads ({num_kv_heads})"
        )
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
