import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import cost_model  # noqa: E402  (needs the path above)

REPO = Path(__file__).resolve().parents[1]
_STARTED = time.perf_counter()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def pytest_runtest_logreport(report):  # noqa: ANN001, ANN201
    # The book build and the browser test visit every paper page: the cost model scales them with the notebooks.
    if report.nodeid.startswith("tests/test_book.py") or "/test_book.py::" in report.nodeid:
        cost_model.SESSION["book_tests_s"] += report.duration


def _families_with_notebooks() -> int:
    import yaml

    from actlab.runner import list_notebooks

    notebooks = set(list_notebooks())
    families = yaml.safe_load((REPO / "book" / "families.yml").read_text())
    return sum(1 for family in families if notebooks & set(family["slugs"]))


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001, ANN201
    """Print the smoke-run times and the cost model, and keep them for `make bench` and the book."""
    session = cost_model.SESSION
    if not session["runs"]:
        return
    from actlab import runner

    write = terminalreporter.write_line
    terminalreporter.section("smoke runs and the CI cost model (tests/cost_model.py)")
    runs = [cost_model.SmokeRun(**r) for r in session["runs"]]
    write(f"{'notebook':28s} {'model':14s} {'run':>3s} {'seconds':>8s}  status")
    for r in sorted(runs, key=lambda r: (r.slug, r.model, r.repeat)):
        flag = "  over 60 s" if r.runtime_s > cost_model.TARGET_MAX_S else ""
        write(f"{r.slug:28s} {r.model:14s} {r.repeat:3d} {r.runtime_s:8.1f}  {r.status}{flag}")
    full = os.environ.get("ACTLAB_TEST_MATRIX", "") == "full"
    report = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                 text=True).stdout.strip() or "unknown",
        "matrix": "full" if full else "ci", "workers": session.get("workers", 1), "runs": session["runs"], "smoke_phase_s": round(session["wall_s"], 1),
        "book_tests_s": round(session["book_tests_s"], 1), "session_s": round(time.perf_counter() - _STARTED, 1),
        "setup_s": float(os.environ.get("ACTLAB_SETUP_S", "0") or 0),
    }
    try:
        projection = cost_model.project(
            runs, "smollm2-135m", setup_s=report["setup_s"], session_s=report["session_s"],
            smoke_phase_s=report["smoke_phase_s"], book_tests_s=report["book_tests_s"],
            families_with_notebooks=_families_with_notebooks(), full_matrix=full)
    except ValueError as exc:
        write(f"no projection: {exc}")
    else:
        for line in projection.lines():
            write(line)
        report["projection"] = {"notebooks": projection.projected_notebooks,
                                "projected_min": round(projection.projected_s / 60, 1),
                                "median_s": round(projection.first_run_median_s, 1),
                                "over_60_s": [slug for slug, _ in projection.over_target]}
    path = runner.smoke_times_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    write(f"kept in {path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}")
