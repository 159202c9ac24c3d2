"""Intervals for the measured figures of a claims table, and comparisons that become verdicts.

A claim such as "probe A beats probe B" is decided on a 95 % interval, not on
two point estimates: :func:`compare` resamples the items both were measured
on (a paired bootstrap) and the claim counts as holding only when the whole
interval of the difference lies on the claimed side::

    gap = stats.compare(auc_sae_per_split, auc_baseline_per_split, names=("SAE probe", "baseline"))
    claims.check("C3", measured=str(gap), criterion="SAE - baseline > 0, 95 % interval",
                 criterion_source="card", holds=gap)

Passing the :class:`Comparison` itself as ``holds`` lets the claims table see
its direction: a difference whose interval lies on the opposite side is
``not_reproduced`` even where a weaker ``partially`` criterion would hold.

Percentile bootstrap throughout (resamples of the items, with replacement,
from a seeded NumPy generator), so every interval is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
N_RESAMPLES = 2000

Statistic = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    level: float = LEVEL

    def __str__(self) -> str:
        return self.format()

    def format(self, digits: int = 3) -> str:
        """``"0.912 [0.881, 0.934]"``."""
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def excludes(self, value: float) -> bool:
        return not self.low <= value <= self.high


def _as_array(values: object) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"expected a non-empty 1-D array of per-item values, got shape {array.shape}")
    return array


def _resample(statistic: Statistic, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``statistic`` of each resample (rows of indices); NumPy's reducers run on all resamples at once."""
    if statistic in (np.mean, np.median, np.sum):
        return statistic(x[rows], axis=1)
    return np.array([statistic(x[r]) for r in rows])


def _percentiles(resampled: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(resampled, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(values: object, statistic: Statistic = np.mean, *, n_resamples: int = N_RESAMPLES,
                 level: float = LEVEL, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of ``statistic`` over per-item ``values``."""
    x = _as_array(values)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(x), size=(n_resamples, len(x)))
    resampled = _resample(statistic, x, rows)
    return Interval(float(statistic(x)), *_percentiles(resampled, level), level=level)


def paired_bootstrap_ci(a: object, b: object, statistic: Statistic = np.mean, *, n_resamples: int = N_RESAMPLES,
                        level: float = LEVEL, seed: int = 0) -> Interval:
    """Interval of ``statistic(a) - statistic(b)``, resampling the items both were measured on together."""
    x, y = _as_array(a), _as_array(b)
    if x.shape != y.shape:
        raise ValueError(f"paired values need the same items: {len(x)} vs {len(y)}")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(x), size=(n_resamples, len(x)))
    resampled = _resample(statistic, x, rows) - _resample(statistic, y, rows)
    return Interval(float(statistic(x) - statistic(y)), *_percentiles(resampled, level), level=level)


def two_sample_bootstrap_ci(statistic: Callable[[np.ndarray, np.ndarray], float], n_a: int, n_b: int, *,
                            n_resamples: int = N_RESAMPLES, level: float = LEVEL, seed: int = 0) -> Interval:
    """Interval of a statistic of two independent samples, resampling each sample on its own.

    ``statistic(rows_a, rows_b)`` receives row indices into sample A (``n_a`` items) and sample B
    (``n_b`` items); the estimate uses every row once. Use it where the items of A and B are not
    the same units (a distance between two sets of texts, a ratio of two groups' means), so no
    pairing by position is implied. Quantities measured on the same units of A stay paired by
    computing them from the same ``rows_a``.
    """
    if n_a < 1 or n_b < 1:
        raise ValueError(f"both samples need at least one item, got {n_a} and {n_b}")
    rng = np.random.default_rng(seed)
    resampled = np.array([statistic(rng.integers(0, n_a, n_a), rng.integers(0, n_b, n_b))
                          for _ in range(n_resamples)], dtype=float)
    estimate = float(statistic(np.arange(n_a), np.arange(n_b)))
    return Interval(estimate, *_percentiles(resampled, level), level=level)


def auroc(labels: object, scores: object) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative (ties 1/2)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes among the labels")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def _stratified_rows(y: np.ndarray, rng: np.random.Generator, n_resamples: int) -> np.ndarray:
    """Resampled row indices that keep the number of positives and negatives (so AUROC is always defined)."""
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    return np.concatenate([pos[rng.integers(0, len(pos), size=(n_resamples, len(pos)))],
                           neg[rng.integers(0, len(neg), size=(n_resamples, len(neg)))]], axis=1)


def auroc_ci(labels: object, scores: object, *, n_resamples: int = N_RESAMPLES, level: float = LEVEL,
             seed: int = 0) -> Interval:
    """AUROC with a stratified percentile-bootstrap interval."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    rows = _stratified_rows(y, np.random.default_rng(seed), n_resamples)
    resampled = np.array([auroc(y[r], s[r]) for r in rows])
    return Interval(auroc(y, s), *_percentiles(resampled, level), level=level)


def paired_auroc_ci(labels: object, scores_a: object, scores_b: object, *, n_resamples: int = N_RESAMPLES,
                    level: float = LEVEL, seed: int = 0) -> Interval:
    """Interval of AUROC(a) - AUROC(b) for two scorers of the same items (stratified paired bootstrap)."""
    y = np.asarray(labels).astype(bool)
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    rows = _stratified_rows(y, np.random.default_rng(seed), n_resamples)
    resampled = np.array([auroc(y[r], a[r]) - auroc(y[r], b[r]) for r in rows])
    return Interval(auroc(y, a) - auroc(y, b), *_percentiles(resampled, level), level=level)


@dataclass(frozen=True)
class Comparison:
    """The claim "A beats B by more than ``margin``", decided on the interval of A - B.

    ``holds``: the whole interval lies above ``margin`` (the opposite is excluded).
    ``against``: the whole interval lies below ``-margin`` for a claim that A is
    higher, i.e. the data point the other way. Neither: the data cannot tell.
    """

    difference: Interval
    names: tuple[str, str] = ("A", "B")
    margin: float = 0.0

    @property
    def holds(self) -> bool:
        return self.difference.low > self.margin

    @property
    def against(self) -> bool:
        return self.difference.high < -self.margin

    def __bool__(self) -> bool:
        return self.holds

    def __str__(self) -> str:
        a, b = self.names
        return f"{a} - {b} = {self.difference}"


def compare(a: object, b: object, *, statistic: Statistic = np.mean, names: tuple[str, str] = ("A", "B"),
            margin: float = 0.0, n_resamples: int = N_RESAMPLES, level: float = LEVEL, seed: int = 0
            ) -> Comparison:
    """Compare per-item values of A and B measured on the same items (paired bootstrap of the difference)."""
    interval = paired_bootstrap_ci(a, b, statistic, n_resamples=n_resamples, level=level, seed=seed)
    return Comparison(interval, names, margin)


def comparer(*, n_resamples: int = N_RESAMPLES, level: float = LEVEL, seed: int = 0
             ) -> Callable[..., Comparison]:
    """:func:`compare` with a notebook's resampling settings bound once.

    ``paired = stats.comparer(n_resamples=n_bootstrap, seed=seed)``, then
    ``paired(gain, baseline, ("steered", "unsteered"), margin=0.1)`` anywhere in the notebook.
    """

    def paired(a: object, b: object, names: tuple[str, str] = ("A", "B"), margin: float = 0.0,
               statistic: Statistic = np.mean) -> Comparison:
        return compare(a, b, statistic=statistic, names=names, margin=margin, n_resamples=n_resamples,
                       level=level, seed=seed)

    return paired


def compare_aurocs(labels: object, scores_a: object, scores_b: object, *, names: tuple[str, str] = ("A", "B"),
                   margin: float = 0.0, n_resamples: int = N_RESAMPLES, level: float = LEVEL, seed: int = 0
                   ) -> Comparison:
    """Compare two scorers' AUROC on the same labelled items."""
    interval = paired_auroc_ci(labels, scores_a, scores_b, n_resamples=n_resamples, level=level, seed=seed)
    return Comparison(interval, names, margin)
