"""Every committed notebook: the contract (structure and committed outputs) and a smoke execution."""

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from actlab import runner
from actlab.claims import CLAIMS_MIME, VERDICTS, claims_from_notebook

NOTEBOOKS = runner.list_notebooks()
SLUGS = sorted(NOTEBOOKS)
SMOKE_BUDGET_S = float(os.environ.get("ACTLAB_SMOKE_BUDGET_S", "60"))
# Paths of the machine that ran a notebook must not leak into published outputs: the checkout's
# parent, the home directory, the temporary directory and the interpreter's prefix, as seen here.
_LOCAL_ROOTS = {str(Path(p).resolve()) for p in (runner.REPO_ROOT.parent, Path.home(), tempfile.gettempdir(),
                                                  sys.prefix)} - {"/"}
MACHINE_PATH = re.compile("|".join(re.escape(root + os.sep) for root in sorted(_LOCAL_ROOTS)))


def test_there_are_notebooks():
    assert SLUGS, "no notebooks found under notebooks/"


def _outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


@pytest.mark.parametrize("slug", SLUGS)
def test_notebook_contract(slug):
    nb = nbformat.read(NOTEBOOKS[slug], as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "starts with a title"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    params = runner.notebook_parameters(NOTEBOOKS[slug])
    assert {"model", "profile", "seed"} <= set(params)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "every code cell carries committed outputs"
    outputs = list(_outputs(nb))
    assert not [o for o in outputs if o.get("output_type") == "error"], "no error outputs"
    assert any("image/png" in o.get("data", {}) for o in outputs), "at least one figure"
    table = claims_from_notebook(nb)
    assert table and table["claims"], "a computed claims table"
    assert all(c["verdict"] in VERDICTS for c in table["claims"])
    assert sum(CLAIMS_MIME in o.get("data", {}) for o in outputs) == 1, "one claims table"
    assert any("hide-cell" in c.metadata.get("tags", []) for c in code), "exercise solutions folded away"
    meta = nb.metadata.get("actlab")
    assert meta, "run metadata recorded by `actlab run --in-place`"
    assert meta["status"] == "ok" and meta["profile"] == "default" and meta["model"] == "smollm2-135m"
    assert meta["runtime_s"] < 15 * 60, "default profile within 15 minutes"
    for key in ("library_version", "git_commit", "parameters", "date", "cpu_threads", "versions"):
        assert key in meta
    text = json.dumps([o for o in outputs if "image/png" not in o.get("data", {})]) + json.dumps(nb.metadata)
    assert not MACHINE_PATH.search(text), f"machine path in outputs: {MACHINE_PATH.search(text).group(0)}"


@pytest.fixture(scope="session")
def warm_models():
    """Convert the offline models once, so smoke timings measure the notebooks, not the first conversion."""
    import actlab

    for name in ("smollm2-135m", "gemma3-270m"):
        actlab.load_model(name)


def _smoke(slug, model, out_dir):
    result = runner.run(slug, profile="smoke", model=model, out_dir=out_dir, progress=False)
    assert result.error is None, result.error
    payload = json.loads(result.claims_path.read_text())
    assert payload["slug"] == slug and payload["model"] == model and payload["claims"]
    assert all(list(c) == list(runner.CLAIM_FIELDS) for c in payload["claims"])
    assert all(c["verdict"] in VERDICTS for c in payload["claims"])
    return payload


@pytest.mark.slow
@pytest.mark.parametrize("slug", SLUGS)
def test_smoke_runs_in_budget_and_repeat_exactly(slug, tmp_path, warm_models):
    """Two smoke runs on the default model: each within budget, identical claims apart from the runtime."""
    first = _smoke(slug, "smollm2-135m", tmp_path / "first")
    second = _smoke(slug, "smollm2-135m", tmp_path / "second")
    assert min(first["runtime_s"], second["runtime_s"]) < SMOKE_BUDGET_S, (first["runtime_s"], second["runtime_s"])
    first.pop("runtime_s"), second.pop("runtime_s")
    assert first == second


@pytest.mark.slow
@pytest.mark.parametrize("slug", SLUGS)
def test_smoke_run_on_gemma3(slug, tmp_path, warm_models):
    _smoke(slug, "gemma3-270m", tmp_path)
