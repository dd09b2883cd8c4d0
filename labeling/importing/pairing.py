"""Which pairs of an import's responses become comparisons, and which side is A.

A `pairs` or `hh` line names its one pair. A `responses` line gives n responses
to one prompt, and n * (n - 1) / 2 pairs is too many to ask raters about once n
grows; spread_pairs picks at most max_pairs_per_prompt of them. An `hh` line
says which reply people chose, and pair_order decides which of the two is
stored as A, so that the label is not always "a".
"""

import hashlib
from itertools import combinations

from django.conf import settings


def pairs_per_prompt(max_pairs_per_prompt: int | None) -> int:
    """The cap on comparisons from one `responses` line: the one asked for, or
    settings.LABELING_MAX_PAIRS_PER_PROMPT."""
    cap = settings.LABELING_MAX_PAIRS_PER_PROMPT if max_pairs_per_prompt is None else max_pairs_per_prompt
    if cap < 1:
        raise ValueError("max_pairs_per_prompt must be at least 1.")
    return cap


def spread_pairs(n: int, cap: int) -> list[tuple[int, int]]:
    """Which pairs (i < j) of n responses to compare, at most cap of them.

    Greedy and deterministic, so a re-import picks the same pairs: each next pair
    first joins two groups not yet linked by comparisons (a Bradley-Terry fit can
    only rank responses it can connect), then touches the least-compared
    responses; remaining ties go to the earliest pair.

    >>> spread_pairs(6, 4)
    [(0, 1), (2, 3), (4, 5), (0, 2)]
    """
    remaining = list(combinations(range(n), 2))
    if cap >= len(remaining):
        return remaining
    group, degree, chosen = list(range(n)), [0] * n, []
    for _ in range(cap):
        i, j = min(
            remaining,
            key=lambda p: (group[p[0]] == group[p[1]], max(degree[p[0]], degree[p[1]]), degree[p[0]] + degree[p[1]], p),
        )
        remaining.remove((i, j))
        chosen.append((i, j))
        degree[i] += 1
        degree[j] += 1
        old, new = group[j], group[i]
        group = [new if g == old else g for g in group]
    return chosen


def pair_order(chosen_hash: str, rejected_hash: str) -> tuple[str, str, str]:
    """(A, B, reference label) for an hh pair, given the content hashes of its replies.

    A hash of the two texts decides: random-looking and balanced, yet the same
    on every import of the file.
    """
    if hashlib.sha256((chosen_hash + rejected_hash).encode()).digest()[0] & 1:
        return chosen_hash, rejected_hash, "a"
    return rejected_hash, chosen_hash, "b"


def unordered(a, b) -> tuple:
    """The key of a pair whichever side it is written on: (a, b) and (b, a) are one comparison."""
    return (a, b) if a <= b else (b, a)


def flipped(label: str) -> str:
    """The same answer seen from the other side: "a" <-> "b"."""
    return {"a": "b", "b": "a"}[label]
