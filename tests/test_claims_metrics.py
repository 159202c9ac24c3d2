import json
import math

import numpy as np
import pytest
import torch

from actlab import claims as claims_lib
from actlab import metrics, stats
from actlab.claims import CLAIMS_MIME, Claims, verdict_of


def test_verdicts_are_derived_from_the_criterion():
    assert verdict_of(True) == "reproduced"
    assert verdict_of(False) == "not_reproduced"
    assert verdict_of(False, partially=True) == "partial"
    assert verdict_of(True, partially=True) == "reproduced"
    assert verdict_of(None) == "not_checkable"


def test_a_failed_precondition_makes_a_check_inconclusive_and_says_which():
    table = Claims("demo")
    table.declare("C1", "SAE probes do not beat baselines", paper="AUC 0.80 vs 0.81", where="Fig. 3")
    row = table.check("C1", measured="0.70 vs 0.71", criterion="SAE <= baseline", criterion_source="card",
                      holds=True, requires={"SAE explained variance >= 0.80": 0.72 >= 0.80,
                                            "baseline above chance": True})
    assert row.verdict == "inconclusive" and table.verdict("C1") == "inconclusive"
    assert row.reason == "precondition failed: SAE explained variance >= 0.80"
    assert verdict_of(None, requires={"x": False}) == "not_checkable"   # nothing ran at all


def test_partial_is_never_given_to_a_result_against_the_claim():
    # The pattern a review found in several notebooks: "A beats B" fails, B is clearly ahead, and a side
    # condition was offered as `partially`. With the comparison passed as `holds`, the direction wins.
    rng = np.random.default_rng(0)
    baseline = rng.normal(0.7, 0.05, size=64)
    behind = stats.compare(baseline - 0.05 + rng.normal(0, 0.01, 64), baseline, names=("SAE probe", "baseline"))
    assert behind.against
    assert verdict_of(behind, partially=True) == "not_reproduced"
    level = stats.compare(baseline + rng.normal(0, 0.05, 64), baseline)
    assert not level.holds and not level.against
    assert verdict_of(level, partially=True) == "partial"          # a weaker form, not the opposite
    table = Claims("demo")
    table.declare("C2", "the SAE probe beats the baseline", paper="+0.03 AUC", where="Table 1")
    row = table.check("C2", measured=str(behind), criterion="interval of the gap above 0", criterion_source="card",
                      holds=behind, partially=True)
    assert row.verdict == "not_reproduced" and "opposite side" in row.reason


def test_declared_claims_are_stated_once_and_checked_with_their_source():
    table = Claims("demo")
    table.declare("C1", "x grows", paper="2", where="Sec. 3")
    with pytest.raises(ValueError, match="declared twice"):
        table.declare("C1", "again", paper="2", where="Sec. 3")
    with pytest.raises(TypeError, match="criterion_source"):
        table.check("C1", measured="3", criterion="m > 1", holds=True)
    with pytest.raises(ValueError, match="not repeated"):
        table.check("C1", "x grows", measured="3", criterion="m > 1", criterion_source="card", holds=True)
    with pytest.raises(ValueError, match="needs a reason"):
        table.check("C1", measured="3", criterion="m > 1", criterion_source="ours", holds=True)
    with pytest.raises(ValueError, match="one of"):
        table.check("C1", measured="3", criterion="m > 1", criterion_source="paper", holds=True)
    table.declare("C2", "y shrinks", paper="0.5", where="Fig. 2")
    with pytest.raises(ValueError, match="never checked: C1, C2"):
        table.show()
    with pytest.raises(KeyError, match="not been checked"):
        table.verdict("C1")
    table.check("C1", measured="3", criterion="m > 1.5 (the card's 1 is met by chance here)",
                criterion_source="ours", reason="the card's threshold is below the random baseline", holds=True)
    table.not_checkable("C2", reason="needs a 70B model")
    rows = table.to_dict()["claims"]
    assert [list(r) for r in rows] == [list(claims_lib.CLAIM_FIELDS)] * 2
    assert rows[0]["where"] == "Sec. 3" and rows[0]["criterion_source"] == "ours" and rows[0]["reason"]
    assert rows[1]["verdict"] == "not_checkable" and rows[1]["reason"] == "needs a 70B model"
    assert "[ours]" in table.to_markdown() and "source: ours" in table.to_html() and "Sec. 3" in table.to_html()


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


def test_results_in_brief_lists_every_claim_with_its_verdict_and_reason_once():
    table = Claims("demo")
    table.declare("C1", "x grows", paper="2", where="Sec. 3")
    table.declare("C2", "y shrinks", paper="0.5", where="Fig. 2")
    table.check("C1", measured="ratio 3.1 [2.0, 4.2]", criterion="ratio > 1", criterion_source="card", holds=True,
                requires={"baseline above chance": False})
    table.not_checkable("C2", reason="needs a 70B model")
    lines = table.in_brief().splitlines()
    assert lines[0] == ("- **C1** x grows: **inconclusive**. ratio 3.1 [2.0, 4.2]. "
                        "*precondition failed: baseline above chance.*")
    # The reason of a claim that cannot be checked is already in its measured text: said once.
    assert lines[1] == "- **C2** y shrinks: **not checkable**. not measured: needs a 70B model."


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
