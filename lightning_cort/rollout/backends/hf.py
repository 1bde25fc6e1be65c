"""Generation with a Hugging Face model: batched ``generate`` (KV cache within a call), or a decode stream that keeps
every sequence's KV cache across tool calls (continuous batching)."""

from __future__ import annotations

import inspect
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from lightning_cort.rollout.backends.base import BackendFinish, GenerationOutput, SamplingConfig

try:  # the per-layer cache API of transformers 5 (the decode stream needs it; ``generate`` does not)
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - older transformers
    DynamicLayer = object  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class HFBackend:
    """Batched ``model.generate`` over token-id prompts, cut per row at EOS or at the token completing a stop string.

    Args:
        model: A causal LM (plain, peft-wrapped or quantized).
        tokenizer: Its tokenizer (for stop strings and decoding).
        batch_size: Rows per ``generate`` call, and sequences decoded at once by :meth:`open_stream` (``0``: all).
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 0) -> None:
        from lightning_cort.models.policy import contiguous_head_inputs

        self.model = contiguous_head_inputs(model)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # The model's own stop tokens (its generation config: Qwen2.5-Instruct lists <|im_end|> and <|endoftext|>),
        # and the tokenizer's end of sequence.
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        ids = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        self.eos_ids: set[int] = {int(i) for i in (*ids, tokenizer.eos_token_id) if i is not None} or {-1}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids))
        self._pieces: dict[int, str] = {}
        self._streamable: bool | None = None

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

    def open_stream(self, sampling: SamplingConfig) -> HFDecodeStream:
        """A continuous-batching :class:`HFDecodeStream` on this model (the engine's ``continuous`` schedule)."""
        return HFDecodeStream(self, sampling, capacity=self.batch_size or None)

    @property
    def streamable(self) -> bool:
        """Whether :meth:`open_stream` can serve this model: every layer of its KV cache is full attention (the
        engine's ``auto`` schedule falls back to ``async`` otherwise)."""
        if self._streamable is None:
            from transformers import DynamicCache

            config = self.model.config
            config = config.get_text_config() if hasattr(config, "get_text_config") else config
            try:
                layers = DynamicCache(config=config).layers
            except Exception:  # an older transformers, or a config DynamicCache cannot read: do not guess
                layers = []
            self._streamable = bool(layers) and all(type(layer) is DynamicLayer for layer in layers)
        return self._streamable

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


@dataclass(eq=False)
class _Sequence:
    handle: int
    pending: list[int]  # tokens to encode at the next step (not in the KV cache yet)
    length: int = 0  # tokens in the KV cache
    generating: bool = False
    tokens: list[int] = field(default_factory=list)  # sampled in the current round
    logprobs: list[float] = field(default_factory=list)
    max_new: int = 0
    stops: tuple[str, ...] = ()
    last_chars: frozenset[str] = frozenset()
    rng: random.Random | None = None  # this sequence's own random stream (sampling, not greedy)


class HFDecodeStream:
    """Continuous batching on a Hugging Face model: one batch, one forward per step, every sequence at its own place.

    All sequences share one KV cache whose columns are steps, not positions: a step appends one column block to every
    row, holding a decoding sequence's last token, a resuming sequence's forced tokens (right-aligned), or padding
    for a paused sequence (masked out). Positions are counted per sequence, so each one sees exactly its own tokens,
    as if decoded alone. A paused sequence (its code running) costs one masked column per step and nothing else; when
    it resumes, only its new tokens are encoded. Released sequences' rows are reused by new ones, and when the cache
    is ``compact_ratio`` times wider than the longest sequence (or a quarter of the rows are free), rows and columns
    are compacted by one gather. Models whose cache has sliding-window (or other non-full-attention) layers are
    refused: a window over steps is not a window over a sequence's tokens (``HFBackend.streamable`` tells).

    Sampling matches :class:`HFBackend`: temperature, then top-k, then top-p; log-probabilities under
    ``logits / temperature`` (raw logits when greedy); a round ends at EOS, at the token that completes one of its stop
    strings, or at its token budget.

    Args:
        backend: The :class:`HFBackend` whose model, tokenizer and EOS ids are used.
        sampling: How to sample (``max_new_tokens`` is ignored: each round has its own).
        capacity: Most sequences held at once (``None``: no limit).
        compact_ratio: Compact when the cache is wider than this many times the longest sequence (plus 64 columns).
    """

    def __init__(
        self, backend: HFBackend, sampling: SamplingConfig, capacity: int | None = None, compact_ratio: float = 1.25
    ) -> None:
        if not backend.streamable:
            raise ValueError(
                f"{type(backend.model).__name__}'s KV cache is not full attention in every layer (sliding windows?): "
                "the decode stream cannot serve it; use RolloutConfig(schedule='async')"
            )
        self.backend = backend
        self.model = backend.model
        self.sampling = sampling
        self.capacity = capacity
        self.compact_ratio = compact_ratio
        self.device = next(self.model.parameters()).device
        self._rows: list[_Sequence | None] = []  # batch row -> sequence (None: free)
        self._by_handle: dict[int, int] = {}  # handle -> batch row
        self._next_handle = 0
        self._cache: object | None = None
        self._mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)  # [rows, columns] of the cache
        self.compactions = 0  # statistics, for benchmarks and tests
        self.steps = 0
        self.forwards = 0
        self.fed_tokens = 0  # tokens encoded: prompts, forced output, and each sampled token once
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model  # peft
        # transformers renamed ``past_key_values`` to ``cache`` during 5.x; pass whichever this version takes.
        self._cache_name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    # -- the DecodeStream protocol ----------------------------------------------------------------------------------
    @property
    def generating(self) -> int:
        return sum(1 for q in self._rows if q is not None and q.generating)

    @property
    def size(self) -> int:
        return len(self._by_handle)

    def add(self, prompt_ids: Sequence[int]) -> int:
        if not prompt_ids:
            raise ValueError("a sequence needs at least one prompt token")
        if self.capacity is not None and self.size >= self.capacity:
            raise RuntimeError(f"the stream is full ({self.capacity} sequences): release one first")
        handle = self._next_handle
        self._next_handle += 1
        seq = _Sequence(handle, list(prompt_ids))
        if not self.sampling.greedy:
            # Its own random stream, seeded from the global one when it joins: what a sequence samples does not
            # depend on which others share its steps (they come and go as their code runs), so a rollout is
            # reproducible from the global seed however long the sandbox takes.
            seq.rng = random.Random(int(torch.randint(0, 2**62, (1,)).item()))
        free = next((r for r, q in enumerate(self._rows) if q is None), None)
        if free is None:
            free = len(self._rows)
            self._rows.append(None)
            self._grow(1)
        else:
            self._mask[free] = 0  # the previous occupant's columns are invisible to the new sequence
        self._rows[free] = seq
        self._by_handle[handle] = free
        return handle

    def resume(self, handle: int, forced_ids: Sequence[int], max_new_tokens: int, stop_strings: Sequence[str]) -> None:
        seq = self._seq(handle)
        if seq.generating:
            raise RuntimeError(f"sequence {handle} is already in a round")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        seq.pending.extend(int(t) for t in forced_ids)
        seq.generating = True
        seq.tokens, seq.logprobs = [], []
        seq.max_new = max_new_tokens
        seq.stops = tuple(stop_strings)
        seq.last_chars = frozenset(s[-1] for s in seq.stops if s)

    def drop_last(self, handle: int) -> None:
        seq = self._seq(handle)
        if seq.generating or not seq.tokens or seq.pending != seq.tokens[-1:]:
            raise RuntimeError(f"sequence {handle} has no sampled token waiting to be encoded")
        seq.pending = []  # the last sampled token is encoded at the next step: not encoding it drops it
        seq.tokens.pop()

    def release(self, handle: int) -> None:
        row = self._by_handle.pop(handle)
        self._rows[row] = None
        if self._mask.shape[1]:
            self._mask[row] = 0

    @torch.no_grad()
    def step(self) -> list[tuple[int, GenerationOutput]]:
        if not any(q is not None and q.generating for q in self._rows):
            return []
        self._maybe_compact()
        live = [(r, q) for r, q in enumerate(self._rows) if q is not None and q.generating]
        encode = [(r, q) for r, q in live if len(q.pending) > 1]  # prompts, or a last token plus forced output
        decode = [(r, q) for r, q in live if len(q.pending) == 1]
        sampled: list[tuple[list[tuple[int, _Sequence]], torch.Tensor]] = []
        if encode and (self._layers() is None or 2 * len(encode) >= len(self._rows)):
            sampled.append((live, self._forward_all(live)))  # most rows encode anyway: one padded forward
        else:
            # Few rows encode several tokens: only they go through the model at that width (on a copy of their
            # rows of the cache), and the rest decode one token each in a second forward; padding every row to the
            # widest resume would cost (rows x width) tokens of compute. Likewise, when most rows are paused (their
            # code running), only the decoding ones go through the model.
            for group in _length_groups(encode):
                sampled.append((group, self._forward_rows(group)))
            if decode and 4 * len(decode) <= len(self._rows) and self._layers() is not None:
                sampled.append((decode, self._forward_rows(decode)))  # most rows wait on tools: skip them
            elif decode:
                sampled.append((decode, self._forward_all(decode)))
        self.steps += 1
        ended: list[tuple[int, GenerationOutput]] = []
        for group, logits in sampled:
            uniforms = None
            if not self.sampling.greedy:
                draws = [q.rng.random() for _, q in group]  # type: ignore[union-attr]
                uniforms = torch.tensor(draws, dtype=torch.float32, device=logits.device)[:, None]  # [rows, 1]
            tokens, logprobs = _sample(logits.float(), self.sampling, uniforms)
            tokens_list = tokens.tolist()
            lp_list = logprobs.tolist() if logprobs is not None else None
            for k, (_, q) in enumerate(group):
                token = tokens_list[k]
                q.pending = [token]  # encoded at the next step (or at the resume after a pause)
                q.tokens.append(token)
                if lp_list is not None:
                    q.logprobs.append(lp_list[k])
                finish = self._finish(q, token)
                if finish is not None:
                    q.generating = False
                    lp = list(q.logprobs) if lp_list is not None else None
                    ended.append((q.handle, GenerationOutput(list(q.tokens), lp, finish)))
        return ended

    def _inputs(self, feed: list[tuple[int, _Sequence]], rows: list[int]) -> tuple[torch.Tensor, ...]:
        """Input ids, new mask columns and positions for batch ``rows``: the ``feed`` sequences' pending tokens,
        right-aligned (so every fed sequence's last token is in the last column), padding elsewhere."""
        width = max(len(q.pending) for _, q in feed)
        at = {r: k for k, r in enumerate(rows)}
        ids = torch.full((len(rows), width), self.backend.pad_id, dtype=torch.long)
        new_mask = torch.zeros(len(rows), width, dtype=torch.long)
        positions = torch.zeros(len(rows), width, dtype=torch.long)
        for r in rows:
            q = self._rows[r]
            if q is not None:
                positions[at[r]] = q.length  # padding columns: any position, they are masked
        for r, q in feed:
            n = len(q.pending)
            ids[at[r], width - n :] = torch.tensor(q.pending, dtype=torch.long)
            new_mask[at[r], width - n :] = 1
            positions[at[r], width - n :] = torch.arange(q.length, q.length + n)
            q.length += n
            self.fed_tokens += n
        return ids.to(self.device), new_mask.to(self.device), positions.to(self.device)

    def _run(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: object) -> torch.Tensor:
        self.forwards += 1
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_name: cache},
        )
        return out.logits[:, -1]

    def _forward_all(self, feed: list[tuple[int, _Sequence]]) -> torch.Tensor:
        """One forward over every batch row (the others get masked padding); the ``feed`` rows' next-token logits."""
        ids, new_mask, positions = self._inputs(feed, list(range(len(self._rows))))
        mask = torch.cat([self._mask, new_mask], dim=1)
        logits = self._run(ids, mask, positions, self._cache_object())
        self._mask = mask
        return logits[torch.tensor([r for r, _ in feed], device=self.device)]

    def _forward_rows(self, feed: list[tuple[int, _Sequence]]) -> torch.Tensor:
        """A forward over the ``feed`` rows only, on a copy of their cache rows; the new columns are then added to
        the shared cache (masked for every other row)."""
        from transformers import DynamicCache

        layers = self._layers()
        assert layers is not None
        rows = [r for r, _ in feed]
        index = torch.tensor(rows, device=self.device)
        ids, new_mask, positions = self._inputs(feed, rows)
        old = self._mask.shape[1]
        sub = DynamicCache(config=self._text_config())
        for i, layer in enumerate(layers):
            sub.update(layer.keys[index], layer.values[index], i)
        logits = self._run(ids, torch.cat([self._mask[index], new_mask], dim=1), positions, sub)
        for layer, done in zip(layers, sub.layers):
            k, v = layer.keys, layer.values
            width = new_mask.shape[1]
            layer.append(
                k.new_zeros(k.shape[0], k.shape[1], width, k.shape[3]),
                v.new_zeros(v.shape[0], v.shape[1], width, v.shape[3]),
            )
            layer.keys[index, :, old:] = done.keys[:, :, old:]  # views: written into the layer's buffer
            layer.values[index, :, old:] = done.values[:, :, old:]
        self._mask = torch.cat([self._mask, self._mask.new_zeros(len(self._rows), new_mask.shape[1])], dim=1)
        self._mask[index, old:] = new_mask
        return logits

    # -- internals -------------------------------------------------------------------------------------------------
    def _seq(self, handle: int) -> _Sequence:
        try:
            seq = self._rows[self._by_handle[handle]]
        except KeyError:
            raise KeyError(f"no sequence with handle {handle} in this stream") from None
        assert seq is not None
        return seq

    def _finish(self, q: _Sequence, token: int) -> BackendFinish | None:
        """How the round ends with ``token`` (``HFBackend._cut``'s rules, token by token), or ``None``."""
        if token in self.backend.eos_ids:
            return "eos"
        if q.stops and q.last_chars & set(self.backend._piece(token)):
            tok = self.backend.tokenizer
            text = tok.decode(q.tokens, skip_special_tokens=False)
            before = len(tok.decode(q.tokens[:-1], skip_special_tokens=False))
            if any((at := text.rfind(s)) >= 0 and at + len(s) > before for s in q.stops):
                return "stop"
        if len(q.tokens) >= q.max_new:
            return "length"
        return None

    def _cache_object(self) -> object:
        if self._cache is None:
            from transformers import DynamicCache

            cache = DynamicCache(config=self._text_config())
            if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
                cache.layers = [_BufferLayer() for _ in cache.layers]  # full attention: appendable in place
            self._cache = cache
        return self._cache

    def _text_config(self) -> object:
        config = self.model.config
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    def _layers(self) -> list[_BufferLayer] | None:
        """The cache's layers once filled, when they are full-attention layers whose rows and columns can be
        gathered and appended to; ``None`` otherwise (then every step is one padded forward over all rows and
        nothing is compacted)."""
        layers = getattr(self._cache, "layers", None)
        if not layers or not all(isinstance(layer, _BufferLayer) and layer.filled for layer in layers):
            return None
        return list(layers)

    def _grow(self, n: int) -> None:
        """Add ``n`` empty rows to the mask and to the cache."""
        self._mask = torch.cat([self._mask, self._mask.new_zeros(n, self._mask.shape[1])])
        if self._cache is None or not self._mask.shape[1]:
            return
        layers = self._layers()
        if layers is None:
            raise RuntimeError(
                "this model's KV cache cannot take new rows mid-stream; open the stream with no capacity limit"
            )
        for layer in layers:
            k, v = layer.keys, layer.values
            layer.assign(torch.cat([k, k.new_zeros(n, *k.shape[1:])]), torch.cat([v, v.new_zeros(n, *v.shape[1:])]))

    def _maybe_compact(self) -> None:
        """Drop free rows and the columns no sequence can see, when that would shrink the cache enough."""
        if self._cache is None or not self._mask.shape[1]:
            return
        held = [q.length for q in self._rows if q is not None]
        longest = max(held, default=0)
        free = len(self._rows) - len(held)
        if self._mask.shape[1] <= self.compact_ratio * longest + 64 and free * 4 < max(4, len(self._rows)):
            return
        layers = self._layers()
        if layers is None:
            return
        keep = [r for r, q in enumerate(self._rows) if q is not None]
        mask = self._mask[keep]
        counts = mask.sum(dim=1)
        width = int(counts.max()) if keep else 0
        # For each kept row, its visible columns right-aligned in ``width`` columns (left slots point at column 0).
        order = torch.argsort(mask, dim=1, stable=True)  # visible columns last, in their order
        index = order[:, mask.shape[1] - width :]
        new_mask = torch.gather(mask, 1, index)
        keep_t = torch.tensor(keep, device=self._mask.device)
        for layer in layers:
            kv = []
            for t in (layer.keys[keep_t], layer.values[keep_t]):
                gather = index[:, None, :, None].expand(t.shape[0], t.shape[1], width, t.shape[3])
                kv.append(torch.gather(t, 2, gather.to(t.device)))
            layer.assign(*kv)
        self._mask = new_mask
        self._rows = [self._rows[r] for r in keep]
        self._by_handle = {q.handle: r for r, q in enumerate(self._rows) if q is not None}
        self.compactions += 1


class _BufferLayer(DynamicLayer):
    """A full-attention KV cache layer that appends new columns into spare room of its storage instead of
    concatenating the whole cache at every step (what ``DynamicLayer`` does: a copy of the cache per token, which
    dominated decoding here). ``keys`` / ``values`` are views of the filled part; the storage grows by half when full.
    """

    def __init__(self) -> None:
        super().__init__()
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._n = 0

    @property
    def filled(self) -> bool:
        return self._k is not None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.append(key_states, value_states)
        return self.keys, self.values

    def assign(self, keys: torch.Tensor, values: torch.Tensor, at_least: int = 0) -> None:
        """Hold exactly ``keys`` / ``values`` (copied into new storage with room for ``at_least`` more columns, and
        at least half again as many)."""
        n = keys.shape[-2]
        room = n + max(64, n // 2, at_least)
        self._k = keys.new_empty(*keys.shape[:2], room, keys.shape[3])
        self._v = values.new_empty(*values.shape[:2], room, values.shape[3])
        self._k[:, :, :n] = keys
        self._v[:, :, :n] = values
        self._n = n
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]
        self.device, self.is_initialized = keys.device, True

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Add columns (every row gets ``keys.shape[-2]`` more)."""
        if self._k is None or self._v is None:
            self.assign(keys, values)
            return
        n, t = self._n, keys.shape[-2]
        if n + t > self._k.shape[-2]:
            self.assign(self.keys, self.values, at_least=t)
        assert self._k is not None and self._v is not None
        self._k[:, :, n : n + t] = keys
        self._v[:, :, n : n + t] = values
        self._n = n + t
        self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]

    def reset(self) -> None:
        self._k = self._v = None
        self._n = 0
        super().reset()


def _length_groups(feed: list[tuple[int, _Sequence]]) -> list[list[tuple[int, _Sequence]]]:
    """Split sequences to encode into groups of similar length (longest at most twice the shortest), so that padding
    to the group's longest wastes at most half of a forward."""
    groups: list[list[tuple[int, _Sequence]]] = []
    for item in sorted(feed, key=lambda x: len(x[1].pending)):
        if groups and len(item[1].pending) <= 2 * len(groups[-1][0][1].pending):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _sample(
    logits: torch.Tensor, sampling: SamplingConfig, uniforms: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample one token per row of ``logits`` ``[rows, vocab]`` as ``generate`` does; log-probabilities under
    ``logits / temperature`` (unfiltered) when ``sampling.logprobs``. ``uniforms`` ``[rows, 1]`` in ``[0, 1)`` are the
    rows' random draws (default: from the global generator)."""
    if sampling.greedy:
        tokens = logits.argmax(dim=-1)
        scaled = logits
    else:
        scaled = logits / sampling.temperature
        filtered = scaled
        if sampling.top_k and sampling.top_k < scaled.shape[-1]:
            kth = torch.topk(filtered, sampling.top_k, dim=-1).values[:, -1:]
            filtered = filtered.masked_fill(filtered < kth, float("-inf"))
        if sampling.top_p < 1.0:
            sorted_logits, order = torch.sort(filtered, dim=-1, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            drop = probs.cumsum(dim=-1) - probs > sampling.top_p  # the mass before the token already exceeds top-p
            drop[:, 0] = False
            filtered = filtered.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))
        # Inverse-CDF sampling: the same distribution as torch.multinomial, whose CPU kernel took 37 ms per step for
        # 16 rows of Qwen2's 151,936 tokens (a cumulative sum and a binary search take well under 10 ms).
        cdf = torch.softmax(filtered.float(), dim=-1).cumsum(dim=-1)
        if uniforms is None:
            uniforms = torch.rand(cdf.shape[0], 1, device=cdf.device)
        u = uniforms * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
    if not sampling.logprobs:
        return tokens, None
    return tokens, torch.log_softmax(scaled, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
