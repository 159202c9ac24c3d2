"""Named activation sites that mean the same on every supported architecture.

Sites (``L`` is a 0-based layer index):

=================  =============================================================
``resid_pre.L``    residual stream entering block L (``hidden_states[L]``)
``resid_post.L``   residual stream leaving block L (``hidden_states[L+1]`` except
                   after the last block, where Hugging Face applies the final norm)
``attn_out.L``     what attention adds to the residual stream (after Gemma's
                   post-attention norm)
``mlp_out.L``      what the MLP adds to the residual stream (after Gemma's
                   post-feedforward norm)
``mlp_in.L``       what the MLP reads: its input, after the pre-MLP norm (Llama's
                   ``post_attention_layernorm``, Gemma's ``pre_feedforward_layernorm``,
                   GPT-2's ``ln_2``), ``(batch, seq, d_model)``
``mlp_act.L``      MLP neurons: the input of the down projection, ``(batch, seq, d_mlp)``
``attn_heads.L``   per-head attention outputs before the output projection,
                   ``(batch, seq, n_heads, d_head)``
``q.L``            queries, ``(batch, seq, n_heads, d_head)``: the query projection's
                   output, before rotary embeddings (and before Gemma 3's query norm)
``k.L``, ``v.L``   keys and values, ``(batch, seq, n_kv_heads, d_head)``, likewise
                   before rotary embeddings (keys) and Gemma 3's key norm
``attn_pattern.L`` attention probabilities, ``(batch, n_heads, query, key)``; read-only.
                   Hooking it switches the model to eager attention while the hook
                   is active (fused kernels never form the pattern)
``final_norm``     output of the final norm (the input of the unembedding)
``logits``         the model's output logits
``module:PATH``    the output of any submodule, by its dotted name (an escape hatch)
=================  =============================================================

Supported: Llama (and SmolLM2), Gemma 2, Gemma 3, Qwen2, Mistral, GPT-2 and
GPT-NeoX, and anything laid out like them. Every hook is removed when its
context exits, also on an exception.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from .errors import UnknownSiteError

EditFn = Callable[[torch.Tensor], torch.Tensor]

LAYER_SITES = ("resid_pre", "resid_post", "attn_out", "mlp_in", "mlp_out", "mlp_act", "attn_heads", "q", "k", "v",
               "attn_pattern")
_QKV_PROJ = {"q": "q_proj", "k": "k_proj", "v": "v_proj"}
# Fused projections: GPT-2's c_attn is [q | k | v]; GPT-NeoX's query_key_value is, per head, [q | k | v].
_FUSED_QKV = {"c_attn": "blocks", "query_key_value": "per_head"}
GLOBAL_SITES = ("final_norm", "logits")

_LAYER_LIST_PATHS = ("model.layers", "model.language_model.layers", "language_model.model.layers",
                     "transformer.h", "gpt_neox.layers", "layers", "h")
_ATTN_NAMES = ("self_attn", "attn", "attention")
_ATTN_OUT_PROJ = ("o_proj", "c_proj", "dense", "out_proj")
_MLP_NAMES = ("mlp", "feed_forward")
_MLP_DOWN_PROJ = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2")
_FINAL_NORM_PATHS = ("model.norm", "model.language_model.norm", "transformer.ln_f",
                     "gpt_neox.final_layer_norm", "norm")


@dataclass(frozen=True)
class HookPoint:
    """Where a site lives: a module, and whether its input (``pre``) or output is meant."""

    site: str
    module: nn.Module
    pre: bool
    layer: int | None = None
    n_heads: int | None = None
    #: for a slice of a fused q/k/v projection: (layout, which of q/k/v, n_heads, d_head)
    fused: tuple[str, int, int, int] | None = None
    #: the attention probabilities (the second output of the attention module), read-only
    pattern_of: nn.Module | None = None


def _unwrap(model: nn.Module) -> nn.Module:
    # Accept an actlab LanguageModel as well as a bare Hugging Face model.
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module) and hasattr(model, "tokenizer"):
        return inner
    return model


def _get_path(root: nn.Module, path: str) -> nn.Module | None:
    node: object = root
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node if isinstance(node, nn.Module) else None


def _first_child(module: nn.Module, names: Iterable[str]) -> nn.Module | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


def _text_config(model: nn.Module):  # noqa: ANN202
    cfg = model.config
    return getattr(cfg, "text_config", None) or cfg


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks, found by the usual attribute paths."""
    model = _unwrap(model)
    for path in _LAYER_LIST_PATHS:
        layers = _get_path(model, path)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise UnknownSiteError(f"cannot find the decoder layers of {type(model).__name__}: use 'module:PATH' sites")


def n_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def site_names(model: nn.Module) -> list[str]:
    """Every named site of a model, layer by layer."""
    count = n_layers(model)
    return [f"{kind}.{layer}" for layer in range(count) for kind in LAYER_SITES] + list(GLOBAL_SITES)


def resolve(model: nn.Module, site: str) -> HookPoint:
    """Map a site name to the module and hook kind that implement it on this model."""
    model = _unwrap(model)
    if site.startswith("module:"):
        module = _get_path(model, site.removeprefix("module:"))
        if module is None:
            raise UnknownSiteError(f"no submodule '{site[7:]}' in {type(model).__name__}")
        return HookPoint(site, module, pre=False)
    if site == "logits":
        return HookPoint(site, model, pre=False)
    if site == "final_norm":
        for path in _FINAL_NORM_PATHS:
            norm = _get_path(model, path)
            if norm is not None:
                return HookPoint(site, norm, pre=False)
        raise UnknownSiteError(f"cannot find the final norm of {type(model).__name__}")
    kind, _, index = site.partition(".")
    layers = decoder_layers(model)
    if kind not in LAYER_SITES or not index.isdigit() or int(index) >= len(layers):
        raise UnknownSiteError(
            f"unknown site '{site}': use one of {', '.join(k + '.L' for k in LAYER_SITES)} with "
            f"0 <= L < {len(layers)}, {', '.join(GLOBAL_SITES)}, or module:PATH"
        )
    layer = int(index)
    block = layers[layer]
    if kind == "resid_pre":
        return HookPoint(site, block, pre=True, layer=layer)
    if kind == "resid_post":
        return HookPoint(site, block, pre=False, layer=layer)
    attn = _first_child(block, _ATTN_NAMES)
    mlp = _first_child(block, _MLP_NAMES)
    # Gemma 2/3 normalise each sublayer's output before the residual add.
    sandwich_norms = hasattr(block, "post_feedforward_layernorm")
    if kind == "attn_out":
        module = block.post_attention_layernorm if sandwich_norms else attn
        return _checked(site, module, pre=False, layer=layer)
    if kind == "mlp_out":
        module = block.post_feedforward_layernorm if sandwich_norms else mlp
        return _checked(site, module, pre=False, layer=layer)
    if kind == "mlp_in":
        return _checked(site, mlp, pre=True, layer=layer)
    if kind == "mlp_act":
        return _checked(site, mlp and _first_child(mlp, _MLP_DOWN_PROJ), pre=True, layer=layer)
    cfg = _text_config(model)
    heads = int(getattr(cfg, "num_attention_heads", 0) or cfg.n_head)
    if kind == "attn_heads":
        return _checked(site, attn and _first_child(attn, _ATTN_OUT_PROJ), pre=True, layer=layer, n_heads=heads)
    if kind == "attn_pattern":
        return HookPoint(site, _checked(site, attn, pre=False).module, pre=False, layer=layer, pattern_of=model)
    d_head = int(getattr(cfg, "head_dim", None) or (getattr(cfg, "hidden_size", None) or cfg.n_embd) // heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    projection = attn and getattr(attn, _QKV_PROJ[kind], None)
    if isinstance(projection, nn.Module):
        return HookPoint(site, projection, pre=False, layer=layer, n_heads=heads if kind == "q" else kv_heads)
    for name, layout in _FUSED_QKV.items():
        fused = attn and getattr(attn, name, None)
        if isinstance(fused, nn.Module):
            return HookPoint(site, fused, pre=False, layer=layer, n_heads=heads,
                             fused=(layout, "qkv".index(kind), heads, d_head))
    return _checked(site, None, pre=False)


def _checked(site: str, module: nn.Module | None, **kwargs: object) -> HookPoint:
    if module is None:
        raise UnknownSiteError(f"site '{site}' has no matching module on this architecture: use 'module:PATH'")
    return HookPoint(site, module, **kwargs)  # type: ignore[arg-type]


# --- reading and writing a hooked value -------------------------------------------------


def _output_tensor(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple):
        return output[0]
    return output.logits  # a ModelOutput


def _replace_output(output: object, value: torch.Tensor) -> object:
    if isinstance(output, torch.Tensor):
        return value
    if isinstance(output, tuple):
        return (value, *output[1:])
    output.logits = value
    return output


def _input_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    for key in ("hidden_states", "input", "x"):
        if key in kwargs:
            return kwargs[key]
    raise UnknownSiteError("cannot find the input tensor of a pre-hooked module")


def _replace_input(args: tuple, kwargs: dict, value: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (value, *args[1:]), kwargs
    for key in ("hidden_states", "input", "x"):
        if key in kwargs:
            return args, {**kwargs, key: value}
    raise UnknownSiteError("cannot find the input tensor of a pre-hooked module")


def _fused_part(point: HookPoint, value: torch.Tensor) -> torch.Tensor:
    layout, part, heads, d_head = point.fused  # type: ignore[misc]
    if layout == "blocks":
        return value.unflatten(-1, (3, heads, d_head))[..., part, :, :]
    return value.unflatten(-1, (heads, 3, d_head))[..., part, :]


def _to_view(point: HookPoint, value: torch.Tensor) -> torch.Tensor:
    if point.fused is not None:
        return _fused_part(point, value)
    if point.n_heads is None:
        return value
    return value.unflatten(-1, (point.n_heads, value.shape[-1] // point.n_heads))


def _from_view(point: HookPoint, value: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    if point.fused is not None:
        merged = whole.clone()
        _fused_part(point, merged).copy_(value)
        return merged
    return value if point.n_heads is None else value.flatten(-2)


class _EagerAttention:
    """Switches a model to eager attention until ``remove()`` (the pattern exists only there)."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.previous = model, model.config._attn_implementation
        if self.previous != "eager":
            model.set_attn_implementation("eager")

    def remove(self) -> None:
        if self.previous != "eager":
            self.model.set_attn_implementation(self.previous)


def _register(point: HookPoint, fn: Callable[[torch.Tensor], torch.Tensor | None]):  # noqa: ANN202
    """Register ``fn`` on the site's value; a non-None return replaces the value.

    Returns the handles to remove afterwards (a pattern site also holds eager attention).
    """
    if point.pattern_of is not None:
        eager = _EagerAttention(point.pattern_of)

        def pattern_hook(module: nn.Module, args: tuple, output: object) -> None:
            if fn(output[1]) is not None:
                raise UnknownSiteError(f"'{point.site}' is read-only: edit q, k, v or attn_heads instead")

        return [eager, point.module.register_forward_hook(pattern_hook)]
    if point.pre:

        def pre_hook(module: nn.Module, args: tuple, kwargs: dict):  # noqa: ANN202
            whole = _input_tensor(args, kwargs)
            new = fn(_to_view(point, whole))
            return None if new is None else _replace_input(args, kwargs, _from_view(point, new, whole))

        return [point.module.register_forward_pre_hook(pre_hook, with_kwargs=True)]

    def hook(module: nn.Module, args: tuple, output: object):  # noqa: ANN202
        whole = _output_tensor(output)
        new = fn(_to_view(point, whole))
        return None if new is None else _replace_output(output, _from_view(point, new, whole))

    return [point.module.register_forward_hook(hook)]


class _StopForward(Exception):
    """Raised inside a hook once every requested site is captured."""


@contextmanager
def capture(
    model: nn.Module,
    sites: str | Iterable[str],
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    keep_grad: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the value of each site during the forward passes inside the block.

    Yields a dict filled as the model runs: ``acts[site]`` holds the value of
    the last pass (detached unless ``keep_grad``; cast to ``dtype`` and moved to
    ``device`` when given).
    """
    names = [sites] if isinstance(sites, str) else list(sites)
    points = [resolve(model, s) for s in names]
    acts: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for point in points:

            def record(value: torch.Tensor, site: str = point.site) -> None:
                kept = value if keep_grad else value.detach()
                if dtype is not None or device is not None:
                    kept = kept.to(device=device, dtype=dtype)
                acts[site] = kept

            handles += _register(point, record)
        yield acts
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def patch(model: nn.Module, edits: Mapping[str, EditFn]) -> Iterator[None]:
    """Replace each site's value by ``edit(value)`` during the forward passes inside the block.

    An edit receives the site's tensor (for ``attn_heads``, shaped
    ``(batch, seq, n_heads, d_head)``) and returns a tensor of the same shape.
    An edit that returns ``None`` leaves the value as it is: that is how to
    observe a site (stream statistics, say) without storing its activations.
    """
    handles = []
    try:
        for site, edit in edits.items():
            handles += _register(resolve(model, site), edit)
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_with_cache(
    model: nn.Module,
    sites: str | Iterable[str],
    stop_early: bool = True,
    dtype: torch.dtype | None = None,
    **inputs: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """One forward pass that returns the activations at ``sites``.

    With ``stop_early`` the pass ends as soon as every site is recorded, so
    reading a middle layer costs neither the layers above it nor the output head.
    """
    names = [sites] if isinstance(sites, str) else list(sites)
    hf_model = _unwrap(model)
    stop_handle = None
    with capture(hf_model, names, dtype=dtype) as acts, torch.no_grad():
        if stop_early and "logits" not in names:
            want = set(names)

            def stop_when_done(module: nn.Module, args: tuple, output: object) -> None:
                if want.issubset(acts):
                    raise _StopForward

            # Every module's forward hook fires after those registered by capture, so
            # checking after each decoder block (and the final norm) is enough.
            watch = list(decoder_layers(hf_model)) + [resolve(hf_model, n).module for n in names]
            stop_handle = [m.register_forward_hook(stop_when_done) for m in watch]
            stop_handle += [
                m.register_forward_pre_hook(lambda module, args: stop_when_done(module, args, None))
                for m in decoder_layers(hf_model)
            ]
        try:
            hf_model(**inputs, use_cache=False)
        except _StopForward:
            pass
        finally:
            for handle in stop_handle or []:
                handle.remove()
    missing = [n for n in names if n not in acts]
    if missing:
        raise UnknownSiteError(f"sites {missing} never ran in the forward pass")
    return acts


def last_token(values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The value at each row's last real token: ``(batch, seq, ...)`` -> ``(batch, ...)``.

    Works with right padding (the last position whose mask is 1) and left
    padding (the final position); without a mask, the final position.
    """
    if attention_mask is None:
        return values[:, -1]
    positions = attention_mask.shape[1] - 1 - attention_mask.flip(1).long().argmax(1)
    return values[torch.arange(values.shape[0], device=values.device), positions.to(values.device)]


# --- common edits ------------------------------------------------------------------------


def add_vector(vector: torch.Tensor, alpha: float = 1.0, positions: slice | None = None) -> EditFn:
    """Edit that adds ``alpha * vector`` at every position (or the ``positions`` slice)."""

    def edit(value: torch.Tensor) -> torch.Tensor:
        shift = (alpha * vector).to(value.dtype)
        if positions is None:
            return value + shift
        value = value.clone()
        value[:, positions] += shift
        return value

    return edit


def steer(direction: torch.Tensor, scale: float, norm: float | None = None) -> EditFn:
    """Edit that adds ``scale`` units along ``direction`` (any norm) at every position.

    The unit is ``norm`` when given (a site's mean norm, from :func:`actlab.generation.residual_norm`:
    one shift for every token), else each vector's own norm (the shift grows with the token's
    norm). Either way ``scale`` reads the same at every layer and in every model.
    """
    unit = direction / direction.norm()

    def edit(value: torch.Tensor) -> torch.Tensor:
        u = unit.to(value.dtype)
        size = value.norm(dim=-1, keepdim=True) if norm is None else norm
        return value + scale * size * u

    return edit


def project_out(directions: torch.Tensor) -> EditFn:
    """Edit that removes the component along ``directions`` from every vector (directional ablation).

    ``directions`` is one vector (any norm) or a ``(k, d)`` stack of them; a stack need not be
    orthogonal, its span is orthonormalised once (QR) and the whole span is removed.
    """
    basis = directions.detach().double()
    if basis.ndim == 1:
        basis = basis[None]
    if basis.ndim != 2 or not torch.all(basis.norm(dim=-1) > 0):
        raise ValueError("project_out wants a non-zero (d,) vector or a (k, d) stack of non-zero vectors")
    q = torch.linalg.qr(basis.T).Q.float()          # (d, k), orthonormal columns

    def edit(value: torch.Tensor) -> torch.Tensor:
        u = q.to(value.device, value.dtype)
        return value - (value @ u) @ u.T

    return edit


def replace_with(fn_or_value: torch.Tensor | EditFn) -> EditFn:
    """Edit that replaces the value by a tensor, or by ``fn(value)`` (e.g. an SAE reconstruction)."""
    if isinstance(fn_or_value, torch.Tensor):
        return lambda value: fn_or_value.to(value.dtype).expand_as(value)
    return fn_or_value


def zero_ablate() -> EditFn:
    """Edit that sets the value to zero."""
    return torch.zeros_like


# --- running part of the model ---------------------------------------------------------------


def _passthrough(hidden_states: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return hidden_states


@contextmanager
def _skipping(layers: Iterable[nn.Module]) -> Iterator[None]:
    """Blocks that hand their input on unchanged (their hooks still fire), restored on exit."""
    layers = list(layers)
    for layer in layers:
        layer.forward = _passthrough
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward   # back to the class's forward


def run_from(
    model: nn.Module,
    site: str,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    edits: Mapping[str, EditFn] | None = None,
) -> torch.Tensor:
    """Logits of the model when the residual stream at ``site`` is ``value``, running only the blocks above it.

    ``site`` is ``resid_pre.L`` (blocks L and up run) or ``resid_post.L`` (blocks above L run);
    ``value`` is ``(batch, seq, d_model)``, e.g. a residual captured earlier and then edited.
    The blocks below are skipped, not approximated: the model still builds its own position
    embeddings and causal and sliding-window masks for a sequence of that length, so the
    result equals the full forward pass with the residual replaced at ``site``. ``edits``
    patches sites above it on the way (as :func:`patch` does).
    """
    hf_model = _unwrap(model)
    kind, _, index = site.partition(".")
    layers = decoder_layers(hf_model)
    if kind not in ("resid_pre", "resid_post") or not index.isdigit() or int(index) >= len(layers):
        raise UnknownSiteError(f"run_from starts at resid_pre.L or resid_post.L (0 <= L < {len(layers)}), not '{site}'")
    start = int(index) + (kind == "resid_post")
    if value.ndim != 3:
        raise ValueError(f"value must be (batch, seq, d_model), got shape {tuple(value.shape)}")
    dtype = next(hf_model.parameters()).dtype
    # The embeddings of zeros never reach a block that runs: the residual is replaced at `site`.
    embeds = torch.zeros(value.shape, dtype=dtype, device=value.device)
    entry = f"resid_pre.{start}" if start == 0 else f"resid_post.{start - 1}"
    with _skipping(layers[:start]), patch(hf_model, {entry: replace_with(value), **(edits or {})}):
        output = hf_model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
    return output.logits
