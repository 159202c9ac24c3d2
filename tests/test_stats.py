"""actlab.stats: intervals that cover at their nominal rate, AUROC, and comparisons that become verdicts."""

import numpy as np
import pytest

from actlab import stats


def test_bootstrap_interval_covers_the_true_mean_at_about_its_nominal_rate():
    rng = np.random.default_rng(0)
    trials, covered = 300, 0
    for trial in range(trials):
        sample = rng.exponential(scale=2.0, size=80)          # skewed, true mean 2.0
        covered += not stats.bootstrap_ci(sample, n_resamples=1000, seed=trial).excludes(2.0)
    # Percentile intervals on n = 80 skewed draws run slightly under 95 %; a broken one is far off.
    assert 0.89 <= covered / trials <= 0.985, covered / trials


def test_paired_interval_is_narrower_than_ignoring_the_pairing_and_covers_the_true_gap():
    rng = np.random.default_rng(1)
    difficulty = rng.normal(0, 3, size=200)                   # shared by both methods: pairing removes it
    a = difficulty + 0.5 + rng.normal(0, 0.3, size=200)
    b = difficulty + rng.normal(0, 0.3, size=200)
    paired = stats.paired_bootstrap_ci(a, b)
    unpaired_width = 2 * 1.96 * np.sqrt(a.var() / 200 + b.var() / 200)
    assert not paired.excludes(0.5) and paired.low > 0
    assert paired.high - paired.low < unpaired_width / 4
    assert str(paired).count("[") == 1 and paired.format(2).startswith(f"{paired.estimate:.2f} [")


def test_auroc_matches_the_pairwise_definition_with_ties():
    labels = np.array([1, 1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.4, 0.4, 0.1, 0.7, 0.8])
    pairs = [(p, n) for p in scores[labels == 1] for n in scores[labels == 0]]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert stats.auroc(labels, scores) == pytest.approx(expected)
    assert stats.auroc(labels, -scores) == pytest.approx(1 - expected)
    with pytest.raises(ValueError, match="both classes"):
        stats.auroc([1, 1], [0.2, 0.3])


def test_auroc_interval_contains_its_estimate_and_shrinks_with_more_items():
    rng = np.random.default_rng(2)

    def width(n):
        y = rng.integers(0, 2, size=n)
        interval = stats.auroc_ci(y, y + rng.normal(0, 1.5, size=n), n_resamples=500)
        assert interval.low <= interval.estimate <= interval.high
        return interval.high - interval.low

    assert width(1000) < width(60) / 2


def test_a_comparison_holds_only_when_its_interval_excludes_the_opposite():
    rng = np.random.default_rng(3)
    base = rng.normal(0, 1, size=64)
    clear = stats.compare(base + 0.5 + rng.normal(0, 0.1, 64), base, names=("SAE probe", "baseline"))
    unclear = stats.compare(base + rng.normal(0, 1, 64), base)
    opposite = stats.compare(base - 0.5 + rng.normal(0, 0.1, 64), base)
    assert clear.holds and bool(clear) and not clear.against
    assert not unclear.holds and not unclear.against
    assert opposite.against and not opposite.holds
    assert str(clear).startswith("SAE probe - baseline = ")
    assert not stats.compare(base + 0.5, base, margin=1.0).holds   # above zero, not above the margin


def test_aurocs_compared_on_the_same_items():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=400)
    good, poor = y + rng.normal(0, 0.5, 400), y + rng.normal(0, 3.0, 400)
    assert stats.compare_aurocs(y, good, poor).holds
    assert stats.compare_aurocs(y, poor, good).against


def test_comparer_binds_the_resampling_settings_of_compare():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.3, 1, 40), rng.normal(0, 1, 40)
    paired = stats.comparer(n_resamples=300, seed=7)
    got, want = paired(a, b, ("a", "b"), margin=0.05), stats.compare(a, b, names=("a", "b"), margin=0.05,
                                                                     n_resamples=300, seed=7)
    assert got == want and str(got).startswith("a - b")
    assert paired(a, b, statistic=np.median) == stats.compare(a, b, statistic=np.median, n_resamples=300, seed=7)
    assert paired(a, b) != stats.compare(a, b, n_resamples=300, seed=8)


def test_two_sample_bootstrap_resamples_each_sample_on_its_own():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.0, 1, 30), rng.normal(0.0, 3, 50)
    seen = []

    def gap(rows_a, rows_b):
        seen.append((len(rows_a), len(rows_b)))
        return a[rows_a].mean() - b[rows_b].mean()

    got = stats.two_sample_bootstrap_ci(gap, len(a), len(b), n_resamples=400, seed=1)
    assert got.estimate == pytest.approx(a.mean() - b.mean()) and got.low < got.estimate < got.high
    assert set(seen) == {(30, 50)}
    # the spread follows the two samples' own standard errors, not a pairing by position
    se = np.sqrt(a.var() / 30 + b.var() / 50)
    assert 2.5 * se < got.high - got.low < 5.5 * se
    assert stats.two_sample_bootstrap_ci(gap, 30, 50, n_resamples=400, seed=1) == got
    with pytest.raises(ValueError, match="at least one"):
        stats.two_sample_bootstrap_ci(gap, 0, 50)
