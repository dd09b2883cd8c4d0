"""Reading a version's metrics: numbers as they come back from JSON, and the
95% interval of an accuracy. Shared by the activation policy, the status page
and the chart, so that they agree on what counts as a measurement.

Accuracy intervals are Wilson score intervals (labeling.quality.stats.wilson),
not the normal approximation, which collapses to "0.0% ±0.0" on one held-out
pair. Below MIN_PAIRS_TO_JUDGE held-out pairs the page says "too few pairs to
judge" instead of a percentage.
"""

import math

from labeling.quality.stats import wilson

# Fewer held-out pairs than this say nothing a person should act on: even a perfect score's Wilson interval
# reaches down to about 72% at n = 10 (to 21% at n = 1).
MIN_PAIRS_TO_JUDGE = 10


def finite_number(value) -> float | None:
    """A metric read back from JSON as a float, or None when it is missing, not a number or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def accuracy_interval(p: float | None, n) -> tuple[float, float] | None:
    """The 95% Wilson interval (low, high) of an accuracy p measured on n pairs; None without both."""
    if p is None or isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return None
    interval = wilson(min(n, max(0, round(p * n))), n)
    return interval.low, interval.high


def too_few_to_judge(n) -> bool:
    """True when an accuracy rests on too few pairs to show as a figure (or on none)."""
    return isinstance(n, bool) or not isinstance(n, int) or n < MIN_PAIRS_TO_JUDGE
