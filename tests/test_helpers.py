"""Helpers the notebooks share: padding, token ids, per-text activations, IOI batches, pursuit, setup."""

import pytest
import torch

from actlab import generated, harvest, hooks, metrics, notebook, pursuit
from tiny_models import CONFIGS, tiny_lm

ARCHS = sorted(CONFIGS)


@pytest.fixture(scope="module", params=ARCHS)
def lm(request):
    return tiny_lm(request.param)


def test_pad_puts_padding_on_the_asked_side_and_masks_it(lm):
    right = lm.pad([[5, 6, 7], [8]])
    left = lm.pad([[5, 6, 7], [8]], side="left")
    pad = lm.pad_token_id
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, pad, pad]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert left["input_ids"].tolist() == [[5, 6, 7], [pad, pad, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="side"):
        lm.pad([[1]], side="middle")


def test_tokenize_leaves_the_shared_tokenizer_as_it_was(lm):
    before = lm.tokenizer.padding_side
    batch = lm.tokenize(["Mary and John", "Mary"], padding_side="left" if before == "right" else "right")
    assert lm.tokenizer.padding_side == before
    assert batch["attention_mask"].sum().item() == 4 + 2     # BOS + words


def test_token_id_wants_exactly_one_token(lm):
    assert lm.tokenizer.decode([lm.token_id(" Mary")]) == "Mary"
    with pytest.raises(ValueError, match="2 tokens"):
        lm.token_id(" Mary John")


def test_n_kv_heads_reads_grouped_query_attention(lm):
    assert lm.n_kv_heads in (2, lm.n_heads) and lm.n_heads % lm.n_kv_heads == 0


def test_per_text_matches_running_each_text_alone(lm):
    texts = ["When Mary and John went to the park", "Mary", "John handed a book to Mary ."]
    got = harvest.per_text(lm, texts, ["resid_post.1", "mlp_out.0"], batch_size=2)
    for i, text in enumerate(texts):
        ids = torch.tensor([got.ids[i]])
        alone = hooks.run_with_cache(lm, ["resid_post.1", "mlp_out.0"], input_ids=ids)
        for site in ("resid_post.1", "mlp_out.0"):
            torch.testing.assert_close(got.tokens[site][i], alone[site][0, 1:], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(got.last[site][i], alone[site][0, -1], rtol=1e-4, atol=1e-5)
    kept = harvest.per_text(lm, texts[:1], "resid_post.1", drop_first=False)
    assert kept.tokens["resid_post.1"][0].shape[0] == len(got.ids[0])


def test_ioi_batch_finds_the_names_and_scores_the_logit_difference(lm):
    prompts = generated.ioi_prompts(6, seed=1, tokenizer=lm.tokenizer)
    batch = generated.ioi_batch(lm, prompts)
    for row, p in enumerate(prompts):
        decode = lambda pos: lm.tokenizer.decode([int(batch.input_ids[row, pos])])
        assert decode(batch.io_pos[row]) == p.io and decode(batch.s1_pos[row]) == p.s == decode(batch.s2_pos[row])
        assert decode(batch.end[row]) == "to" and batch.s1_pos[row] < batch.s2_pos[row]
    logits = lm.model(**batch.inputs()).logits
    diff = batch.logit_diff(logits)
    row = 3
    expected = logits[row, batch.end[row], batch.io_id[row]] - logits[row, batch.end[row], batch.s_id[row]]
    assert diff.shape == (6,) and torch.isclose(diff[row], expected)


def test_ce_loss_score_leaves_position_zero_unpatched(lm):
    ids = torch.randint(4, len(lm.tokenizer), (3, 8), generator=torch.Generator().manual_seed(0))
    seen = []
    record = lambda value: seen.append(value.clone()) or value
    with torch.no_grad():
        kept = metrics.keep_first_position(hooks.zero_ablate())(torch.ones(2, 4, 3))
        assert kept[:, 0].eq(1).all() and kept[:, 1:].eq(0).all()
        score = metrics.ce_loss_score(lm, "resid_post.0", record, ids, drop_first=True)
        assert score["ce_loss_recovered"] == pytest.approx(1.0)   # the identity reconstruction recovers everything
        everything = metrics.ce_loss_score(lm, "resid_post.0", hooks.zero_ablate(), ids, drop_first=False)
        assert everything["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-6)


def test_matching_pursuit_recovers_a_sparse_code_on_orthogonal_atoms():
    atoms = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))[0].T  # orthonormal
    code_true = torch.zeros(5, 16)
    code_true[torch.arange(5), torch.tensor([1, 3, 5, 7, 9])] = torch.tensor([2.0, -1.0, 0.5, 3.0, -2.5])
    code_true[torch.arange(5), torch.tensor([0, 2, 4, 6, 8])] = 0.25
    x = code_true @ atoms
    code = pursuit.matching_pursuit(x, atoms, L0=2)
    torch.testing.assert_close(code.dense(16), code_true, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(code.decode(atoms), x, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unit norm"):
        pursuit.matching_pursuit(x, 2 * atoms, L0=2)


def test_matching_pursuit_residual_shrinks_every_step():
    g = torch.Generator().manual_seed(1)
    atoms = pursuit.unit_atoms(torch.randn(64, 8, generator=g))
    x = torch.randn(32, 8, generator=g)
    errors = [(x - pursuit.matching_pursuit(x, atoms, L0=k, chunk=7).decode(atoms)).norm(dim=1) for k in (1, 2, 4, 8)]
    assert all((b <= a + 1e-5).all() for a, b in zip(errors, errors[1:]))
    assert (errors[-1] < x.norm(dim=1)).all()


def test_notebook_setup_reports_what_it_set():
    previous, threads = torch.is_grad_enabled(), torch.get_num_threads()
    try:
        done = notebook.notebook_setup(seed=3, threads=1)
        assert not torch.is_grad_enabled() and torch.get_num_threads() == 1
        assert done.seed == 3 and done.threads == 1 and "gradients off" in str(done)
        first = torch.rand(1)
        notebook.notebook_setup(seed=3, threads=1)
        assert torch.equal(first, torch.rand(1))
    finally:
        torch.set_grad_enabled(previous)
        torch.set_num_threads(threads)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_unembed_of_the_last_residual_equals_the_logits(arch):
    from actlab import hooks

    lm = tiny_lm(arch)
    if arch == "gemma2":
        lm.model.config.final_logit_softcapping = 2.0  # small enough that the cap changes the logits
    ids = torch.randint(4, len(lm.tokenizer), (2, 6), generator=torch.Generator().manual_seed(0))
    last = f"resid_post.{lm.n_layers - 1}"
    with hooks.capture(lm, [last, "final_norm"]) as acts:
        logits = lm.model(input_ids=ids).logits
    torch.testing.assert_close(lm.unembed(acts[last]), logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lm.unembed(acts["final_norm"], normed=True), logits, rtol=1e-5, atol=1e-5)


def test_run_announces_a_standard_sae_it_will_build_first(tmp_path, monkeypatch):
    from actlab import artifacts

    monkeypatch.setenv("ACTLAB_CACHE_DIR", str(tmp_path))
    uses = "sae, record = actlab.sae.standard_sae(lm)"
    assert "built first" in artifacts.announce_build(uses, "smollm2-135m", "default")
    assert artifacts.announce_build(uses, "smollm2-135m", "smoke") is None  # smoke SAEs are small
    assert artifacts.announce_build("print(1)", "smollm2-135m", "default") is None
