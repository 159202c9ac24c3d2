"""Every committed notebook: the contract (structure and committed outputs) and a smoke execution."""

import json
import os
import re
import sys
import tempfile
from pathlib import Path

import cost_model
import nbformat
import pytest
from smoke_pool import SmokePool, default_workers

from actlab import runner
from actlab.claims import CLAIMS_MIME, VERDICTS, claims_from_notebook

NOTEBOOKS = runner.list_notebooks()
SLUGS = sorted(NOTEBOOKS)
DEFAULT_MODEL = "smollm2-135m"
SECOND_MODEL = "gemma3-270m"
# Determinism (two identical runs) and the second architecture are checked on this fixed subset, one
# notebook per family; `make test-all` (ACTLAB_TEST_MATRIX=full) checks them on every notebook.
SUBSET = {"sae": "mona-data-selection", "steering": "repe-reasoning", "quant": "max-activations"}
FULL_MATRIX = os.environ.get("ACTLAB_TEST_MATRIX", "") == "full"
MATRIX_SLUGS = SLUGS if FULL_MATRIX else sorted(s for s in SUBSET.values() if s in NOTEBOOKS)
# Only a hang fails a smoke run on time: no single cell of a smoke run needs minutes.
CELL_TIMEOUT_S = float(os.environ.get("ACTLAB_CELL_TIMEOUT_S", "300"))
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
    # A run recorded before source hashes existed has none and passes until its next run.
    assert runner.source_status(nb) != "stale", (
        "the committed outputs do not come from the committed source: re-run it with "
        f"`actlab run {slug} --profile default --in-place`")
    text = json.dumps([o for o in outputs if "image/png" not in o.get("data", {})]) + json.dumps(nb.metadata)
    assert not MACHINE_PATH.search(text), f"machine path in outputs: {MACHINE_PATH.search(text).group(0)}"


def test_the_subset_covers_every_family_with_notebooks(repo_root):
    import yaml

    families = yaml.safe_load((repo_root / "book" / "families.yml").read_text())
    for family in families:
        present = [slug for slug in family["slugs"] if slug in NOTEBOOKS]
        if present:
            assert SUBSET.get(family["id"]) in present, (
                f"family '{family['id']}' has notebooks ({', '.join(present)}) but SUBSET names none of them")


@pytest.fixture(scope="session")
def warm_models():
    """Convert the offline models once, so smoke timings measure the notebooks, not the first conversion."""
    import actlab

    for name in (DEFAULT_MODEL, SECOND_MODEL):
        actlab.load_model(name)


# Which smoke runs each smoke test reads, so the pool can start all of a session's runs at once.
_RUNS_OF_TEST = {
    "test_smoke_run": lambda slug: [(slug, DEFAULT_MODEL, 1)],
    "test_smoke_runs_repeat_exactly": lambda slug: [(slug, DEFAULT_MODEL, 1), (slug, DEFAULT_MODEL, 2)],
    "test_smoke_run_on_gemma3": lambda slug: [(slug, SECOND_MODEL, 1)],
}


def _planned_runs(items) -> list[tuple[str, str, int]]:
    """The session's smoke runs in the order its tests will ask for them."""
    planned = []
    for item in items:
        runs_of = _RUNS_OF_TEST.get(getattr(item, "originalname", ""))
        if runs_of is not None and hasattr(item, "callspec"):
            planned += [key for key in runs_of(item.callspec.params["slug"]) if key not in planned]
    return planned


@pytest.fixture(scope="session")
def smoke_pool(warm_models, tmp_path_factory, request):
    """Every smoke run the session selected, started at once on a pool of workers (tests/smoke_pool.py)."""
    from actlab.seeding import _usable_cores

    cores = _usable_cores()
    pool = SmokePool(tmp_path_factory.mktemp("smoke"), default_workers(cores), CELL_TIMEOUT_S, cores)
    pool.submit(_planned_runs(request.session.items))
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def smoke_run(smoke_pool):
    """The outcome of the smoke execution of a notebook on a model, checked; recorded for the cost model."""
    recorded: set[tuple[str, str, int]] = set()
    record = cost_model.SESSION

    def outcome_of(slug: str, model: str, repeat: int = 1) -> dict:
        key = (slug, model, repeat)
        outcome = smoke_pool.outcome(key)
        if key not in recorded:
            recorded.add(key)
            record["runs"].append({"slug": slug, "model": model, "repeat": repeat,
                                   "runtime_s": outcome["runtime_s"], "status": outcome["status"]})
            record["wall_s"] = smoke_pool.phase_wall_s()
            record["workers"] = smoke_pool.workers
        assert outcome["error"] is None, f"{slug} on {model} failed: {outcome['error']}"
        payload = outcome["payload"]
        assert payload["slug"] == slug and payload["model"] == model and payload["claims"]
        assert all(list(c) == list(runner.CLAIM_FIELDS) for c in payload["claims"])
        assert all(c["verdict"] in VERDICTS for c in payload["claims"])
        return payload

    return outcome_of


@pytest.mark.slow
@pytest.mark.parametrize("slug", SLUGS)
def test_smoke_run(slug, smoke_run):
    """Every notebook runs top to bottom in its smoke profile on the default model."""
    smoke_run(slug, DEFAULT_MODEL)


@pytest.mark.slow
@pytest.mark.parametrize("slug", MATRIX_SLUGS)
def test_smoke_runs_repeat_exactly(slug, smoke_run):
    """A second run with the same parameters gives the same claims, apart from the runtime."""
    first = dict(smoke_run(slug, DEFAULT_MODEL))
    second = dict(smoke_run(slug, DEFAULT_MODEL, repeat=2))
    first.pop("runtime_s"), second.pop("runtime_s")
    assert first == second


@pytest.mark.slow
@pytest.mark.parametrize("slug", MATRIX_SLUGS)
def test_smoke_run_on_gemma3(slug, smoke_run):
    smoke_run(slug, SECOND_MODEL)
