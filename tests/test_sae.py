import time

import pytest
import torch
import torch.nn.functional as F

from actlab import sae as sae_lib
from actlab.sae import SAEConfig, SparseAutoencoder, cached_sae, topk_step_gradients, train_sae


def _toy_data(n=4096, d=16, n_features=48, seed=0):
    """Sparse combinations of random unit directions: an SAE should find structure here."""
    g = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(n_features, d, generator=g), dim=1)
    active = torch.rand(n, n_features, generator=g) < 0.06
    coeffs = torch.rand(n, n_features, generator=g) * active
    return coeffs @ features + 0.5


def _autograd_topk_loss(model, x, dead, cfg):
    pre = model.pre_activations(x)
    values, indices = pre.topk(cfg.k, dim=-1, sorted=False)
    acts = F.relu(values)
    x_hat = F.embedding_bag(indices, model.W_dec, per_sample_weights=acts, mode="sum") + model.b_dec
    error = x - x_hat
    loss = error.pow(2).sum(-1).mean()
    if dead.any():
        k_aux = min(cfg.auxk_k, int(dead.sum()))
        aux_values, aux_indices = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False)
        e_hat = F.embedding_bag(aux_indices, model.W_dec, per_sample_weights=F.relu(aux_values), mode="sum")
        e = error.detach()
        loss = loss + cfg.auxk_coefficient * (e_hat - e).pow(2).sum(-1).mean() / e.pow(2).sum(-1).mean()
    return loss


@pytest.mark.parametrize("with_dead", [False, True, "few"])
def test_hand_written_topk_gradients_match_autograd(with_dead):
    cfg = SAEConfig(d_in=16, d_sae=64, k=4, auxk_k=8, seed=3, matmul_dtype="float32")
    x = _toy_data(n=32)
    model = SparseAutoencoder(cfg)
    with torch.no_grad():
        model.b_dec.copy_(x.mean(0))
        model.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    dead = torch.zeros(cfg.d_sae, dtype=torch.bool)
    if with_dead:  # a third of the latents, or few enough that only their columns are ranked
        dead[::3 if with_dead is True else 20] = True
    _autograd_topk_loss(model, x, dead, cfg).backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None
    topk_step_gradients(model, x, dead, cfg)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_products_give_nearly_the_fp32_gradients():
    x = _toy_data(n=256)
    grads = {}
    for dtype in ("float32", "bfloat16"):
        cfg = SAEConfig(d_in=16, d_sae=64, k=4, auxk_k=8, seed=3, matmul_dtype=dtype)
        model = SparseAutoencoder(cfg)
        with torch.no_grad():
            model.b_dec.copy_(x.mean(0))
        topk_step_gradients(model, x, torch.zeros(cfg.d_sae, dtype=torch.bool), cfg)
        grads[dtype] = {name: p.grad.clone() for name, p in model.named_parameters()}
    for name, exact in grads["float32"].items():
        cosine = F.cosine_similarity(grads["bfloat16"][name].flatten(), exact.flatten(), dim=0)
        assert cosine > 0.99, (name, float(cosine))


def test_matmul_dtype_auto_is_resolved_before_the_cache_key():
    cfg = SAEConfig(d_in=16, d_sae=64)
    assert cfg.matmul_dtype == "auto"
    assert cfg.resolved().matmul_dtype == ("bfloat16" if sae_lib.fast_bf16() else "float32")
    with pytest.raises(Exception, match="matmul_dtype"):
        SAEConfig(d_in=16, d_sae=64, matmul_dtype="fp8").resolved()


@pytest.mark.parametrize("kind", ["topk", "relu"])
def test_training_reduces_unexplained_variance(kind):
    x = _toy_data()
    cfg = SAEConfig(d_in=16, d_sae=64, kind=kind, k=4, l1_coefficient=0.02, lr=3e-3, batch_size=256, epochs=8,
                    lr_warmup_steps=5)
    model, log = train_sae(x, cfg, progress=False)
    assert log.fvu[-1] < 0.5 * log.fvu[0]
    stats = sae_lib.evaluate(model, x)
    assert stats["fvu"] < 0.3
    assert torch.allclose(model.W_dec.norm(dim=1), torch.ones(cfg.d_sae), atol=1e-5)
    if kind == "topk":
        assert stats["l0"] <= cfg.k


def test_training_is_deterministic():
    x = _toy_data()
    cfg = SAEConfig(d_in=16, d_sae=64, k=4, batch_size=256, epochs=2)
    first, _ = train_sae(x, cfg, progress=False)
    second, _ = train_sae(x, cfg, progress=False)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_save_load_round_trip_in_saelens_layout(tmp_path):
    cfg = SAEConfig(d_in=16, d_sae=32, k=4)
    model = SparseAutoencoder(cfg)
    model.save(tmp_path / "sae")
    import json
    from safetensors.torch import load_file

    on_disk = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert on_disk["architecture"] == "topk" and on_disk["d_sae"] == 32 and on_disk["k"] == 4
    weights = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    assert weights["W_enc"].shape == (16, 32) and weights["W_dec"].shape == (32, 16)
    loaded = SparseAutoencoder.load(tmp_path / "sae")
    x = _toy_data(n=8)
    assert torch.equal(loaded(x), model(x))


def test_cache_hits_only_for_the_same_recipe_model_site_and_data(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTLAB_CACHE_DIR", str(tmp_path))
    x = _toy_data()
    cfg = SAEConfig(d_in=16, d_sae=64, k=4, batch_size=256, epochs=4)
    first, record = cached_sae(x, cfg, model="tiny", site="resid_post.1", progress=False)
    assert not record["cache_hit"]
    started = time.perf_counter()
    again, record = cached_sae(x, cfg, model="tiny", site="resid_post.1", progress=False)
    assert record["cache_hit"] and time.perf_counter() - started < 2.0
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters()))
    changed = [
        dict(x=x, cfg=SAEConfig(d_in=16, d_sae=64, k=5, batch_size=256, epochs=4), model="tiny", site="resid_post.1"),
        dict(x=x, cfg=cfg, model="other", site="resid_post.1"),
        dict(x=x, cfg=cfg, model="tiny", site="resid_post.2"),
        dict(x=_toy_data(seed=1), cfg=cfg, model="tiny", site="resid_post.1"),
    ]
    for case in changed:
        _, record = cached_sae(case["x"], case["cfg"], model=case["model"], site=case["site"], progress=False)
        assert not record["cache_hit"], case


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").environ.get("ACTLAB_DATA_DIR"), reason="needs the data mirror")
def test_standard_sae_is_shared_through_the_cache(tmp_path, monkeypatch):
    import actlab

    lm = actlab.load_model("smollm2-135m")
    monkeypatch.setenv("ACTLAB_CACHE_DIR", str(tmp_path))
    first, record = sae_lib.standard_sae(lm, site="resid_post.3", n_tokens=2048, expansion=1, epochs=1.0,
                                          progress=False)
    assert not record["cache_hit"] and first.cfg.d_sae == lm.d_model
    started = time.perf_counter()
    second, record = sae_lib.standard_sae(lm, site="resid_post.3", n_tokens=2048, expansion=1, epochs=1.0,
                                           progress=False)
    assert record["cache_hit"] and time.perf_counter() - started < 10
    assert torch.equal(first.W_dec, second.W_dec)
    _, record = sae_lib.standard_sae(lm, site="resid_post.4", n_tokens=2048, expansion=1, epochs=1.0,
                                     progress=False)
    assert not record["cache_hit"]


def test_cache_key_does_not_depend_on_int_or_float_spelling():
    a = SAEConfig(d_in=16, d_sae=64, epochs=2)
    b = SAEConfig(d_in=16, d_sae=64, epochs=2.0)
    assert sae_lib.cache_key("m", "s", a, "h") == sae_lib.cache_key("m", "s", b, "h")
    assert sae_lib.cache_key("m", "s", a, "h") != sae_lib.cache_key("m", "s", SAEConfig(d_in=16, d_sae=64, epochs=3), "h")


def _identity_sae(d):
    """An SAE that reconstructs exactly: atoms +e_i and -e_i, k = d keeps every positive part."""
    from actlab.sae import SAEConfig, SparseAutoencoder

    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=2 * d, k=d))
    basis = torch.cat([torch.eye(d), -torch.eye(d)])
    with torch.no_grad():
        sae.W_dec.copy_(basis)
        sae.W_enc.copy_(basis.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_core_metrics_of_an_exact_sae_and_of_a_useless_one():
    from actlab.sae import core_metrics
    from tiny_models import tiny_lm

    lm = tiny_lm("llama")
    windows = torch.randint(4, len(lm.tokenizer), (6, 12), generator=torch.Generator().manual_seed(0))
    exact = core_metrics(lm, _identity_sae(lm.d_model), "resid_post.1", windows, batch_size=4)
    assert exact["reconstruction_quality"]["explained_variance"] == pytest.approx(1.0, abs=1e-5)
    assert exact["reconstruction_quality"]["cossim"] == pytest.approx(1.0, abs=1e-5)
    assert exact["model_performance_preservation"]["ce_loss_score"] == pytest.approx(1.0, abs=1e-4)
    assert exact["model_behavior_preservation"]["kl_div_score"] == pytest.approx(1.0, abs=1e-4)
    assert exact["shrinkage"]["l2_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert exact["sparsity"]["l0"] <= lm.d_model and exact["misc_metrics"]["frac_alive"] > 0.9
    assert exact["token_stats"]["total_tokens_eval_reconstruction"] == 6 * 11     # position 0 left out
    # Only the +e_0 / -e_0 atoms: the reconstruction keeps one coordinate of d.
    narrow = _identity_sae(lm.d_model)
    with torch.no_grad():
        narrow.W_enc[:, [i for i in range(2 * lm.d_model) if i % lm.d_model != 0]] = 0
        narrow.b_enc.fill_(-1e-6)
    poor = core_metrics(lm, narrow, "resid_post.1", windows, batch_size=4)
    assert poor["reconstruction_quality"]["explained_variance"] < 0.3
    assert poor["model_performance_preservation"]["ce_loss_score"] < exact["model_performance_preservation"]["ce_loss_score"]
    assert poor["misc_metrics"]["frac_alive"] <= 2 / (2 * lm.d_model) + 1e-9


def test_training_resumes_from_its_checkpoint_to_the_same_sae(tmp_path):
    from actlab.sae import SAEConfig, train_sae

    x = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    cfg = SAEConfig(d_in=16, d_sae=64, k=4, batch_size=256, epochs=2.0, seed=1)
    whole, _ = train_sae(x, cfg, progress=False)
    checkpoint = tmp_path / "state.pt"

    class Interrupt(Exception):
        pass

    import actlab.sae as sae_module
    real_save = sae_module._atomic_torch_save
    calls = []

    def save_then_stop(state, dest):
        real_save(state, dest)
        calls.append(state["step"])
        if len(calls) == 2:
            raise Interrupt

    sae_module._atomic_torch_save = save_then_stop
    try:
        with pytest.raises(Interrupt):
            train_sae(x, cfg, progress=False, checkpoint=checkpoint, checkpoint_every=5)
    finally:
        sae_module._atomic_torch_save = real_save
    assert checkpoint.exists() and calls == [5, 10]
    resumed, log = train_sae(x, cfg, progress=False, checkpoint=checkpoint, checkpoint_every=5)
    for name, tensor in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=0, atol=0)
