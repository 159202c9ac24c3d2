import json
import math

import pytest
import torch

from actlab import claims as claims_lib
from actlab import metrics
from actlab.claims import CLAIMS_MIME, Claims, verdict_of


def test_verdicts_are_derived_from_the_criterion():
    assert verdict_of(True) == "reproduced"
    assert verdict_of(False) == "not_reproduced"
    assert verdict_of(False, partially=True) == "partial"
    assert verdict_of(True, partially=True) == "reproduced"
    assert verdict_of(None) == "not_checkable"


def test_claims_render_and_round_trip_through_a_notebook_output():
    table = Claims("demo")
    table.check("C1", "x | y", paper="1", measured="2", criterion="m > p", holds=torch.tensor(2 > 1).item())
    table.check("C2", "z", paper="3", measured="1", criterion="m > p", holds=False, partially=True)
    table.not_checkable("C3", "w", paper="4", why="no MoE model offline")
    bundle = table._repr_mimebundle_()
    assert "\\|" in bundle["text/markdown"] and "<table" in bundle["text/html"]
    notebook = {"cells": [{"cell_type": "code", "outputs": [{"data": {CLAIMS_MIME: bundle[CLAIMS_MIME]}}]}]}
    back = claims_lib.claims_from_notebook(json.loads(json.dumps(notebook)))
    assert json.loads(bundle[CLAIMS_MIME])["slug"] == "demo"
    assert [c["verdict"] for c in back["claims"]] == ["reproduced", "partial", "not_checkable"]
    assert table.summary() == "1 reproduced, 1 partial, 1 not checkable"


def test_token_losses_mask_padding():
    logits = torch.zeros(1, 4, 5)
    ids = torch.tensor([[1, 2, 3, 0]])
    losses, mask = metrics.token_losses(logits, ids, torch.tensor([[1, 1, 1, 0]]))
    assert mask.tolist() == [[True, True, False]]
    assert torch.allclose(losses, torch.full((1, 3), math.log(5)))


def test_kl_entropy_fvu_and_ce_recovered():
    p = torch.tensor([[2.0, 0.0, -1.0]])
    assert metrics.kl_divergence(p, p).abs().max() < 1e-7
    assert metrics.kl_divergence(p, torch.zeros(1, 3)).item() > 0
    assert metrics.entropy_bits(torch.zeros(1, 4)).item() == pytest.approx(2.0)
    x = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    assert metrics.fraction_variance_unexplained(x, x) == 0
    assert metrics.fraction_variance_unexplained(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)
    assert metrics.ce_loss_recovered(clean_loss=2.0, patched_loss=2.0, ablated_loss=8.0) == 1.0
    assert metrics.ce_loss_recovered(clean_loss=2.0, patched_loss=8.0, ablated_loss=8.0) == 0.0
