"""Paired differences over a few seeds: the mean, the sample standard deviation and a 95% t-interval.

Each seed fixes the world, the starting weights and the data order for every student of a run, so two
students are compared seed by seed (d_s = a_s - b_s) and the interval is on the mean of those
differences: d̄ ± t(0.975, n-1) · s / √n, with s the *sample* standard deviation (n - 1). With n seeds
the interval excludes 0 only for gaps above roughly t · s / √n; ``docs/RESULTS.md`` says what that
means for the demo. No bootstrap: over 3-5 seeds it has too few distinct resamples.

Guarantees: exact t quantiles for 1-30 degrees of freedom (a table, so no SciPy is needed), the normal
1.96 beyond. Not guaranteed: that seed noise is normal; the count of positive seeds is reported beside
the interval for that reason.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# t(0.975, df) for df = 1..30
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # fmt: skip


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"a t-interval needs at least 1 degree of freedom (2 seeds), got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def sample_sd(values: list[float]) -> float:
    """The sample standard deviation (divides by n - 1); 0 for a single value."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class Paired:
    """``a - b`` seed by seed, in points."""

    diffs: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.mean(self.diffs)

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% t-interval on the mean difference (None with a single seed)."""
        n = len(self.diffs)
        if n < 2:
            return None
        half = t975(n - 1) * sample_sd(list(self.diffs)) / math.sqrt(n)
        return self.mean - half, self.mean + half

    @property
    def positive(self) -> int:
        return sum(d > 0 for d in self.diffs)

    def describe(self) -> str:
        """``+3.2 [−1.0, +7.4], 2 of 3 seeds > 0 (includes 0)``."""
        ci = self.interval
        text = f"{self.mean:+.1f}"
        if ci is not None:
            text += f" [{ci[0]:+.1f}, {ci[1]:+.1f}]"
        text += f", {self.positive} of {len(self.diffs)} seeds > 0"
        if ci is not None and ci[0] <= 0 <= ci[1]:
            text += " (includes 0)"
        return text


def paired(a: list[float], b: list[float]) -> Paired:
    if len(a) != len(b) or not a:
        raise ValueError(f"paired differences need the same seeds on both sides ({len(a)} and {len(b)})")
    return Paired(tuple(x - y for x, y in zip(a, b, strict=True)))
