"""Generating and scoring text with activation edits in place, and a handle on the KV cache.

- :func:`generate_with_edits`: batched, left-padded, KV-cached, seeded decoding (greedy or
  sampled) with :func:`actlab.patch` edits active at every step, or from a given position on.
- :class:`PromptCache`: prefill a prompt once, read its keys and values per layer and KV head,
  keep a subset of positions, and decode on from the compressed cache at the true positions.
- :func:`score_candidates`: the teacher-forced log-probability of each candidate continuation of
  one shared prefix, computed from a single prefill of that prefix.
- :func:`residual_norm`: the mean norm of a site's vectors, the unit for steering scales.

Every function takes an actlab :class:`~actlab.models.LanguageModel`. Edits are the same
callables :func:`actlab.patch` takes (``site -> fn(value) -> value``).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import torch
from transformers import DynamicCache

from ._progress import tqdm
from .errors import ActlabError
from .hooks import EditFn, patch, resolve
from .models import LanguageModel

EditStart = int | Literal["generated"] | None


@dataclass(frozen=True)
class Generation:
    """One prompt's continuation: its text (cut before a stop string) and its token ids."""

    prompt: str
    text: str
    token_ids: list[int]
    #: ``"eos"``, ``"stop"`` (a stop string appeared) or ``"length"`` (``max_new_tokens`` reached)
    finish: str


def _as_ids(lm: LanguageModel, prompt: str | Sequence[int], add_special_tokens: bool) -> list[int]:
    if isinstance(prompt, str):
        ids = lm.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
    else:
        ids = [int(i) for i in prompt]
    if not ids:
        raise ValueError("a prompt must have at least one token")
    return ids


def stop_token_ids(lm: LanguageModel) -> set[int]:
    """Token ids that end a generation: the tokenizer's end-of-sequence token and the model's own list."""
    ids = {lm.tokenizer.eos_token_id}
    configured = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, (list, tuple)) else {configured}
    return {int(i) for i in ids if i is not None}


class _PositionGate:
    """Applies edits only at positions at or after each row's start; the decoding loop sets the positions."""

    def __init__(self, edits: Mapping[str, EditFn], starts: torch.Tensor | None) -> None:
        self.edits, self.starts = dict(edits), starts
        self.positions: torch.Tensor | None = None  # (batch, chunk): each row's own token index

    def gated(self) -> dict[str, EditFn]:
        if self.starts is None:
            return self.edits
        return {site: self._gate(edit) for site, edit in self.edits.items()}

    def _gate(self, edit: EditFn) -> EditFn:
        def gated_edit(value: torch.Tensor) -> torch.Tensor | None:
            new = edit(value)
            if new is None:
                return None
            on = self.positions >= self.starts.unsqueeze(1)
            on = on.view(*on.shape, *([1] * (value.ndim - 2))).to(value.device)
            return torch.where(on, new, value)

        return gated_edit


def _edit_starts(edit_from: EditStart, prompt_lengths: torch.Tensor) -> torch.Tensor | None:
    if edit_from is None:
        return None
    if edit_from == "generated":
        return prompt_lengths.clone()
    if not isinstance(edit_from, int):
        raise ValueError(f"edit_from must be None, an int or 'generated', not {edit_from!r}")
    return prompt_lengths + edit_from if edit_from < 0 else torch.full_like(prompt_lengths, edit_from)


def _next_token_logits(logits: torch.Tensor, seen: torch.Tensor, repetition_penalty: float,
                       temperature: float, top_p: float) -> torch.Tensor:
    logits = logits.float()
    if repetition_penalty != 1.0:
        # The penalty of CTRL (Keskar et al. 2019), as Hugging Face applies it: over every token seen so far.
        picked = logits.gather(1, seen)
        picked = torch.where(picked > 0, picked / repetition_penalty, picked * repetition_penalty)
        logits = logits.scatter(1, seen, picked)
    if temperature != 1.0:
        logits = logits / temperature
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        # Keep the smallest set whose mass reaches top_p (the first token always stays).
        drop = cumulative - ordered.softmax(-1) >= top_p
        ordered = ordered.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(1, order, ordered)
    return logits


def generate_with_edits(
    lm: LanguageModel,
    prompts: Sequence[str | Sequence[int]],
    max_new_tokens: int = 32,
    edits: Mapping[str, EditFn] | None = None,
    *,
    edit_from: EditStart = None,
    sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    stop: Sequence[str] = (),
    seed: int = 0,
    batch_size: int = 16,
    add_special_tokens: bool = True,
    progress: bool | None = None,
) -> list[Generation]:
    """Continue each prompt with ``edits`` active during the prompt's pass and every decoding step.

    Prompts are strings (tokenized here; a chat prompt from ``lm.chat_prompt`` already carries its
    special tokens, so pass ``add_special_tokens=False`` for it) or lists of token ids. Batches are
    left-padded and decoded with a KV cache; each row gets its own position ids, so padding never
    shifts a prompt.

    ``edit_from`` limits the edits to positions from one on, counted in each prompt's own tokens:
    ``None`` edits every position, ``k >= 0`` the positions from ``k`` on, ``k < 0`` the last
    ``-k`` prompt tokens and everything generated, ``"generated"`` the generated tokens only.

    Decoding is greedy unless ``sample``; sampling uses ``temperature`` and nucleus ``top_p``, and
    each prompt has its own random generator seeded from ``seed`` and its index, so a prompt's
    sample does not depend on the batch it lands in. ``repetition_penalty`` follows Hugging Face.
    Generation stops at the model's end-of-sequence tokens and, for ``stop`` strings, just before
    the first one (the text is cut there).
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    if temperature <= 0:
        raise ValueError("temperature must be positive: use sample=False for greedy decoding")
    eos = stop_token_ids(lm)
    results: list[Generation] = []
    batches = range(0, len(prompts), batch_size)
    show = progress if progress is not None else len(batches) > 1
    for first in tqdm(batches, desc="generating", unit="batch", disable=not show):
        chunk = list(prompts[first:first + batch_size])
        generators = [torch.Generator().manual_seed(seed * 1_000_003 + first + i) for i in range(len(chunk))]
        results += _generate_batch(lm, chunk, max_new_tokens, edits or {}, edit_from, sample, temperature, top_p,
                                   repetition_penalty, tuple(stop), eos, generators, add_special_tokens)
    return results


def _generate_batch(lm: LanguageModel, prompts: list, max_new_tokens: int, edits: Mapping[str, EditFn],
                    edit_from: EditStart, sample: bool, temperature: float, top_p: float, repetition_penalty: float,
                    stop: tuple[str, ...], eos: set[int], generators: list[torch.Generator],
                    add_special_tokens: bool) -> list[Generation]:
    ids = [_as_ids(lm, p, add_special_tokens) for p in prompts]
    batch = lm.pad(ids, side="left")
    mask = batch["attention_mask"]
    lengths = mask.sum(1)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    gate = _PositionGate(edits, _edit_starts(edit_from, lengths.cpu()))
    rows = len(ids)
    new_tokens: list[list[int]] = [[] for _ in range(rows)]
    finish = ["length"] * rows
    done = torch.zeros(rows, dtype=torch.bool)
    seen = batch["input_ids"].clone()
    cache = DynamicCache()
    step_input = batch["input_ids"]
    with patch(lm.model, gate.gated()), torch.no_grad():
        for _ in range(max_new_tokens):
            gate.positions = positions.cpu()
            out = lm.model(input_ids=step_input, attention_mask=mask, position_ids=positions, cache=cache,
                           use_cache=True)
            cache = out.cache
            logits = _next_token_logits(out.logits[:, -1], seen, repetition_penalty, temperature, top_p)
            if sample:
                probs = logits.softmax(-1).cpu()
                chosen = torch.stack([torch.multinomial(probs[r], 1, generator=generators[r])[0] for r in range(rows)])
            else:
                chosen = logits.argmax(-1).cpu()
            for r in range(rows):
                if done[r]:
                    continue
                token = int(chosen[r])
                if token in eos:
                    done[r], finish[r] = True, "eos"
                    continue
                new_tokens[r].append(token)
                if stop and any(s in lm.tokenizer.decode(new_tokens[r], skip_special_tokens=True) for s in stop):
                    done[r], finish[r] = True, "stop"
            if bool(done.all()):
                break
            step_input = chosen.to(lm.device).unsqueeze(1)
            seen = torch.cat([seen, step_input], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions[:, -1:] + 1
    results = []
    for r, prompt in enumerate(prompts):
        text = lm.tokenizer.decode(new_tokens[r], skip_special_tokens=True)
        if finish[r] == "stop":
            text = text[:min(text.find(s) for s in stop if s in text)]
        label = prompt if isinstance(prompt, str) else lm.tokenizer.decode(ids[r])
        results.append(Generation(prompt=label, text=text, token_ids=new_tokens[r], finish=finish[r]))
    return results


# --- the KV cache of one prompt -----------------------------------------------------------------


def _sliding_window(lm: LanguageModel) -> int | None:
    """The shortest sliding attention window of the model's layers, or None when every layer sees everything."""
    cfg = lm.text_config
    window = getattr(cfg, "sliding_window", None)
    if not window:
        return None
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    if getattr(cfg, "use_sliding_window", True) is False:
        return None
    return int(window)


@dataclass
class PromptCache:
    """The keys and values of one prefilled prompt, per layer, with the positions they came from.

    ``keys[l]`` and ``values[l]`` are ``(n_kv_heads, length, d_head)``; keys carry their rotary
    embedding (as attention uses them). ``positions[l]`` is ``(n_kv_heads, length)``: the original
    token position of every entry, which :meth:`keep` preserves, so a compressed cache decodes
    on at the prompt's true positions. ``next_position`` is where the next token goes and
    ``last_logits`` the logits after the prompt's last token (from the full cache).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    positions: list[torch.Tensor]
    next_position: int
    last_logits: torch.Tensor

    @classmethod
    def prefill(cls, lm: LanguageModel, prompt: str | Sequence[int], add_special_tokens: bool = True,
                edits: Mapping[str, EditFn] | None = None) -> "PromptCache":
        """Run the prompt once and keep its cache."""
        ids = torch.tensor([_as_ids(lm, prompt, add_special_tokens)], device=lm.device)
        with patch(lm.model, edits or {}), torch.no_grad():
            out = lm.model(input_ids=ids, cache=_keep_everything_cache(), use_cache=True)
        layers = _cache_layers(out.cache)
        n = ids.shape[1]
        where = torch.arange(n, device=lm.device)
        return cls(keys=[k[0] for k, _ in layers], values=[v[0] for _, v in layers],
                   positions=[where.expand(k.shape[1], n).clone() for k, _ in layers], next_position=n,
                   last_logits=out.logits[0, -1].float())

    @property
    def length(self) -> int:
        """Entries per layer and KV head (the same for all after :meth:`keep`)."""
        return int(self.keys[0].shape[1])

    def n_bytes(self, dtype_bytes: int | None = None) -> int:
        """Bytes the cache's keys and values occupy (at ``dtype_bytes`` per number, else their own dtype)."""
        size = dtype_bytes or self.keys[0].element_size()
        return sum((k.numel() + v.numel()) * size for k, v in zip(self.keys, self.values))

    def keep(self, kept: Sequence[torch.Tensor]) -> "PromptCache":
        """A cache holding only the entries at ``kept[l]`` in layer ``l``.

        ``kept[l]`` indexes this cache's entries: ``(length_kept,)`` to keep the same positions in
        every KV head, or ``(n_kv_heads, length_kept)`` for a choice per head. Every layer keeps
        the same number of entries per head; the order within a head is up to the caller (attention
        does not depend on it).
        """
        if len(kept) != len(self.keys):
            raise ValueError(f"need one index tensor per layer ({len(self.keys)}), got {len(kept)}")
        keys, values, positions = [], [], []
        for k, v, pos, index in zip(self.keys, self.values, self.positions, kept):
            index = torch.as_tensor(index, dtype=torch.long, device=k.device)
            if index.ndim == 1:
                index = index.expand(k.shape[0], -1)
            if index.shape[0] != k.shape[0]:
                raise ValueError(f"index has {index.shape[0]} rows; the cache has {k.shape[0]} KV heads")
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= k.shape[1]):
                raise ValueError(f"indices must lie in [0, {k.shape[1]})")
            gather = index.unsqueeze(-1).expand(-1, -1, k.shape[-1])
            keys.append(k.gather(1, gather))
            values.append(v.gather(1, gather))
            positions.append(pos.gather(1, index))
        lengths = {k.shape[1] for k in keys}
        if len(lengths) != 1:
            raise ValueError(f"every layer must keep the same number of entries, got {sorted(lengths)}")
        return PromptCache(keys, values, positions, self.next_position, self.last_logits)

    def _dynamic_cache(self) -> DynamicCache:
        return DynamicCache(ddp_cache_data=[(k.unsqueeze(0), v.unsqueeze(0)) for k, v in zip(self.keys, self.values)])

    def _check_window(self, lm: LanguageModel, extra: int) -> None:
        window = _sliding_window(lm)
        if window is not None and self.length < self.next_position and self.next_position + extra > window:
            raise ActlabError(f"{lm.name} has sliding-window attention ({window} tokens): decoding from a "
                              "compressed cache past the window is not supported")

    def _feed(self, lm: LanguageModel, cache: DynamicCache, tokens: Sequence[int], position: int,
              held: int) -> torch.Tensor:
        ids = torch.tensor([list(tokens)], device=lm.device)
        at = torch.arange(position, position + len(tokens), device=lm.device).unsqueeze(0)
        mask = torch.ones(1, held + len(tokens), dtype=torch.long, device=lm.device)
        return lm.model(input_ids=ids, position_ids=at, attention_mask=mask, cache=cache, use_cache=True).logits[0]

    def next_logits(self, lm: LanguageModel, feed: Sequence[int],
                    edits: Mapping[str, EditFn] | None = None) -> torch.Tensor:
        """Logits ``(len(feed), vocab)`` after each of ``feed``'s tokens, run at the positions after the prompt."""
        if not feed:
            raise ValueError("feed at least one token")
        self._check_window(lm, len(feed))
        with patch(lm.model, edits or {}), torch.no_grad():
            return self._feed(lm, self._dynamic_cache(), feed, self.next_position, self.length).float()

    def greedy(self, lm: LanguageModel, max_new_tokens: int, feed: Sequence[int] = (),
               edits: Mapping[str, EditFn] | None = None) -> list[int]:
        """Greedy continuation from this cache (the cache itself is left as it is).

        ``feed`` are tokens to run first, at the positions after the prompt (for example the prompt's
        last token, held back from :meth:`prefill` so that it attends to the compressed cache); with
        no ``feed`` the first token comes from ``last_logits``. Stops at the model's end-of-sequence tokens.
        """
        self._check_window(lm, len(feed) + max_new_tokens)
        eos = stop_token_ids(lm)
        cache = self._dynamic_cache()
        generated: list[int] = []
        position, held = self.next_position, self.length
        step = list(feed)
        logits = None if step else self.last_logits
        with patch(lm.model, edits or {}), torch.no_grad():
            while True:
                if step:
                    logits = self._feed(lm, cache, step, position, held)[-1]
                    position, held = position + len(step), held + len(step)
                if len(generated) == max_new_tokens:
                    break
                token = int(logits.argmax())
                if token in eos:
                    break
                generated.append(token)
                step = [token]
        return generated


def _keep_everything_cache() -> DynamicCache:
    """A cache that keeps every position in every layer.

    The model's own default cache crops sliding-window layers (Gemma-2 and 3) to their window, so its
    layers hold different numbers of entries and no longer line up with positions. Every entry kept,
    the model's sliding-window masks still limit what each query sees, so decoding on top is exact.
    """
    return DynamicCache()


def _cache_layers(cache: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return [(k, v) for k, v in cache]  # a legacy tuple cache


# --- teacher-forced scoring ----------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateScores:
    """Log-probabilities of candidate continuations of one prefix (natural log)."""

    candidates: list[str]
    #: the log-probability of each candidate's tokens, one tensor per candidate
    token_logprobs: list[torch.Tensor]

    @property
    def total(self) -> torch.Tensor:
        """Summed log-probability of each candidate: ``log p(candidate | prefix)``."""
        return torch.stack([t.sum() for t in self.token_logprobs])

    @property
    def mean(self) -> torch.Tensor:
        """Mean log-probability per token (compares candidates of different lengths)."""
        return torch.stack([t.mean() for t in self.token_logprobs])

    def probabilities(self) -> torch.Tensor:
        """The candidates' probabilities renormalised over the candidates (softmax of :attr:`total`)."""
        return self.total.softmax(0)

    @property
    def best(self) -> str:
        return self.candidates[int(self.total.argmax())]


def score_candidates(
    lm: LanguageModel,
    prefix: str | Sequence[int],
    candidates: Sequence[str | Sequence[int]],
    edits: Mapping[str, EditFn] | None = None,
    add_special_tokens: bool = True,
    batch_size: int = 32,
) -> CandidateScores:
    """Teacher-forced log-probabilities of each candidate after ``prefix``, from one prefill of the prefix.

    Candidates given as text are tokenized on their own (no special tokens), so write the leading
    space a word needs (``" Yes"``); the score is that of those exact tokens, which can differ from
    how the tokenizer would split prefix and candidate written together. ``edits`` are active in
    the prefix's pass and the candidates'.
    """
    if not candidates:
        raise ValueError("no candidates to score")
    prefix_ids = _as_ids(lm, prefix, add_special_tokens)
    cand_ids = [_as_ids(lm, c, add_special_tokens=False) for c in candidates]
    labels = [c if isinstance(c, str) else lm.tokenizer.decode(list(c)) for c in candidates]
    n = len(prefix_ids)
    context = nullcontext() if edits is None else patch(lm.model, edits)
    scores: list[torch.Tensor] = []
    with context, torch.no_grad():
        out = lm.model(input_ids=torch.tensor([prefix_ids], device=lm.device), cache=_keep_everything_cache(),
                       use_cache=True)
        first = out.logits[0, -1].float().log_softmax(-1)
        layers = _cache_layers(out.cache)
        for start in range(0, len(cand_ids), batch_size):
            group = cand_ids[start:start + batch_size]
            rest = [ids[:-1] for ids in group]
            width = max(len(r) for r in rest)
            if width == 0:
                scores += [first[ids].reshape(1) for ids in group]
                continue
            rows = len(group)
            batch = lm.pad([r or [lm.pad_token_id] for r in rest], side="right")
            mask = torch.zeros(rows, width, dtype=torch.long, device=lm.device)
            for i, r in enumerate(rest):
                mask[i, :len(r)] = 1
            cache = DynamicCache(ddp_cache_data=[(k.expand(rows, -1, -1, -1).contiguous(),
                                                  v.expand(rows, -1, -1, -1).contiguous()) for k, v in layers])
            step = lm.model(input_ids=batch["input_ids"][:, :width],
                            attention_mask=torch.cat([torch.ones(rows, n, dtype=torch.long, device=lm.device), mask], 1),
                            position_ids=torch.arange(n, n + width, device=lm.device).expand(rows, -1),
                            cache=cache, use_cache=True)
            logprobs = step.logits.float().log_softmax(-1)
            for i, ids in enumerate(group):
                later = [logprobs[i, j, ids[j + 1]] for j in range(len(ids) - 1)]
                scores.append(torch.stack([first[ids[0]], *later]))
    return CandidateScores(candidates=labels, token_logprobs=[s.cpu() for s in scores])


# --- steering units ------------------------------------------------------------------------------


def residual_norm(lm: LanguageModel, site: str, texts: Sequence[str], skip_first: bool = True,
                  max_length: int = 128, batch_size: int = 16) -> float:
    """The mean L2 norm of ``site``'s vectors over the texts' real tokens.

    The unit in which steering strengths are given (``scale * residual_norm * unit_vector``), so that
    strengths compare across layers and models. ``skip_first`` leaves out each text's first token,
    whose norm is often far above the rest (an attention sink).
    """
    if not texts:
        raise ValueError("residual_norm needs at least one text")
    resolve(lm.model, site)
    from .hooks import run_with_cache

    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        batch = lm.tokenize(texts[start:start + batch_size], max_length=max_length)
        acts = run_with_cache(lm, site, **batch)[site].float()
        mask = batch["attention_mask"].bool().clone()
        if skip_first:
            mask[:, 0] = False
        norms = acts.norm(dim=-1)[mask]
        total, count = total + float(norms.sum()), count + int(norms.numel())
    if count == 0:
        raise ValueError("no tokens left to measure (texts of one token with skip_first=True?)")
    return total / count
