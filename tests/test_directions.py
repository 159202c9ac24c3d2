"""Difference-of-means directions, PCA and per-text projections, on synthetic rows and tiny models."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SklearnPCA

from actlab import directions, harvest, hooks
from actlab.errors import ActlabError
from tiny_models import CONFIGS, tiny_lm


def _clouds(n=40, d=6, shift=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    offset = torch.zeros(d)
    offset[2] = shift
    return torch.randn(n, d, generator=g) + offset, torch.randn(n + 5, d, generator=g)


def test_diff_of_means_is_the_difference_of_the_class_means_and_separates_them():
    pos, neg = _clouds()
    got = directions.diff_of_means(pos, neg)
    torch.testing.assert_close(got.vector, pos.mean(0) - neg.mean(0))
    assert abs(float(got.unit.norm()) - 1) < 1e-6 and int(got.unit.abs().argmax()) == 2
    torch.testing.assert_close(got.midpoint, (pos.mean(0) + neg.mean(0)) / 2)
    # the midpoint threshold classifies well-separated clouds, each side on its own sign
    assert (got.scores(pos) > 0).float().mean() > 0.9 and (got.scores(neg) < 0).float().mean() > 0.9
    # swapping the classes flips the direction
    torch.testing.assert_close(directions.diff_of_means(neg, pos).unit, -got.unit)


def test_diff_of_means_refuses_what_it_cannot_define():
    pos, neg = _clouds()
    with pytest.raises(ActlabError, match="width"):
        directions.diff_of_means(pos, neg[:, :3])
    with pytest.raises(ActlabError, match="non-empty"):
        directions.diff_of_means(pos[:0], neg)
    with pytest.raises(ActlabError, match="equal"):
        _ = directions.diff_of_means(pos, pos).unit


def test_project_gives_the_coordinate_along_the_unit_direction_from_the_origin():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    torch.testing.assert_close(directions.project(x, torch.tensor([0.0, 2.0])), torch.tensor([4.0, 0.0]))
    torch.testing.assert_close(directions.project(x, torch.tensor([1.0, 0.0]), origin=torch.tensor([1.0, 0.0])),
                               torch.tensor([2.0, 0.0]))
    with pytest.raises(ActlabError, match="zero direction"):
        directions.project(x, torch.zeros(2))


def test_pca_matches_scikit_learn_and_reconstructs_with_every_component():
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(3)) @ torch.diag(torch.arange(8.0, 0, -1))
    ours = directions.fit_pca(x, 4)
    ref = SklearnPCA(4).fit(x.double().numpy())
    np.testing.assert_allclose(ours.explained_variance.numpy(), ref.explained_variance_, rtol=1e-5)
    np.testing.assert_allclose(ours.explained_variance_ratio.numpy(), ref.explained_variance_ratio_, rtol=1e-5)
    # the same axes up to sign, and our signs are fixed by the largest entry
    np.testing.assert_allclose(np.abs(ours.components.numpy() @ ref.components_.T), np.eye(4), atol=1e-5)
    assert torch.all(ours.components.gather(1, ours.components.abs().argmax(1, keepdim=True)) > 0)
    z = ours.transform(x)
    assert z.shape == (50, 4)
    np.testing.assert_allclose(np.abs(z.numpy()), np.abs(ref.transform(x.double().numpy())), rtol=1e-4, atol=1e-4)
    full = directions.fit_pca(x)
    torch.testing.assert_close(full.inverse_transform(full.transform(x)), x, rtol=1e-4, atol=1e-4)
    assert abs(float(full.explained_variance_ratio.sum()) - 1) < 1e-5
    with pytest.raises(ActlabError, match="n_components"):
        directions.fit_pca(x, 9)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_per_text_rows_pool_the_right_tokens_and_ablation_removes_the_direction(arch):
    lm = tiny_lm(arch)
    pos_texts = ["Mary went to the park", "Mary and John went to the store"]
    neg_texts = ["John handed a book to Mary .", "When John went to the park"]
    site = "resid_post.1"
    acts = harvest.per_text(lm, pos_texts + neg_texts, site)
    last, mean = directions.pooled(acts, site, "last"), directions.pooled(acts, site, "mean")
    assert last.shape == mean.shape == (4, lm.d_model)
    torch.testing.assert_close(mean[1], acts.tokens[site][1].mean(0))
    torch.testing.assert_close(last[2], acts.last[site][2])
    direction = directions.diff_of_means(last[:2], last[2:])
    # removing the direction at the site leaves nothing along it in the site's own value
    seen = {}
    with hooks.patch(lm.model, {site: hooks.project_out(direction.vector)}):
        with hooks.capture(lm.model, [site]) as store:
            lm.model(input_ids=torch.tensor([acts.ids[0]]))
        seen = store
    after = seen[site][0]
    assert float(directions.project(after, direction.unit).abs().max()) < 1e-4 * float(after.norm())
    with pytest.raises(ActlabError, match="captured"):
        directions.pooled(acts, "resid_post.0")


def test_project_out_removes_a_whole_span_even_when_it_is_not_orthogonal():
    span = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1))
    out = hooks.project_out(span)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out[..., :2], torch.zeros(3, 5, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[..., 2:], x[..., 2:])
    with pytest.raises(ValueError, match="non-zero"):
        hooks.project_out(torch.zeros(2, 4))
