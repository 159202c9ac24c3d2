"""The smoke pool on a tiny throwaway notebook: runs side by side, outcomes by key, the phase's wall time."""

import pytest
from probe_notebook import write_probe_notebook
from smoke_pool import SmokePool, default_workers

PROBE_CELLS = [
    ("markdown", "# Probe paper\nA notebook used by the smoke-pool tests.", None),
    ("code", 'model = "smollm2-135m"\nprofile = "default"\nseed = 0', ["parameters"]),
    ("code", "import os, random\nrandom.seed(seed)\nthreads = os.environ['ACTLAB_THREADS']", None),
    ("code", 'import actlab\ntable = actlab.Claims("probe")\n'
             'table.check("C1", "the model is passed through", paper="-", measured=model, criterion="-",'
             ' holds=True)\ntable.show()', None),
]


def test_default_workers_follow_the_cores_and_the_environment(monkeypatch):
    monkeypatch.delenv("ACTLAB_SMOKE_WORKERS", raising=False)
    assert default_workers(1) == 1 and default_workers(2) == 2 and default_workers(16) == 2
    monkeypatch.setenv("ACTLAB_SMOKE_WORKERS", "3")
    assert default_workers(2) == 3
    monkeypatch.setenv("ACTLAB_SMOKE_WORKERS", "0")
    with pytest.raises(ValueError, match="at least 1"):
        default_workers(2)


def test_the_pool_runs_every_key_once_with_its_share_of_the_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTLAB_NOTEBOOKS", str(write_probe_notebook(tmp_path, PROBE_CELLS)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pool = SmokePool(tmp_path / "out", workers=2, cell_timeout_s=60, cores=2)
    try:
        keys = [("probe", "smollm2-135m", 1), ("probe", "smollm2-135m", 2), ("probe", "gemma3-270m", 1)]
        pool.submit(keys + keys[:1])
        outcomes = {key: pool.outcome(key) for key in keys}
    finally:
        pool.close()
    assert all(o["error"] is None and o["status"] == "ok" and o["threads"] == 1 for o in outcomes.values())
    assert [c["measured"] for c in outcomes[keys[2]]["payload"]["claims"]] == ["gemma3-270m"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"probe-{m}-{r}" for _, m, r in keys)
    assert 0 < pool.phase_wall_s() < sum(o["runtime_s"] for o in outcomes.values()) + 60
