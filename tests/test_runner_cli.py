"""The runner and CLI on a tiny throwaway notebook: parameters, claims JSON, metadata and bad input."""

import json

import nbformat
import pytest

from actlab import cli, runner
from probe_notebook import write_probe_notebook

PROBE_CELLS = [
    ("markdown", "# Probe paper\nA notebook used by the tests.", None),
    ("code", 'model = "smollm2-135m"\nprofile = "default"\nseed = 0\nscale = 2.0', ["parameters"]),
    ("code", "import actlab, random\nactlab.seed_everything(seed)\nx = random.random() * scale", None),
    ("code", 'table = actlab.Claims("probe")\n'
             'table.check("C1", "x is below the scale", paper="-", measured=f"{x:.6f}", criterion="x < scale",'
             ' holds=x < scale)\ntable.check("C2", "x is above 1", paper="-", measured=f"{x:.6f}",'
             ' criterion="x > 1", holds=x > 1)\ntable.show()', None),
]


@pytest.fixture()
def probe_dir(tmp_path, monkeypatch):
    notebooks = write_probe_notebook(tmp_path, PROBE_CELLS)
    monkeypatch.setenv("ACTLAB_NOTEBOOKS", str(notebooks))
    return tmp_path


def test_run_writes_notebook_claims_and_metadata(probe_dir, capsys):
    out = probe_dir / "out"
    code = cli.main(["run", "probe", "--profile", "smoke", "-p", "scale=3", "--out", str(out), "--quiet"])
    assert code == 0
    payload = json.loads((out / "probe.claims.json").read_text())
    assert set(payload) == {"slug", "model", "profile", "params", "runtime_s", "claims"}
    assert payload["params"] == {"model": "smollm2-135m", "profile": "smoke", "seed": 0, "scale": 3}
    assert [list(c) for c in payload["claims"]] == [list(runner.CLAIM_FIELDS)] * 2
    assert payload["claims"][0]["verdict"] == "reproduced"
    meta = nbformat.read(out / "probe.ipynb", as_version=4).metadata["actlab"]
    assert meta["profile"] == "smoke" and meta["cpu_threads"] >= 1 and meta["versions"]["torch"]
    printed = capsys.readouterr().out
    assert "C1" in printed and "reproduced" in printed


def test_same_parameters_give_identical_claims(probe_dir):
    results = []
    for name in ("a", "b"):
        runner.run("probe", profile="smoke", params={"seed": 7}, out_dir=probe_dir / name, progress=False)
        payload = json.loads((probe_dir / name / "probe.claims.json").read_text())
        payload.pop("runtime_s")
        results.append(payload)
    assert results[0] == results[1]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_unknown_parameter_fails_before_execution_naming_the_parameters(probe_dir, capsys):
    code = cli.main(["run", "probe", "-p", "layerz=3", "--out", str(probe_dir / "x")])
    assert code == 2
    line = _one_line_error(capsys)
    assert "layerz" in line and "model, profile, seed, scale" in line
    assert not (probe_dir / "x" / "probe.ipynb").exists()


def test_unknown_model_fails_naming_the_known_ones(probe_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = cli.main(["run", "probe", "--model", "nobody/no-such-model-xyz", "--out", str(probe_dir / "x")])
    assert code == 2
    line = _one_line_error(capsys)
    assert "unknown model" in line and "smollm2-135m" in line and "gemma3-270m" in line


def test_unknown_paper_lists_the_notebooks(probe_dir, capsys):
    assert cli.main(["run", "no-such-paper"]) == 2
    assert "probe" in _one_line_error(capsys)


def test_failing_notebook_exits_non_zero_with_its_error(probe_dir, capsys):
    code = cli.main(["run", "probe", "-p", "scale='oops'", "--out", str(probe_dir / "f"), "--quiet"])
    assert code == 1
    assert "TypeError" in capsys.readouterr().err


def test_sweep_grid_is_the_cartesian_product():
    assert runner.sweep_grid({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]


def test_run_prints_no_kernel_warnings_and_names_sections(probe_dir, capfd):
    code = cli.main(["run", "probe", "--profile", "smoke", "--out", str(probe_dir / "w")])
    assert code == 0
    err = capfd.readouterr().err
    assert "WARNING" not in err and "without encryption" not in err, err[-2000:]
    assert "Probe paper" in err, "the progress bar names the section being executed"


def test_sections_are_the_last_heading_above_each_cell():
    cells = [{"cell_type": "code", "source": "x = 1"}, {"cell_type": "markdown", "source": "# Title\ntext"},
             {"cell_type": "code", "source": "y = 2"}, {"cell_type": "markdown", "source": "## 2. Method"},
             {"cell_type": "code", "source": "z = 3"}]
    assert runner._section_names(cells) == ["start", "Title", "Title", "2. Method", "2. Method"]


def test_a_hanging_cell_fails_the_run_at_its_timeout(probe_dir):
    nb = nbformat.read(probe_dir / "notebooks" / "probe.ipynb", as_version=4)
    nb.cells.insert(3, nbformat.v4.new_code_cell("import time\ntime.sleep(60)"))
    nbformat.write(nb, probe_dir / "notebooks" / "probe.ipynb")
    result = runner.run("probe", out_dir=probe_dir / "t", progress=False, cell_timeout_s=3)
    assert result.error and "Timeout" in result.error
    assert result.record["status"] == "failed"


def test_run_records_the_source_hash_and_staleness_follows_edits(probe_dir):
    result = runner.run("probe", out_dir=probe_dir / "h", progress=False)
    executed = nbformat.read(result.notebook, as_version=4)
    source = nbformat.read(probe_dir / "notebooks" / "probe.ipynb", as_version=4)
    assert executed.metadata["actlab"]["source_sha256"] == runner.source_hash(source)
    assert runner.source_status(executed) == "current", "the injected-parameters cell is not part of the source"
    executed.cells[0].source += "\nA markdown edit after the run."
    assert runner.source_status(executed) == "stale"
    del executed.metadata["actlab"]["source_sha256"]
    assert runner.source_status(executed) == "not_recorded"


def test_artifacts_list_on_an_empty_cache_says_how_to_build(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACTLAB_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["artifacts", "list"]) == 0
    assert "actlab artifacts build" in capsys.readouterr().out
