"""Generation with Hugging Face ``generate`` (batched, KV cache within a call)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from lightning_cort.rollout.backends.base import GenerationOutput, SamplingConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class HFBackend:
    """Batched ``model.generate`` over token-id prompts, cut per row at EOS or at the token completing a stop string.

    Args:
        model: A causal LM (plain, peft-wrapped or quantized).
        tokenizer: Its tokenizer (for stop strings and decoding).
        batch_size: Rows per ``generate`` call (``0``: all at once).
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        eos = model.generation_config.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos if eos is not None else -1])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids))
        self._pieces: dict[int, str] = {}

    @torch.no_grad()
    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop_strings: Sequence[str]
    ) -> list[GenerationOutput]:
        if not prompts:
            return []
        step = self.batch_size or len(prompts)
        outputs: list[GenerationOutput] = []
        for i in range(0, len(prompts), step):
            outputs.extend(self._generate(prompts[i : i + step], sampling, stop_strings))
        return outputs

    def _generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, stop_strings: Sequence[str]
    ) -> list[GenerationOutput]:
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(prompts):
            ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p) :] = 1
        kwargs: dict = {
            "max_new_tokens": sampling.max_new_tokens,
            "pad_token_id": self.pad_id,
            "return_dict_in_generate": True,
            "output_logits": sampling.logprobs,
        }
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        if stop_strings:
            kwargs.update(stop_strings=list(stop_strings), tokenizer=self.tokenizer)
        out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        new = out.sequences[:, width:].cpu()
        logprobs = None
        if sampling.logprobs and out.logits:
            logits = torch.stack(out.logits, dim=1).float().cpu()  # [B, N, V]
            if not sampling.greedy:
                logits = logits / sampling.temperature
            logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new[:, : logits.shape[1], None]).squeeze(-1)
        results = []
        for r in range(len(prompts)):
            toks, finish = self._cut(new[r].tolist(), stop_strings)
            lp = logprobs[r, : len(toks)].tolist() if logprobs is not None else None
            results.append(GenerationOutput(toks, lp, finish))
        return results

    def _piece(self, token: int) -> str:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.tokenizer.decode([token], skip_special_tokens=False)
        return piece

    def _cut(self, tokens: list[int], stop_strings: Sequence[str]) -> tuple[list[int], str]:
        """Keep the row's real tokens: up to EOS (inclusive) or to the token that completed a stop string."""
        if stop_strings:
            # generate() pads a row that stopped early; find the first token whose text completes a stop string.
            # Only tokens containing a stop string's last character can complete one, so only those are decoded.
            last_chars = {s[-1] for s in stop_strings}
            for k, t in enumerate(tokens):
                if t in self.eos_ids:
                    break
                if not last_chars & set(self._piece(t)):
                    continue
                text = self.tokenizer.decode(tokens[: k + 1], skip_special_tokens=False)
                before = len(self.tokenizer.decode(tokens[:k], skip_special_tokens=False))
                if any((at := text.rfind(s)) >= 0 and at + len(s) > before for s in stop_strings):
                    return tokens[: k + 1], "stop"
        for k, t in enumerate(tokens):
            if t in self.eos_ids:
                return tokens[: k + 1], "eos"
        if self.pad_id not in self.eos_ids:
            while tokens and tokens[-1] == self.pad_id:
                tokens = tokens[:-1]
        return tokens, "length"
