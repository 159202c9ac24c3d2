"""Generation with edits, the prompt cache and candidate scoring, on tiny random models of every architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actlab import hooks
from actlab.generation import PromptCache, generate_with_edits, residual_norm, score_candidates
from tiny_models import CONFIGS, tiny_lm

ARCHS = sorted(CONFIGS)
PROMPTS = ["When Mary and John went to the store , John gave a drink to", "Then , Mary"]


@pytest.fixture(scope="module", params=ARCHS)
def lm(request):  # noqa: ANN001, ANN201
    return tiny_lm(request.param)


def _ids(lm, text):  # noqa: ANN001, ANN202
    return lm.tokenizer(text)["input_ids"]


def _hf_greedy(lm, prompt_ids, n):  # noqa: ANN001, ANN202
    ids = torch.tensor([prompt_ids])
    out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                            do_sample=False, pad_token_id=lm.pad_token_id)
    return out[0, len(prompt_ids):].tolist()


def _recomputed_greedy(lm, prompt_ids, n, edits, start):  # noqa: ANN001, ANN202
    """Greedy decoding without a cache: the whole sequence again at every step, edits from ``start`` on."""
    ids = list(prompt_ids)
    for _ in range(n):
        def gate(edit):  # noqa: ANN001, ANN202
            def gated(value):  # noqa: ANN001, ANN202
                new = edit(value)
                keep = torch.arange(value.shape[1]) < start
                return torch.where(keep.view(1, -1, *([1] * (value.ndim - 2))), value, new)
            return gated

        with hooks.patch(lm.model, {s: gate(e) for s, e in edits.items()}), torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([ids]), use_cache=False).logits
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt_ids):]


def test_identity_edit_matches_plain_generate(lm):  # noqa: ANN001
    site = "resid_post.1"
    for prompt in PROMPTS:
        ids = _ids(lm, prompt)
        # the tiny models have no real end-of-sequence behaviour: compare eight tokens whatever they are
        lm.model.generation_config.eos_token_id = None
        ours = generate_with_edits(lm, [ids], max_new_tokens=8, edits={site: lambda v: v * 1.0})[0]
        expected = _hf_greedy(lm, ids, 8)
        eos = lm.tokenizer.eos_token_id
        cut = expected.index(eos) if eos in expected else len(expected)
        assert ours.token_ids == expected[:cut], f"{lm.name}: identity-edited greedy differs from generate"


def test_left_padded_batch_equals_one_prompt_at_a_time(lm):  # noqa: ANN001
    vector = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(1))
    edits = {"resid_pre.1": hooks.add_vector(vector, 0.5)}
    batched = generate_with_edits(lm, PROMPTS, max_new_tokens=6, edits=edits, edit_from=-1)
    alone = [generate_with_edits(lm, [p], max_new_tokens=6, edits=edits, edit_from=-1)[0] for p in PROMPTS]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]


@pytest.mark.parametrize("edit_from", [0, 4, -1, "generated"])
def test_cached_edit_from_a_position_equals_recomputing(lm, edit_from):  # noqa: ANN001
    vector = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(2)) * 3
    edits = {"resid_post.0": hooks.add_vector(vector)}
    ids = _ids(lm, PROMPTS[0])
    start = {"generated": len(ids), -1: len(ids) - 1}.get(edit_from, edit_from)
    eos = lm.tokenizer.eos_token_id
    expected = _recomputed_greedy(lm, ids, 6, edits, start)
    expected = expected[:expected.index(eos)] if eos in expected else expected
    ours = generate_with_edits(lm, [ids], max_new_tokens=6, edits=edits, edit_from=edit_from)[0]
    assert ours.token_ids == expected


def test_sampling_is_seeded_and_independent_of_the_batch():
    lm = tiny_lm("llama")
    kwargs = dict(max_new_tokens=6, sample=True, temperature=1.5, top_p=0.9, seed=3)
    first = generate_with_edits(lm, PROMPTS, batch_size=2, **kwargs)
    again = generate_with_edits(lm, PROMPTS, batch_size=1, **kwargs)
    other = generate_with_edits(lm, PROMPTS, batch_size=2, **{**kwargs, "seed": 4})
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert [g.token_ids for g in first] != [g.token_ids for g in other]


def test_stop_string_cuts_the_text():
    lm = tiny_lm("llama")
    free = generate_with_edits(lm, [PROMPTS[0]], max_new_tokens=10)[0]
    assert free.finish in ("length", "eos") and free.text
    word = free.text.split()[1] if len(free.text.split()) > 1 else free.text.split()[0]
    stopped = generate_with_edits(lm, [PROMPTS[0]], max_new_tokens=10, stop=[word])[0]
    assert stopped.finish == "stop" and word not in stopped.text


def test_generation_arguments_are_checked():
    lm = tiny_lm("llama")
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_with_edits(lm, PROMPTS, max_new_tokens=0)
    with pytest.raises(ValueError, match="edit_from"):
        generate_with_edits(lm, PROMPTS, edits={"resid_pre.0": lambda v: v}, edit_from="prompt")


FULL_ATTENTION = [a for a in ARCHS if a not in ("gemma2", "gemma3")]


@pytest.mark.parametrize("arch", ARCHS)
def test_keeping_every_position_equals_the_full_cache(arch):
    lm = tiny_lm(arch)
    ids = _ids(lm, PROMPTS[0])
    full = PromptCache.prefill(lm, ids)
    assert len(full.keys) == lm.n_layers and full.keys[0].shape == (lm.n_kv_heads, len(ids), lm.d_head)
    shuffled = full.keep([torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))] * lm.n_layers)
    assert torch.equal(shuffled.positions[0].sort(1).values, full.positions[0])
    lm.model.generation_config.eos_token_id = None
    expected = _hf_greedy(lm, ids, 6)
    eos = lm.tokenizer.eos_token_id
    expected = expected[:expected.index(eos)] if eos in expected else expected
    assert full.greedy(lm, 6) == expected
    # the prompt's last token held back and fed on top of the cache: the same continuation
    head = PromptCache.prefill(lm, ids[:-1])
    assert head.greedy(lm, 6, feed=[ids[-1]]) == expected
    if arch in FULL_ATTENTION:  # entry order within a head does not matter to attention
        assert shuffled.greedy(lm, 6) == expected


@pytest.mark.parametrize("arch", FULL_ATTENTION)
def test_a_compressed_cache_decodes_at_the_true_positions(arch):
    lm = tiny_lm(arch)
    ids = _ids(lm, PROMPTS[0])
    cache = PromptCache.prefill(lm, ids[:-1])
    kept = torch.tensor([0, 3, 5, 7, len(ids) - 3, len(ids) - 2])
    small = cache.keep([kept] * lm.n_layers)
    assert small.length == len(kept) and small.next_position == len(ids) - 1
    assert torch.equal(small.positions[1][0], kept)
    # reference: the same prompt where attention may only see the kept positions (and the new tokens)
    lm.model.generation_config.eos_token_id = None
    seq = list(ids)
    for step in range(4):
        visible = torch.zeros(len(seq), len(seq), dtype=torch.bool)
        allowed = torch.zeros(len(seq), dtype=torch.bool)
        allowed[kept] = True
        allowed[len(ids) - 1:] = True
        for q in range(len(seq)):
            visible[q, :q + 1] = True if q < len(ids) - 1 else allowed[:q + 1]
        mask = torch.zeros(1, 1, len(seq), len(seq)).masked_fill(~visible, torch.finfo(torch.float32).min)
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([seq]), attention_mask=mask, use_cache=False).logits
        if step == 0:
            torch.testing.assert_close(small.next_logits(lm, [ids[-1]])[0], logits[0, -1].float(), atol=1e-4,
                                       rtol=1e-4)
        seq.append(int(logits[0, -1].argmax()))
    expected = seq[len(ids):]
    eos = lm.tokenizer.eos_token_id
    expected = expected[:expected.index(eos)] if eos in expected else expected
    assert small.greedy(lm, 4, feed=[ids[-1]]) == expected
    per_head = cache.keep([kept.expand(lm.n_kv_heads, -1)] * lm.n_layers)
    assert per_head.greedy(lm, 4, feed=[ids[-1]]) == expected


def test_keep_checks_its_indices():
    lm = tiny_lm("llama")
    cache = PromptCache.prefill(lm, PROMPTS[0])
    with pytest.raises(ValueError, match="one index tensor per layer"):
        cache.keep([torch.tensor([0])])
    with pytest.raises(ValueError, match="must lie in"):
        cache.keep([torch.tensor([0, 99])] * lm.n_layers)
    assert cache.n_bytes(4) == 2 * lm.n_layers * lm.n_kv_heads * lm.d_head * cache.length * 4


def test_candidate_scores_equal_scoring_each_sequence_whole(lm):  # noqa: ANN001
    prefix = _ids(lm, PROMPTS[0])
    candidates = [" Mary", " the store .", " John gave a drink"]
    vector = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(5))
    edits = {"resid_post.1": hooks.add_vector(vector)}
    for active in (None, edits):
        scores = score_candidates(lm, prefix, candidates, edits=active, batch_size=2)
        for text, got in zip(candidates, scores.token_logprobs):
            cand = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
            with hooks.patch(lm.model, active or {}), torch.no_grad():
                logits = lm.model(input_ids=torch.tensor([prefix + cand]), use_cache=False).logits[0].float()
            logprobs = logits.log_softmax(-1)
            want = torch.stack([logprobs[len(prefix) - 1 + j, t] for j, t in enumerate(cand)])
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert scores.probabilities().sum().item() == pytest.approx(1.0)
    assert scores.best in candidates


def test_residual_norm_is_the_mean_token_norm():
    lm = tiny_lm("llama")
    batch = lm.tokenize(PROMPTS)
    acts = hooks.run_with_cache(lm, "resid_post.1", **batch)["resid_post.1"]
    mask = batch["attention_mask"].bool()
    mask[:, 0] = False
    assert residual_norm(lm, "resid_post.1", PROMPTS) == pytest.approx(float(acts.norm(dim=-1)[mask].mean()),
                                                                      rel=1e-5)


def test_text_scorers_on_known_texts():
    from actlab import textscore

    assert textscore.language_of(["Le chat est assis sur le tapis et il dort.", "12 345", "",
                                  "The cat is sitting on the mat and sleeping."]) == ["fr", None, None, "en"]
    assert list(textscore.in_language(["Der Hund schläft im Garten.", "ok"], "de")) == [1.0, 0.0]
    assert textscore.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    low, high = textscore.sentence_bleu(["a dog ran", "the cat sat on the mat"], ["the cat sat on the mat"] * 2)
    assert low < 10 < 99 < high
    mild, rude = textscore.toxicity(["Have a lovely day.", "you are a damn idiot"])
    assert mild < 0.5 < rude
    with pytest.raises(ValueError, match="references"):
        textscore.bleu(["a"], [])


def test_continuation_perplexity_is_exp_of_the_mean_loss():
    from actlab import textscore

    lm = tiny_lm("llama")
    scores = score_candidates(lm, PROMPTS[0], [" Mary ."])
    ppl = textscore.continuation_perplexity(lm, [PROMPTS[0], PROMPTS[1]], [" Mary .", ""])
    assert ppl[0] == pytest.approx(float(torch.exp(-scores.mean[0])), rel=1e-5)
    assert np.isnan(ppl[1])


def test_steer_adds_scale_units_of_the_norm():
    value = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])
    direction = torch.tensor([0.0, 2.0])
    fixed = hooks.steer(direction, 0.5, norm=10.0)(value)
    torch.testing.assert_close(fixed - value, torch.tensor([[[0.0, 5.0], [0.0, 5.0]]]))
    own = hooks.steer(direction, 0.5)(value)
    torch.testing.assert_close(own - value, torch.tensor([[[0.0, 2.5], [0.0, 0.5]]]))


@pytest.mark.parametrize("arch", ARCHS)
def test_prompts_longer_than_a_sliding_window_decode_exactly(arch):
    # Gemma's own cache crops sliding layers to their window (16 tokens in the tiny configs); ours keeps
    # every entry, so a full cache of a long prompt must still give the logits of one whole pass.
    lm = tiny_lm(arch)
    ids = torch.randint(5, lm.tokenizer.vocab_size, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.no_grad():
        whole = lm.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
    cache = PromptCache.prefill(lm, ids[:-3])
    assert {k.shape[1] for k in cache.keys} == {len(ids) - 3}
    torch.testing.assert_close(cache.next_logits(lm, ids[-3:]), whole[-3:], atol=1e-4, rtol=1e-4)
    scores = score_candidates(lm, ids[:-4], [ids[-4:], ids[-2:]])
    expected = whole[-5:-1].log_softmax(-1)[torch.arange(4), torch.tensor(ids[-4:])]
    torch.testing.assert_close(scores.token_logprobs[0], expected, atol=1e-4, rtol=1e-4)
    lm.model.generation_config.eos_token_id = None
    assert cache.greedy(lm, 5, feed=ids[-3:]) == _hf_greedy(lm, ids, 5)
