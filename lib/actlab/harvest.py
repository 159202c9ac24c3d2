"""Batched activation collection over a token stream into resumable on-disk shards.

Each shard is written atomically (a temporary file renamed into place), so an
interrupted harvest leaves only whole shards behind; running the same harvest
again skips them and ends with exactly the activations of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from ._progress import tqdm

from .errors import ActlabError
from .hooks import run_with_cache
from .models import LanguageModel, cache_dir


def token_windows(
    lm: LanguageModel,
    texts: Iterable[str],
    seq_len: int,
    n_windows: int,
    prepend_bos: bool = True,
) -> torch.Tensor:
    """Cut a text stream into ``n_windows`` rows of exactly ``seq_len`` token ids.

    Texts are tokenized without special tokens and joined with the EOS token;
    each row starts with BOS when the tokenizer has one (the usual training
    layout), so no padding or attention mask is needed. Raises when the texts
    are too short for the request.
    """
    tok = lm.tokenizer
    bos = tok.bos_token_id if prepend_bos else None
    body = seq_len - (1 if bos is not None else 0)
    separator = [tok.eos_token_id] if tok.eos_token_id is not None else []
    stream: list[int] = []
    needed = n_windows * body
    for text in texts:
        stream.extend(tok(text, add_special_tokens=False)["input_ids"] + separator)
        if len(stream) >= needed:
            break
    if len(stream) < needed:
        raise ActlabError(
            f"the texts give {len(stream):,} tokens but {n_windows} windows of {seq_len} need {needed:,}: "
            "pass more text or ask for fewer windows"
        )
    rows = torch.tensor(stream[:needed], dtype=torch.long).view(n_windows, body)
    if bos is not None:
        rows = torch.cat([torch.full((n_windows, 1), bos, dtype=torch.long), rows], dim=1)
    return rows


@dataclass
class Harvest:
    """Activations of one site over token windows, stored as shards in ``directory``."""

    directory: Path
    meta: dict

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    @property
    def shard_paths(self) -> list[Path]:
        return [self.directory / f"shard_{i:05d}.safetensors" for i in range(self.meta["n_shards"])]

    def shards(self) -> Iterator[torch.Tensor]:
        """Yield each shard's activations, ``(tokens, d_model)``, in order."""
        for shard in self.shard_paths:
            yield load_file(shard)["acts"]

    def load(self) -> torch.Tensor:
        """All activations as one ``(n_tokens, d_model)`` tensor, in stream order."""
        return torch.cat(list(self.shards()))

    def tokens(self) -> torch.Tensor:
        """Token ids of the harvested positions, aligned with :meth:`load`."""
        return load_file(self.directory / "tokens.safetensors")["token_ids"]


def _fingerprint(lm: LanguageModel, windows: torch.Tensor, site: str, drop_first: bool, dtype: torch.dtype,
                 compute_dtype: torch.dtype | None = None) -> str:
    digest = hashlib.sha256()
    digest.update(windows.numpy().tobytes())
    digest.update(f"{lm.name}|{lm.source}|{site}|{drop_first}|{dtype}".encode())
    if compute_dtype is not None:  # absent from the key of an fp32 harvest, so older caches stay valid
        digest.update(f"|weights={compute_dtype}".encode())
    return digest.hexdigest()[:16]


def resolve_compute_dtype(compute_dtype: torch.dtype | str | None, lm: LanguageModel) -> torch.dtype | None:
    """``None`` when the pass runs in the model's own precision, else the dtype it runs in."""
    if compute_dtype == "auto":
        from .sae import fast_bf16

        compute_dtype = torch.bfloat16 if fast_bf16() else None
    if isinstance(compute_dtype, str):
        raise ActlabError(f"compute_dtype must be a torch dtype, None or 'auto', not {compute_dtype!r}")
    return None if compute_dtype in (None, lm.dtype) else compute_dtype


def harvest(
    lm: LanguageModel,
    windows: torch.Tensor,
    site: str,
    out_dir: str | Path | None = None,
    batch_size: int = 16,
    windows_per_shard: int = 64,
    drop_first: bool = True,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    compute_dtype: torch.dtype | str | None = None,
) -> Harvest:
    """Run ``lm`` over ``windows`` (``(n, seq_len)`` token ids) and store ``site`` activations.

    ``drop_first`` leaves out position 0 (BOS / attention sink, whose norm is
    10-100x the others). The forward pass stops after the site, so a middle
    layer costs only the layers below it. ``out_dir`` defaults to a directory
    in the cache named by a fingerprint of model, site and tokens; reusing a
    directory with a different fingerprint is refused.

    ``compute_dtype`` is the precision of the forward pass: ``None`` (the model's own),
    ``torch.bfloat16`` (a bf16 copy of the model, :meth:`LanguageModel.in_precision`) or
    ``"auto"`` (bf16 where the CPU multiplies bf16 natively, with AMX; the model's own
    precision elsewhere, where bf16 is slower). Activations are stored in ``dtype`` either
    way; ``make bench`` prints the speed and the error of bf16 against fp32.
    """
    compute_dtype = resolve_compute_dtype(compute_dtype, lm)
    fingerprint = _fingerprint(lm, windows, site, drop_first, dtype, compute_dtype)
    directory = Path(out_dir) if out_dir is not None else cache_dir() / "harvest" / fingerprint
    directory.mkdir(parents=True, exist_ok=True)
    n_windows, seq_len = windows.shape
    n_shards = -(-n_windows // windows_per_shard)
    kept_per_window = seq_len - (1 if drop_first else 0)
    meta = {
        "fingerprint": fingerprint, "model": lm.name, "site": site, "seq_len": seq_len,
        "n_windows": n_windows, "windows_per_shard": windows_per_shard, "n_shards": n_shards,
        "drop_first": drop_first, "dtype": str(dtype), "d_model": lm.d_model,
        "n_tokens": n_windows * kept_per_window, "compute_dtype": str(compute_dtype or lm.dtype),
    }
    meta_path = directory / "meta.json"
    if meta_path.exists():
        previous = json.loads(meta_path.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise ActlabError(
                f"{directory} holds a different harvest ({previous.get('model')}, {previous.get('site')}): "
                "delete it or pass another out_dir"
            )
    else:
        _atomic_write_text(meta_path, json.dumps(meta, indent=1))
    first = 1 if drop_first else 0
    if not (directory / "tokens.safetensors").exists():
        _atomic_save({"token_ids": windows[:, first:].reshape(-1).contiguous()}, directory / "tokens.safetensors")

    result = Harvest(directory, meta)
    todo = [i for i, p in enumerate(result.shard_paths) if not p.exists()]
    bar = tqdm(total=n_windows * seq_len, unit="tok", unit_scale=True, desc=f"harvest {site}",
               disable=not progress, initial=(n_shards - len(todo)) * windows_per_shard * seq_len)
    runner = lm.in_precision(compute_dtype) if todo and compute_dtype is not None else lm
    with torch.inference_mode():
        for shard_index in todo:
            rows = windows[shard_index * windows_per_shard:(shard_index + 1) * windows_per_shard]
            parts = []
            for start in range(0, len(rows), batch_size):
                batch = rows[start:start + batch_size].to(lm.device)
                acts = run_with_cache(runner, site, input_ids=batch)[site]
                parts.append(acts[:, first:].reshape(-1, acts.shape[-1]).to("cpu", dtype))
                bar.update(batch.numel())
            _atomic_save({"acts": torch.cat(parts).contiguous()}, result.shard_paths[shard_index])
    bar.close()
    return result


@dataclass(frozen=True)
class TextActivations:
    """Activations of a list of texts, text by text, from :func:`per_text`."""

    ids: list[list[int]]                  # token ids of each text as run (BOS first when the tokenizer has one)
    tokens: dict[str, list[torch.Tensor]]  # site -> per text, (kept tokens of the text, ...site shape)
    last: dict[str, torch.Tensor]          # site -> (n_texts, ...site shape), at each text's last token


@torch.no_grad()
def per_text(
    lm: LanguageModel,
    texts: Sequence[str],
    sites: str | Sequence[str],
    drop_first: bool = True,
    max_tokens: int | None = None,
    batch_size: int = 16,
    dtype: torch.dtype = torch.float32,
) -> TextActivations:
    """Run each text on its own (BOS + its tokens, cut to ``max_tokens``) and keep its activations at ``sites``.

    Texts of similar length are batched together with right padding; padding never reaches the
    result. ``drop_first`` leaves position 0 out of ``tokens`` (as in :func:`harvest`); ``last``
    is always the text's last real token.
    """
    names = [sites] if isinstance(sites, str) else list(sites)
    bos = lm.tokenizer.bos_token_id
    ids = [([bos] if bos is not None else []) + lm.tokenizer(t, add_special_tokens=False)["input_ids"][:max_tokens]
           for t in texts]
    first = 1 if drop_first else 0
    if any(len(row) <= first for row in ids):
        raise ActlabError("a text has no tokens left after dropping position 0: drop empty texts first")
    tokens: dict[str, list[torch.Tensor | None]] = {name: [None] * len(ids) for name in names}
    last: dict[str, list[torch.Tensor | None]] = {name: [None] * len(ids) for name in names}
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = lm.pad([ids[i] for i in rows], side="right")
        acts = run_with_cache(lm, names, **batch)
        for name in names:
            for r, i in enumerate(rows):
                n = len(ids[i])
                tokens[name][i] = acts[name][r, first:n].to("cpu", dtype)
                last[name][i] = acts[name][r, n - 1].to("cpu", dtype)
    return TextActivations(ids, {k: list(v) for k, v in tokens.items()},  # type: ignore[arg-type]
                           {k: torch.stack(v) for k, v in last.items()})  # type: ignore[arg-type]


def _atomic_save(tensors: dict[str, torch.Tensor], dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_write_text(dest: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, dest)
