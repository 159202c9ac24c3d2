"""What a CI run costs now, and what it will cost when the collection holds all its papers.

Speed is measured and reported here; it never decides whether a test passes
(only a per-cell timeout, meant to catch a hang, can fail a smoke run).

The test session records every smoke execution (notebook, model, repeat,
seconds) and writes them to ``runs/smoke-times.json`` (``actlab.runner.
smoke_times_path()``), which ``make bench`` and the book read back. At the end
of the session it prints a table and this projection::

    CI(N) = setup + other_tests + book_tests * N / n
            + (mean_first_run * N + mean_subset_run * subset_runs(N)) / parallelism

- ``n`` notebooks today, ``N`` the collection's planned size (53).
- ``setup``: ``make setup`` plus installing Chromium, timed by ``.ci/run``
  (``ACTLAB_SETUP_S``); 0 when the session was started by hand.
- ``other_tests``: the session's wall time outside the smoke phase and the
  book tests (unit tests, contract, tour, citation, repetition check). It
  does not grow with the number of notebooks.
- ``book_tests``: the book build and the browser test, which visit every
  paper page, so they grow in proportion to the notebooks.
- ``mean_first_run``: the mean time of one smoke run of a notebook on the
  default model (every notebook gets one).
- ``subset_runs(N)``: the determinism repeat and the Gemma-3 run on the
  fixed subset (one notebook per family, so two runs per family with
  notebooks, whatever N is); under ``make test-all`` two runs per notebook.
- ``parallelism``: the sum of the smoke runs' times over the smoke phase's
  wall time (1.0 when they run one after another).

The smoke target per notebook on a 2-core machine is a median of 30 s and
none over 60 s: with about 16 minutes of fixed costs that is what fits 53
notebooks in the 40 minutes the projection must stay under. Notebooks over
60 s are listed by name.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

# Filled by the test session: every smoke run, and the wall time spent in them and in the book tests.
SESSION: dict = {"runs": [], "wall_s": 0.0, "book_tests_s": 0.0}

PLANNED_NOTEBOOKS = 53
PLANNED_FAMILIES = 6
TARGET_MEDIAN_S = 30.0
TARGET_MAX_S = 60.0
PROJECTION_LIMIT_MIN = 40.0


@dataclass(frozen=True)
class SmokeRun:
    slug: str
    model: str
    repeat: int
    runtime_s: float
    status: str


@dataclass(frozen=True)
class Projection:
    notebooks: int
    first_run_median_s: float
    first_run_mean_s: float
    slowest: list[tuple[str, float]]
    over_target: list[tuple[str, float]]
    parallelism: float
    setup_s: float
    other_tests_s: float
    book_tests_s: float
    smoke_phase_s: float
    projected_s: float
    projected_notebooks: int

    def lines(self) -> list[str]:
        over = ", ".join(f"{slug} ({seconds:.0f} s)" for slug, seconds in self.over_target) or "none"
        return [
            f"smoke runs on the default model: median {self.first_run_median_s:.1f} s, mean "
            f"{self.first_run_mean_s:.1f} s over {self.notebooks} notebooks (target: median <= "
            f"{TARGET_MEDIAN_S:.0f} s, none over {TARGET_MAX_S:.0f} s)",
            f"notebooks over {TARGET_MAX_S:.0f} s: {over}",
            f"this run: setup {self.setup_s / 60:.1f} min, smoke phase {self.smoke_phase_s / 60:.1f} min "
            f"(parallelism {self.parallelism:.2f}), book tests {self.book_tests_s / 60:.1f} min, other tests "
            f"{self.other_tests_s / 60:.1f} min",
            f"projected CI at {self.projected_notebooks} notebooks: {self.projected_s / 60:.1f} min "
            f"(limit {PROJECTION_LIMIT_MIN:.0f} min)",
        ]


def project(runs: list[SmokeRun], default_model: str, *, setup_s: float, session_s: float, smoke_phase_s: float,
            book_tests_s: float, families_with_notebooks: int, full_matrix: bool = False,
            planned: int = PLANNED_NOTEBOOKS, planned_families: int = PLANNED_FAMILIES) -> Projection:
    """The projection above, from the runs of one test session."""
    first = {r.slug: r.runtime_s for r in runs if r.model == default_model and r.repeat == 1}
    subset = [r.runtime_s for r in runs if not (r.model == default_model and r.repeat == 1)]
    n = len(first)
    if n == 0:
        raise ValueError("no smoke run on the default model was recorded")
    times = sorted(first.values())
    mean_first = statistics.fmean(times)
    mean_subset = statistics.fmean(subset) if subset else mean_first
    busy = sum(r.runtime_s for r in runs)
    parallelism = busy / smoke_phase_s if smoke_phase_s > 0 else 1.0
    parallelism = max(parallelism, 1.0)
    subset_runs_planned = 2 * planned if full_matrix else 2 * max(planned_families, families_with_notebooks)
    other = max(session_s - smoke_phase_s - book_tests_s, 0.0)
    smoke_planned = (mean_first * planned + mean_subset * subset_runs_planned) / parallelism
    projected = setup_s + other + book_tests_s * planned / n + smoke_planned
    ranked = sorted(first.items(), key=lambda kv: -kv[1])
    return Projection(
        notebooks=n, first_run_median_s=statistics.median(times), first_run_mean_s=mean_first,
        slowest=ranked[:5], over_target=[(s, t) for s, t in ranked if t > TARGET_MAX_S], parallelism=parallelism,
        setup_s=setup_s, other_tests_s=other, book_tests_s=book_tests_s, smoke_phase_s=smoke_phase_s,
        projected_s=projected, projected_notebooks=planned)
