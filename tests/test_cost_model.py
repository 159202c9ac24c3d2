"""The CI cost model's arithmetic on made-up runs."""

import pytest

from cost_model import SmokeRun, project


def _runs():
    first = [SmokeRun(f"nb{i}", "small", 1, t, "ok") for i, t in enumerate((10.0, 20.0, 30.0, 70.0))]
    return first + [SmokeRun("nb0", "small", 2, 10.0, "ok"), SmokeRun("nb0", "big", 1, 30.0, "ok")]


def test_projection_scales_the_per_notebook_cost_and_keeps_fixed_costs():
    p = project(_runs(), "small", setup_s=100, session_s=1000, smoke_phase_s=170, book_tests_s=40,
                families_with_notebooks=1, planned=8, planned_families=2)
    assert p.first_run_median_s == 25.0 and p.first_run_mean_s == 32.5
    assert p.over_target == [("nb3", 70.0)]
    assert p.parallelism == 1.0
    # setup + other tests + book tests scaled by 8/4 + (mean first run x 8 + mean subset run x 2 runs x 2 families)
    assert p.projected_s == pytest.approx(100 + (1000 - 170 - 40) + 40 * 2 + 32.5 * 8 + 20.0 * 4)


def test_full_matrix_projects_two_extra_runs_per_notebook():
    ci = project(_runs(), "small", setup_s=0, session_s=200, smoke_phase_s=170, book_tests_s=0,
                 families_with_notebooks=1, planned=8, planned_families=2)
    full = project(_runs(), "small", setup_s=0, session_s=200, smoke_phase_s=170, book_tests_s=0,
                   families_with_notebooks=1, planned=8, planned_families=2, full_matrix=True)
    assert full.projected_s - ci.projected_s == pytest.approx(20.0 * (16 - 4))


def test_no_default_model_run_is_an_error():
    with pytest.raises(ValueError):
        project([SmokeRun("nb0", "big", 1, 3.0, "ok")], "small", setup_s=0, session_s=1, smoke_phase_s=1,
                book_tests_s=0, families_with_notebooks=1)
