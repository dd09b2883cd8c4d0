import numpy as np
import pytest

from labeling.quality.stats import leaderboard


def _matches(strengths: dict[str, float], n: int, seed: int, tie_share: float = 0.0):
    """Matches drawn from a Bradley–Terry model with the given natural-log strengths."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    matches = []
    for _ in range(n):
        a, b = rng.choice(len(names), size=2, replace=False)
        p_a = 1 / (1 + np.exp(strengths[names[b]] - strengths[names[a]]))
        if rng.random() < tie_share:
            outcome = "tie"
        else:
            outcome = "a" if rng.random() < p_a else "b"
        matches.append((names[a], names[b], outcome))
    return matches


def test_it_recovers_the_order_of_known_strengths():
    strengths = {"m1": 1.0, "m2": 0.5, "m3": 0.0, "m4": -0.5, "m5": -1.0}

    board = leaderboard(_matches(strengths, 4000, seed=0), n_bootstrap=200, seed=0)

    assert [row["source"] for row in board] == ["m1", "m2", "m3", "m4", "m5"]
    for row in board:
        assert row["low"] <= row["rating"] <= row["high"]
    # on the Elo scale a log-strength gap of 0.5 is 400·0.5/ln 10 = 86.9 points
    gaps = [board[i]["rating"] - board[i + 1]["rating"] for i in range(4)]
    assert np.mean(gaps) == pytest.approx(86.9, abs=15)


def test_its_intervals_cover_the_true_ratings():
    strengths = {"m1": 0.6, "m2": 0.0, "m3": -0.6}
    true = {k: 400 * v / np.log(10) for k, v in strengths.items()}

    board = leaderboard(_matches(strengths, 3000, seed=1), n_bootstrap=300, seed=1)

    for row in board:
        assert row["low"] - 1000 <= true[row["source"]] <= row["high"] - 1000


def test_a_ten_to_one_record_is_about_400_points():
    matches = [("strong", "weak", "a")] * 1000 + [("strong", "weak", "b")] * 100

    board = leaderboard(matches, n_bootstrap=50, seed=0)

    assert board[0]["source"] == "strong"
    assert board[0]["rating"] - board[1]["rating"] == pytest.approx(400, abs=10)
    assert board[0]["rating"] + board[1]["rating"] == pytest.approx(2000)


def test_ties_count_as_half_a_win_each():
    only_ties = leaderboard([("x", "y", "tie")] * 50, n_bootstrap=20, seed=0)
    assert only_ties[0]["rating"] == pytest.approx(1000) == only_ties[1]["rating"]

    # 30 wins + 20 ties = 40 of 50 credited to x: 4:1 odds, 400·log10(4) = 240.8 points
    board = leaderboard([("x", "y", "a")] * 30 + [("y", "x", "tie")] * 20, n_bootstrap=20, seed=0)
    assert board[0]["rating"] - board[1]["rating"] == pytest.approx(240.8, abs=3)


def test_it_counts_comparisons_per_source_and_skips_self_matches():
    matches = [("x", "y", "a"), ("y", "z", "b"), ("x", "z", "tie"), ("x", "x", "a")]

    board = {row["source"]: row for row in leaderboard(matches, n_bootstrap=20, seed=0)}

    assert {k: v["comparisons"] for k, v in board.items()} == {"x": 2, "y": 2, "z": 2}


def test_it_is_reproducible_with_a_seed():
    matches = _matches({"a": 0.3, "b": 0.0, "c": -0.3}, 300, seed=2)

    assert leaderboard(matches, n_bootstrap=100, seed=5) == leaderboard(matches, n_bootstrap=100, seed=5)


def test_it_rejects_an_unknown_outcome():
    with pytest.raises(ValueError, match="both_bad"):
        leaderboard([("x", "y", "both_bad")])


def test_it_is_empty_without_matches():
    assert leaderboard([]) == []
