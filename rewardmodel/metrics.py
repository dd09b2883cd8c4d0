"""Reading a version's metrics: numbers as they come back from JSON, and the
95% interval of an accuracy. Shared by the activation policy, the status page
and the chart, so that they agree on what counts as a measurement."""

import math


def finite_number(value) -> float | None:
    """A metric read back from JSON as a float, or None when it is missing, not a number or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def binomial_half_width(p: float | None, n) -> float | None:
    """1.96 * sqrt(p (1 - p) / n): the 95% interval half-width of an accuracy measured on n pairs."""
    if p is None or not isinstance(n, int) or n < 1:
        return None
    return 1.96 * math.sqrt(max(p * (1 - p), 0.0) / n)
