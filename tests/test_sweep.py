"""`actlab sweep` on a tiny throwaway notebook: the grid, both executors, the table, the figure and bad input."""

import contextlib
import io
import os
import stat

import pandas as pd
import pytest

from actlab import cli, sweep
from actlab.claims import CLAIMS_MIME
from actlab.sweep import RUNTIME_COLUMNS
from probe_notebook import write_probe_notebook

# `model` goes into a claim's measured column, so the table shows which model each point was given;
# `scale='oops'` makes the point fail with a TypeError. The claims table is displayed as the raw MIME
# bundle that actlab.Claims.show() emits, because importing actlab in every kernel costs ~10 s of CPU.
CLAIMS_CELL = """\
import json
from IPython.display import display

def claim(id, text, measured, holds):
    return {"id": id, "claim": text, "paper": "-", "measured": str(measured), "criterion": "-",
            "verdict": "reproduced" if holds else "not_reproduced"}

claims = [claim("C1", "x is below the scale", f"{x:.6f}", x < scale),
          claim("C2", "x is above 1", f"{x:.6f}", x > 1),
          claim("C3", "the model is passed through", model, True)]
display({"%s": json.dumps({"slug": "probe", "claims": claims}), "text/plain": "claims"}, raw=True)
""" % CLAIMS_MIME
PROBE_CELLS = [
    ("markdown", "# Probe paper\nA notebook used by the sweep tests.", None),
    ("code", 'model = "smollm2-135m"\nprofile = "default"\nseed = 0\nscale = 2.0', ["parameters"]),
    ("code", "import random\nrandom.seed(seed)\nx = random.random() * scale", None),
    ("code", CLAIMS_CELL, None),
]


def _probe_env(monkeypatch, notebooks):
    # Set in os.environ, so pool workers and submitit's subprocesses inherit them; monkeypatch undoes it.
    monkeypatch.setenv("ACTLAB_NOTEBOOKS", str(notebooks))
    monkeypatch.setenv("ACTLAB_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture()
def probe_dir(tmp_path, monkeypatch):
    _probe_env(monkeypatch, write_probe_notebook(tmp_path, PROBE_CELLS))
    return tmp_path


@pytest.fixture(scope="module")
def shared_probe_dir(tmp_path_factory):
    """A probe notebook for the module: the 2x2 local sweep runs once and two tests read it."""
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _probe_env(monkeypatch, write_probe_notebook(root, PROBE_CELLS))
        yield root


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _without_runtime(path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False).drop(columns=list(RUNTIME_COLUMNS))


GRID_2X2 = ["-p", "seed=0,1", "-p", "scale=1.5,3"]


@pytest.fixture(scope="module")
def local_sweep(shared_probe_dir):
    out = shared_probe_dir / "local"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["sweep", "probe", *GRID_2X2, "--executor", "local", "--jobs", "2", "--out", str(out)])
    return code, out, printed.getvalue()


def test_local_sweep_writes_one_table_and_one_figure(local_sweep):
    code, out, printed = local_sweep
    assert code == 0
    table = pd.read_csv(out / "sweep.csv", keep_default_na=False)
    assert list(table.columns) == ["point", "model", "profile", "seed", "scale", "claim_id", "claim", "paper",
                                   "measured", "criterion", "verdict", "status", "error", "runtime_s",
                                   "cpu_threads"]
    points = ["seed=0,scale=1.5", "seed=0,scale=3", "seed=1,scale=1.5", "seed=1,scale=3"]
    assert list(dict.fromkeys(table["point"])) == points
    assert len(table) == 4 * 3 and set(table["status"]) == {"ok"} and set(table["cpu_threads"]) == {1}
    assert set(table.loc[table["claim_id"] == "C1", "verdict"]) == {"reproduced"}
    for point in points:
        assert (out / point / "probe.ipynb").exists() and (out / point / "probe.claims.json").exists()
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "seed=1,scale=3: C1 reproduced" in printed
    assert str(out / "sweep.csv") in printed and str(out / "sweep.png") in printed


def test_submitit_local_gives_the_same_table_as_local(local_sweep, shared_probe_dir):
    out = shared_probe_dir / "submitit"
    code = cli.main(["sweep", "probe", *GRID_2X2, "--executor", "submitit-local", "--out", str(out)])
    assert code == 0
    assert list((out / "logs").glob("*_log.out")), "submitit logs go into the sweep's folder"
    assert (out / "sweep.png").exists()
    pd.testing.assert_frame_equal(_without_runtime(out / "sweep.csv"), _without_runtime(local_sweep[1] / "sweep.csv"))


def test_a_model_grid_passes_each_model_to_its_point(probe_dir):
    out = probe_dir / "models"
    code = cli.main(["sweep", "probe", "-p", "model=smollm2-135m,gemma3-270m", "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out / "sweep.csv", keep_default_na=False)
    c3 = table[table["claim_id"] == "C3"]
    assert list(c3["point"]) == ["model=smollm2-135m", "model=gemma3-270m"]
    assert list(c3["measured"]) == list(c3["model"]) == ["smollm2-135m", "gemma3-270m"]


def test_a_failing_point_is_recorded_and_the_others_complete(probe_dir, capsys):
    out = probe_dir / "failing"
    code = cli.main(["sweep", "probe", "-p", "scale=2,'oops'", "--out", str(out)])
    assert code == 1
    table = pd.read_csv(out / "sweep.csv", keep_default_na=False)
    failed = table[table["status"] == "failed"]
    assert list(failed["point"]) == ["scale=oops"] and "TypeError" in failed["error"].iloc[0]
    assert failed["claim_id"].iloc[0] == ""
    assert len(table[(table["point"] == "scale=2") & (table["status"] == "ok")]) == 3
    assert (out / "sweep.png").exists()
    captured = capsys.readouterr()
    assert "scale=oops: FAILED TypeError" in captured.out and "1 of 2 points failed" in captured.err


@pytest.mark.parametrize("argv, words", [
    (["-p", "layerz=1,2"], ["layerz", "model, profile, seed, scale"]),
    (["-p", "model=smollm2-135m,nobody/../x"], ["unknown model", "gemma3-270m"]),
    (["-p", "profile=smoke,default"], ["profile is not a sweep key", "--profile"]),
    (["--model", "gemma3-270m", "-p", "model=smollm2-135m"], ["--model", "-p model="]),
    (["-p", "seed"], ["KEY=V1,V2"]),
])
def test_bad_input_fails_with_one_line_before_anything_runs(probe_dir, capsys, argv, words):
    out = probe_dir / "bad"
    assert cli.main(["sweep", "probe", *argv, "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert all(word in line for word in words), line
    assert not out.exists()


def test_slurm_without_sbatch_fails_with_one_line_naming_submitit_local(probe_dir, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(probe_dir))  # a PATH with no sbatch on it
    out = probe_dir / "slurm"
    assert cli.main(["sweep", "probe", "-p", "seed=0,1", "--executor", "slurm", "--out", str(out)]) == 2
    assert "--executor submitit-local" in _one_line_error(capsys)
    assert capsys.readouterr().out == "" and not out.exists()


def test_slurm_submits_one_job_array_with_the_resources_asked(probe_dir, monkeypatch):
    # A stand-in sbatch that only acknowledges the submission: the script submitit writes is what is checked.
    bin_dir = probe_dir / "bin"
    bin_dir.mkdir()
    for tool, reply in (("sbatch", "Submitted batch job 4242"), ("srun", "")):
        fake = bin_dir / tool
        fake.write_text(f"#!/bin/sh\necho '{reply}'\n")
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    plan = sweep.plan_sweep("probe", {"seed": [0, 1, 2]}, out_dir=probe_dir / "slurm")
    options = sweep.SlurmOptions(partition="cpu", time_min=30, mem_gb=8, cpus_per_task=2, array_parallelism=2)
    jobs = sweep.submit_points(sweep.make_submitit_executor(plan, "slurm", options), plan)
    assert [job.job_id for job in jobs] == ["4242_0", "4242_1", "4242_2"]
    script = next((probe_dir / "slurm" / "logs").glob("*_submission.sh")).read_text()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=cpu", "#SBATCH --time=30", "#SBATCH --mem=8GB",
                 "#SBATCH --cpus-per-task=2"):
        assert line in script, script


def test_split_values_keeps_lists_and_quoted_commas_together():
    assert sweep.split_values("1, [2,3],'a,b'") == ["1", "[2,3]", "'a,b'"]
    assert sweep.parse_grid(["layer_fracs=[0.3,0.5],[0.7]"]) == {"layer_fracs": [[0.3, 0.5], [0.7]]}
