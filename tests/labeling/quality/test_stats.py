import krippendorff
import numpy as np
import pytest

from labeling.quality.stats import (
    Interval,
    bh_adjust,
    binomial_log10_lr,
    binomial_p,
    bootstrap_interval,
    discoveries,
    finite_number,
    krippendorff_alpha,
    nominal_alpha,
    pattern_alpha,
    pattern_pairwise_agreement,
    sequential_threshold,
    wilson,
)


def test_wilson_at_a_single_failure_gives_the_published_interval():
    interval = wilson(0, 1)

    assert interval.value == 0.0
    assert interval.low == pytest.approx(0.0, abs=1e-12)
    assert interval.high == pytest.approx(0.7935, abs=1e-4)
    assert interval.n == 1


def test_wilson_at_a_single_success_is_not_degenerate():
    interval = wilson(1, 1)

    assert interval.low == pytest.approx(0.2065, abs=1e-4)
    assert interval.high == pytest.approx(1.0, abs=1e-12)


def test_wilson_matches_newcombes_worked_example():
    # Newcombe (1998), Statistics in Medicine 17:857, example 81/263: Wilson 0.2553 to 0.3662.
    interval = wilson(81, 263)

    assert (round(interval.low, 4), round(interval.high, 4)) == (0.2553, 0.3662)


def test_wilson_has_nothing_to_show_without_observations():
    assert wilson(0, 0) is None


def test_interval_as_dict_carries_the_p_value_only_when_tested():
    assert Interval(0.5, 0.2, 0.8, 10).as_dict() == {"value": 0.5, "low": 0.2, "high": 0.8, "n": 10}
    assert Interval(0.5, 0.2, 0.8, 10, p_value=0.03).as_dict()["p_value"] == 0.03


def test_binomial_p_is_the_exact_binomial_tail():
    # 9 of 10: P(X >= 9) = 11/1024 one-sided, twice that two-sided.
    assert binomial_p(9, 10, alternative="greater") == pytest.approx(11 / 1024)
    assert binomial_p(9, 10) == pytest.approx(22 / 1024)
    assert binomial_p(1, 10, p=0.5, alternative="less") == pytest.approx(11 / 1024)


def test_binomial_p_without_observations_is_one():
    assert binomial_p(0, 0) == 1.0


def test_bh_adjust_matches_a_hand_computation():
    # Sorted: 0.01, 0.03, 0.04, 0.2 (m = 4) -> p·m/rank = 0.04, 0.06, 0.0533, 0.2 -> running minimum from the top.
    q = bh_adjust([0.01, 0.04, 0.03, 0.2])

    assert q == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert discoveries([0.01, 0.04, 0.03, 0.2], fdr=0.05) == [True, False, False, False]
    assert bh_adjust([]) == []


def _package_example_units():
    # The krippendorff package's own docstring example: 3 coders x 15 units, nominal alpha 0.691358.
    nan = np.nan
    data = [
        [nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
        [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
        [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4],
    ]
    units = {}
    for coder, row in enumerate(data):
        for unit, value in enumerate(row):
            if not np.isnan(value):
                units.setdefault(unit, {})[f"coder-{coder}"] = int(value)
    return units


def test_krippendorff_alpha_reproduces_the_packages_documented_example():
    assert round(krippendorff_alpha(_package_example_units()), 6) == 0.691358


def test_krippendorff_alpha_is_undefined_without_pairable_values():
    assert krippendorff_alpha({1: {"alice": "a"}, 2: {"bob": "b"}}) is None
    assert krippendorff_alpha({}) is None


def test_krippendorff_alpha_is_undefined_without_variation():
    assert krippendorff_alpha({1: {"alice": "a", "bob": "a"}, 2: {"alice": "a", "bob": "a"}}) is None


def test_krippendorff_alpha_is_one_for_perfect_agreement_and_negative_for_systematic_disagreement():
    assert krippendorff_alpha({1: {"alice": "a", "bob": "a"}, 2: {"alice": "b", "bob": "b"}}) == pytest.approx(1.0)
    assert krippendorff_alpha({1: {"alice": "a", "bob": "b"}, 2: {"alice": "b", "bob": "a"}}) < 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pattern_alpha_equals_the_package_on_the_expanded_units(seed):
    rng = np.random.default_rng(seed)
    votes = rng.multinomial(3, [0.4, 0.4, 0.12, 0.08], size=300)
    votes[::5] = rng.multinomial(2, [0.5, 0.3, 0.1, 0.1], size=len(votes[::5]))
    votes[::11] = rng.multinomial(1, [0.5, 0.3, 0.1, 0.1], size=len(votes[::11]))
    patterns, counts = np.unique(votes, axis=0, return_counts=True)

    expected = krippendorff.alpha(value_counts=votes, level_of_measurement="nominal")

    assert pattern_alpha(patterns, counts) == pytest.approx(expected, abs=1e-12)
    assert nominal_alpha(votes) == pytest.approx(expected, abs=1e-12)
    # one resample per row: each row is scored like the 1-D call
    both = pattern_alpha(patterns, np.stack([counts, counts * 2]))
    assert both[0] == pytest.approx(expected, abs=1e-12)


def test_pattern_pairwise_agreement_counts_agreeing_pairs_by_hand():
    # [2 a, 1 b]: 1 agreeing pair of 3; [3 a]: 3 of 3; one unjudged-twice unit adds no pairs.
    patterns = np.array([[2, 1, 0, 0], [3, 0, 0, 0], [1, 0, 0, 0]])

    assert pattern_pairwise_agreement(patterns, np.array([1, 1, 1])) == pytest.approx(4 / 6)
    assert pattern_pairwise_agreement(patterns, np.array([2, 1, 5])) == pytest.approx(5 / 9)


def test_bootstrap_interval_brackets_the_statistic_and_repeats_with_its_seed():
    values = np.random.default_rng(0).normal(10.0, 2.0, size=400)

    def mean(v, c):
        return np.average(v, weights=c)

    first = bootstrap_interval(values, mean, seed=7)
    again = bootstrap_interval(values, mean, seed=7)

    assert first == again
    assert first.low < first.value < first.high
    # the normal-theory 95% half-width is 1.96·2/20 = 0.196
    assert first.high - first.low == pytest.approx(2 * 0.196, rel=0.15)
    assert first.n == 400


def test_bootstrap_interval_over_collapsed_units_equals_the_expanded_bootstrap_in_distribution():
    values = np.array([1.0] * 300 + [0.0] * 100)

    expanded = bootstrap_interval(values, lambda v, c: np.average(v, weights=c), seed=3, n_resamples=4000)
    collapsed = bootstrap_interval(
        np.array([1.0, 0.0]), lambda v, c: np.average(v, weights=c), counts=[300, 100], seed=3, n_resamples=4000
    )

    assert collapsed.value == expanded.value == 0.75
    assert collapsed.low == pytest.approx(expanded.low, abs=0.01)
    assert collapsed.high == pytest.approx(expanded.high, abs=0.01)


def test_bootstrap_interval_is_none_where_the_statistic_is_undefined():
    assert bootstrap_interval(np.array([]), lambda v, c: np.nan) is None
    assert bootstrap_interval(np.array([1.0]), lambda v, c: np.nan) is None


def test_binomial_log10_lr_is_walds_statistic_by_hand():
    # 9 of 10 at 0.9 against 0.6: (0.9/0.6)^9 (0.1/0.4)^1 = 38.44 -> log10 1.5848
    assert binomial_log10_lr(9, 10, 0.6, 0.9) == pytest.approx(np.log10(1.5**9 * 0.25))
    assert binomial_log10_lr(0, 0, 0.6, 0.9) == 0.0


def test_sequential_threshold_is_bonferroni_on_the_likelihood_ratio():
    assert sequential_threshold(12) == pytest.approx(np.log10(240))
    assert sequential_threshold(1, error_rate=0.01) == pytest.approx(2.0)


def test_a_likelihood_ratio_under_its_null_rarely_ever_reaches_the_threshold_however_often_it_is_looked_at():
    # Ville's inequality: a fair coin tested against 0.9 at every one of 300 flips reaches 1 / 0.05 at most 5%
    # of the time; a fixed-sample test at p < 0.05 repeated at every flip would fire far more often.
    rng = np.random.default_rng(0)
    flips = rng.random((2000, 300)) < 0.5
    step = np.where(flips, np.log10(0.9 / 0.5), np.log10(0.1 / 0.5))
    ever = (np.cumsum(step, axis=1) >= sequential_threshold(1)).any(axis=1)

    assert ever.mean() <= 0.05


def test_finite_number_keeps_finite_numbers_only():
    assert finite_number(np.float32(0.25)) == 0.25 and isinstance(finite_number(np.float32(0.25)), float)
    assert finite_number(3) == 3.0
    for value in (float("nan"), float("inf"), -np.inf, None, True, np.True_, "0.5"):
        assert finite_number(value) is None
