import json

import numpy as np
import pytest

from labeling.quality.report import (
    MIN_REFERENCE_CHECKS,
    Flag,
    QualitySettings,
    RaterQuality,
    _shrunk_weights,
    _vote_weight,
    build_report,
    comparison_labels,
    rater_weights,
)
from labeling.quality.stats import krippendorff_alpha, sequential_threshold
from tests.labeling.quality.simulation import simulate

SETTINGS = QualitySettings(min_time_ms=3000)


def judgment(id, rater, comparison, outcome, *, left="a", time_ms=10_000, repeat_of=None, criteria=None):
    return {
        "id": id,
        "rater": rater,
        "comparison": comparison,
        "outcome": outcome,
        "left": left,
        "time_ms": time_ms,
        "criteria": criteria or {},
        "is_repeat_of": repeat_of,
    }


def hand_made():
    """Four comparisons judged by alice, bob and carol (see each test for the hand computation)."""
    return [
        judgment(1, "alice", 1, "a"),
        judgment(2, "bob", 1, "a"),
        judgment(3, "carol", 1, "a"),
        judgment(4, "alice", 2, "a"),
        judgment(5, "bob", 2, "a"),
        judgment(6, "carol", 2, "b"),
        judgment(7, "alice", 3, "tie"),
        judgment(8, "bob", 3, "b"),
        judgment(9, "carol", 3, "b"),
        judgment(10, "alice", 4, "both_bad"),
        judgment(11, "bob", 4, "both_bad"),
    ]


def raters(report):
    return {q.rater: q for q in report.raters}


def test_agreement_is_with_the_strict_majority_of_the_other_raters():
    # alice: c1 others a,a -> agrees; c2 others a,b -> no majority; c3 others b,b vs her tie -> disagrees;
    #        c4 other both_bad -> agrees: 2 of 3.  bob: c1 agrees, c2 (a,b) and c3 (tie,b) none, c4 agrees: 2 of 2.
    # carol: c1 agrees, c2 others a,a vs her b -> disagrees, c3 others tie,b -> none: 1 of 2.
    report = raters(build_report(hand_made(), {}, SETTINGS, n_bootstrap=50))

    assert (report["alice"].agreement.value, report["alice"].agreement.n) == (pytest.approx(2 / 3), 3)
    assert (report["bob"].agreement.value, report["bob"].agreement.n) == (1.0, 2)
    assert (report["carol"].agreement.value, report["carol"].agreement.n) == (0.5, 2)


def test_repeats_are_not_votes():
    # carol judges c2 again and now says "a". Were it a vote, alice's others on c2 would be a, b, a: a strict
    # majority, and her agreement would become 3 of 4.
    records = hand_made() + [judgment(12, "carol", 2, "a", left="b", repeat_of=6)]

    with_repeat = build_report(records, {}, SETTINGS, n_bootstrap=50)
    without = build_report(hand_made(), {}, SETTINGS, n_bootstrap=50)

    assert raters(with_repeat)["alice"].agreement == raters(without)["alice"].agreement
    assert raters(with_repeat)["carol"].agreement == raters(without)["carol"].agreement
    assert with_repeat.project.alpha == without.project.alpha
    assert with_repeat.project.pairwise_agreement == without.project.pairwise_agreement
    assert raters(with_repeat)["carol"].comparisons == 3
    assert raters(with_repeat)["carol"].judgments == 4
    assert comparison_labels(records, {"alice": 1, "bob": 1, "carol": 1})[2].votes == 3


def test_self_consistency_compares_outcomes_in_a_b_terms():
    # carol first chose B (shown on the right); shown again with B on the left she chooses B again: consistent,
    # although she clicked the other side of the screen.
    same = hand_made() + [judgment(12, "carol", 2, "b", left="b", repeat_of=6)]
    changed = hand_made() + [judgment(12, "carol", 2, "a", left="b", repeat_of=6)]

    assert raters(build_report(same, {}, SETTINGS, n_bootstrap=20))["carol"].self_consistency.value == 1.0
    flipped = raters(build_report(changed, {}, SETTINGS, n_bootstrap=20))["carol"].self_consistency
    assert (flipped.value, flipped.n) == (0.0, 1)
    assert raters(build_report(same, {}, SETTINGS, n_bootstrap=20))["alice"].self_consistency is None


def test_gold_accuracy_counts_decisive_answers_and_every_first_judgment_is_a_reference_check():
    report = raters(build_report(hand_made(), {1: "a", 3: "b"}, SETTINGS, n_bootstrap=20))

    # alice: c1 "a" correct, c3 "tie" is not a decisive answer -> 1 of 1
    assert (report["alice"].gold_accuracy.value, report["alice"].gold_accuracy.n) == (1.0, 1)
    assert report["alice"].gold_accuracy.p_value == pytest.approx(0.5)
    assert (report["carol"].gold_accuracy.value, report["carol"].gold_accuracy.n) == (1.0, 2)
    # every first judgment is checked against the worker model's answer, two of alice's four on gold
    assert report["alice"].reference_match.n == 4
    assert report["alice"].gold_checks == 2
    assert 0 <= report["alice"].chance_match <= 1


def test_a_rater_is_never_checked_against_their_own_vote():
    # dave alone judges comparison 9: whatever he answers, his reference there is the prior, not his answer.
    records = hand_made()
    with_a = build_report(records + [judgment(12, "dave", 9, "a")], {}, SETTINGS, n_bootstrap=20)
    with_b = build_report(records + [judgment(12, "dave", 9, "b")], {}, SETTINGS, n_bootstrap=20)

    assert raters(with_a)["dave"].reference_match.value + raters(with_b)["dave"].reference_match.value == 1.0


def test_the_gold_answer_is_the_reference_on_gold_comparisons():
    # Everyone else says "b" on c1, but gold says "a": alice's "a" there matches.
    records = [
        judgment(1, "alice", 1, "a"),
        judgment(2, "bob", 1, "b"),
        judgment(3, "carol", 1, "b"),
        judgment(4, "dave", 1, "b"),
    ]

    alice = raters(build_report(records, {1: "a"}, SETTINGS, n_bootstrap=20))["alice"]

    assert (alice.reference_match.value, alice.gold_checks) == (1.0, 1)


def test_position_bias_is_the_left_share_of_decisive_answers_tested_against_a_half():
    records = [judgment(i, "dave", i, "a" if i < 9 else "b", left="a") for i in range(10)]
    records += [judgment(10, "dave", 10, "tie"), judgment(11, "dave", 11, "b", left="a")]
    # decisive: 11; on the left: the 9 a's shown left; the b's at ids 9 and 11 were on the right -> 9 of 11

    bias = raters(build_report(records, {}, SETTINGS, n_bootstrap=20))["dave"].position_bias

    assert (bias.value, bias.n) == (pytest.approx(9 / 11), 11)
    assert bias.p_value == pytest.approx(2 * (1 + 11 + 55) / 2**11)


def test_time_figures_and_the_too_fast_share():
    times = [1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 512000]
    records = [judgment(i, "erin", i, "a", time_ms=t) for i, t in enumerate(times)]

    erin = raters(build_report(records, {}, SETTINGS, n_bootstrap=20))["erin"]

    assert erin.active_time_ms == sum(times)
    assert erin.median_time_ms == pytest.approx((16000 + 32000) / 2)
    assert erin.p10_time_ms == pytest.approx(1000 + 0.9 * 1000)
    assert (erin.too_fast_share.value, erin.too_fast_share.n) == (0.2, 10)
    assert erin.tie_rate.value == 0.0


def test_project_alpha_and_pairwise_agreement_on_the_hand_made_case():
    records = hand_made()

    project = build_report(records, {}, SETTINGS, n_bootstrap=200).project

    units = {}
    for r in records:
        units.setdefault(r["comparison"], {})[r["rater"]] = r["outcome"]
    assert project.alpha.value == pytest.approx(krippendorff_alpha(units))
    assert project.alpha.low <= project.alpha.value <= project.alpha.high
    # agreeing pairs: c1 3 of 3, c2 1 of 3, c3 1 of 3, c4 1 of 1 -> 6 of 10
    assert (project.pairwise_agreement.value, project.pairwise_agreement.n) == (0.6, 10)
    assert (project.judgments, project.comparisons, project.raters) == (11, 4, 3)


def test_alpha_per_criterion_uses_the_criterion_answers():
    records = [
        judgment(1, "alice", 1, "a", criteria={"honesty": "a", "harm": "tie"}),
        judgment(2, "bob", 1, "a", criteria={"honesty": "a", "harm": "a"}),
        judgment(3, "alice", 2, "b", criteria={"honesty": "b"}),
        judgment(4, "bob", 2, "b", criteria={"honesty": "b", "harm": "b"}),
    ]

    criteria = build_report(records, {}, SETTINGS, n_bootstrap=20).project.criteria_alpha

    assert criteria["honesty"].value == pytest.approx(1.0)
    # harm: c1 is the only comparison with two answers, and they differ: alpha = 1 - D_o / D_e = 1 - 2 / 2 = 0
    assert criteria["harm"].value == pytest.approx(0.0)
    assert criteria["harm"].value == pytest.approx(
        krippendorff_alpha({1: {"alice": "tie", "bob": "a"}, 2: {"bob": "b"}})
    )


def test_over_time_windows_hold_each_first_judgment_once_in_id_order():
    records, gold, _ = simulate(seed=4)
    first = [r for r in records if r["is_repeat_of"] is None]

    windows = build_report(records, gold, SETTINGS, n_bootstrap=20, windows=5).project.over_time

    assert len(windows) == 5
    assert sum(w.judgments for w in windows) == len(first)
    assert all(a.first_judgment_id < b.first_judgment_id for a, b in zip(windows, windows[1:], strict=False))
    assert all(w.alpha is not None and w.pairwise_agreement is not None for w in windows)


@pytest.mark.parametrize("seed", [0, 1])
def test_simulated_bad_raters_are_flagged_and_careful_raters_are_not(seed):
    # 8 careful raters (75% accurate) and a random clicker, an always-left rater, an adversary and a speeder, all
    # with 150 judgments; overlap 3, 5% gold, 5% repeats.
    records, gold, behaviour = simulate(seed=seed)

    report = build_report(records, gold, SETTINGS, n_bootstrap=20)

    kinds = {q.rater: {f.kind for f in q.flags} for q in report.raters}
    assert all(not kinds[name] for name, b in behaviour.items() if b == "careful")
    assert "chance" in kinds["random"] and "chance" in kinds["adversarial"]
    assert kinds["random"]
    assert "position_bias" in kinds["always_left"]
    assert kinds["adversarial"]
    assert "speed" in kinds["speeder"]


def test_a_random_clicker_is_flagged_as_answering_by_chance_with_the_numbers():
    records, gold, _ = simulate(seed=2, bad=("random",))

    random_clicker = raters(build_report(records, gold, SETTINGS, n_bootstrap=20))["random"]

    assert random_clicker.comparisons >= MIN_REFERENCE_CHECKS
    chance = [f for f in random_clicker.flags if f.kind == "chance"]
    assert chance and "look like chance" in chance[0].reason
    m = random_clicker.reference_match
    assert f"{round(m.value * m.n)} of {m.n}" in chance[0].reason
    assert random_clicker.chance_evidence >= sequential_threshold(9)
    assert random_clicker.vote_weight == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_careful_rater_is_ever_flagged_however_often_the_report_is_recomputed(seed):
    # The same-pace project, looked at after every 60 judgments (about 5 of each rater's): the flags are
    # sequential tests, so looking often must not produce a false flag; the bad raters are flagged in time.
    records, gold, behaviour = simulate(seed=seed)
    first_flag: dict[str, int] = {}
    for end in range(60, len(records) + 60, 60):
        seen = records[:end]
        done = {name: sum(r["rater"] == name for r in seen) for name in behaviour}
        for q in build_report(seen, gold, SETTINGS, n_bootstrap=5, windows=1).raters:
            if q.flags:
                first_flag.setdefault(q.rater, done[q.rater])

    assert not [name for name in first_flag if behaviour[name] == "careful"]
    assert first_flag["adversarial"] <= 50
    assert first_flag["always_left"] <= 50
    assert first_flag["speeder"] <= 50
    assert first_flag["random"] <= 150


def test_flag_reasons_give_the_numbers():
    records, gold, _ = simulate(seed=0)

    report = raters(build_report(records, gold, SETTINGS, n_bootstrap=20))

    reason = next(f.reason for f in report["always_left"].flags if f.kind == "position_bias")
    bias = report["always_left"].position_bias
    assert f"{round(bias.value * bias.n)} of {bias.n} decisive answers" in reason
    assert "95% CI" in reason and "to 1 flags: 5% / 12 raters" in reason


def test_reliability_does_not_depend_on_how_raters_are_named():
    # Renaming reverses the raters' sorted order; the worker model must give each rater the same reliability.
    records, gold, _ = simulate(seed=5)
    rank = {name: i for i, name in enumerate(sorted({r["rater"] for r in records}))}
    renamed = [dict(r, rater=f"{99 - rank[r['rater']]:02d}-{r['rater']}") for r in records]

    before = {q.rater: q.reliability for q in build_report(records, gold, SETTINGS, n_bootstrap=20).raters}
    after = {
        q.rater.split("-", 1)[1]: q.reliability for q in build_report(renamed, gold, SETTINGS, n_bootstrap=20).raters
    }

    assert after == pytest.approx(before, abs=1e-3)
    assert before["always_left"] < 0.2 < min(v for k, v in before.items() if k.startswith("careful"))


def test_weight_modes():
    records, gold, behaviour = simulate(seed=1)
    report = build_report(records, gold, SETTINGS, n_bootstrap=20)

    equal = rater_weights(report, "equal")
    flagged = rater_weights(report, "exclude_flagged")
    reliability = rater_weights(report, "reliability")

    assert set(equal.values()) == {1.0} and set(equal) == set(behaviour)
    assert flagged == {q.rater: 0.0 if q.flags else 1.0 for q in report.raters}
    assert flagged["random"] == 0.0 and flagged["careful-0"] == 1.0
    for bad in ("random", "always_left", "adversarial", "speeder"):
        assert reliability[bad] == 0.0
    careful = [q for q in report.raters if behaviour[q.rater] == "careful"]
    assert all(reliability[q.rater] == q.vote_weight > 0.4 for q in careful)
    # Shrunk toward their mean, never past it: the order stays, the spread narrows.
    by_reliability = sorted(careful, key=lambda q: q.reliability)
    assert [reliability[q.rater] for q in by_reliability] == sorted(reliability[q.rater] for q in careful)
    spread = max(q.reliability for q in careful) - min(q.reliability for q in careful)
    assert max(reliability[q.rater] for q in careful) - min(reliability[q.rater] for q in careful) < spread
    with pytest.raises(ValueError, match="Unknown weight mode"):
        rater_weights(report, "loudest")


def test_comparison_labels_are_the_weighted_majority_with_its_margin():
    records = hand_made() + [judgment(12, "carol", 2, "a", left="b", repeat_of=6)]

    labels = comparison_labels(records, {"alice": 1.0, "bob": 1.0, "carol": 3.0})

    # c2: a = alice + bob = 2, b = carol = 3 (her repeat is not a vote) -> b by (3 - 2) / 5
    assert (labels[2].label, labels[2].margin, labels[2].weight, labels[2].votes) == ("b", pytest.approx(0.2), 5.0, 3)
    assert (labels[1].label, labels[1].margin) == ("a", 1.0)
    equal = comparison_labels(records, {"alice": 1.0, "bob": 1.0, "carol": 1.0})
    assert equal[3].label == "b" and equal[3].margin == pytest.approx(1 / 3)


def test_comparison_labels_without_a_winner():
    records = [judgment(1, "alice", 1, "a"), judgment(2, "bob", 1, "b"), judgment(3, "alice", 2, "a")]

    labels = comparison_labels(records, {"alice": 0.0, "bob": 1.0})

    assert labels[1].label == "b"
    assert (labels[2].label, labels[2].margin, labels[2].weight) == (None, 0.0, 0.0)
    assert comparison_labels(records, {"alice": 1.0, "bob": 1.0})[1].label is None


def test_comparison_labels_need_a_weight_for_every_rater():
    with pytest.raises(ValueError, match="carol"):
        comparison_labels(hand_made(), {"alice": 1.0, "bob": 1.0})


def test_it_rejects_an_unknown_outcome_naming_the_judgment():
    with pytest.raises(ValueError, match="Judgment 2 has outcome 'c'"):
        build_report([judgment(1, "alice", 1, "a"), judgment(2, "bob", 1, "c")], {}, SETTINGS)


def test_it_rejects_a_second_judgment_not_marked_as_a_repeat():
    with pytest.raises(ValueError, match="Judgment 2 is a second judgment by alice"):
        build_report([judgment(1, "alice", 1, "a"), judgment(2, "alice", 1, "b")], {}, SETTINGS)


def test_it_rejects_a_repeat_of_someone_elses_judgment():
    with pytest.raises(ValueError, match="Judgment 3 is marked as a repeat of judgment 1"):
        build_report(
            [judgment(1, "alice", 1, "a"), judgment(2, "bob", 1, "b"), judgment(3, "bob", 1, "b", repeat_of=1)],
            {},
            SETTINGS,
        )


def test_it_rejects_a_gold_answer_that_is_not_decisive():
    with pytest.raises(ValueError, match="Gold answer of comparison 1 is 'tie'"):
        build_report(hand_made(), {1: "tie"}, SETTINGS)


def test_the_report_serialises_to_json():
    records, gold, _ = simulate(seed=0)

    data = build_report(records, gold, SETTINGS, n_bootstrap=20).as_dict()

    text = json.dumps(data)
    assert "position_bias" in text
    assert data["raters"][0]["gold_accuracy"] is None or set(data["raters"][0]["gold_accuracy"]) >= {"value", "n"}
    assert np.isfinite(data["project"]["alpha"]["value"])


def quality(rater, reliability, se, *, flags=()):
    return RaterQuality(
        rater=rater,
        judgments=100,
        comparisons=100,
        active_time_ms=0,
        median_time_ms=None,
        p10_time_ms=None,
        gold_accuracy=None,
        agreement=None,
        reference_match=None,
        chance_match=None,
        gold_checks=0,
        position_bias=None,
        tie_rate=None,
        both_bad_rate=None,
        self_consistency=None,
        too_fast_share=None,
        reliability=reliability,
        reliability_se=se,
        vote_weight=0.0 if flags else _vote_weight(reliability, se),
        flags=list(flags),
    )


def test_a_rater_weighs_their_reliability_only_once_it_is_shown_above_chance():
    assert _vote_weight(0.3, 0.1) == 0.3  # 0.3 - 1.645 * 0.1 = 0.14 > 0
    assert _vote_weight(0.3, 0.2) == 0.0  # 0.3 - 0.33 < 0: could be a guesser's luck
    assert _vote_weight(0.15, 0.01) == 0.0  # surely above chance, but below the floor
    assert _vote_weight(None, None) == 0.0


def test_vote_weights_shrink_noise_away_and_keep_real_differences():
    # Two raters 0.4 and 0.6 with standard errors 0.2: their spread (variance 0.02) is less than the noise
    # (0.04), so they are told apart by noise only and weigh alike, at their mean.
    noisy = {q.rater: q.vote_weight for q in _shrunk_weights([quality("x", 0.4, 0.2), quality("y", 0.6, 0.2)])}
    assert noisy == {"x": pytest.approx(0.5), "y": pytest.approx(0.5)}
    # 0.3 and 0.7 with standard errors 0.01: variance 0.08, noise 0.0001, tau^2 = 0.0799, so each moves toward
    # 0.5 by 0.0001 / 0.08 of its distance: 0.5 - 0.2 * 0.0799 / 0.08.
    sure = {q.rater: q.vote_weight for q in _shrunk_weights([quality("x", 0.3, 0.01), quality("y", 0.7, 0.01)])}
    assert sure == {"x": pytest.approx(0.5 - 0.2 * 0.0799 / 0.08), "y": pytest.approx(0.5 + 0.2 * 0.0799 / 0.08)}
    # Raters at weight 0 (flagged, or not above chance) stay there and take no part in the mean.
    mixed = _shrunk_weights(
        [quality("x", 0.4, 0.2), quality("y", 0.6, 0.2), quality("z", 0.9, 0.01, flags=[Flag("speed", "")])]
    )
    assert [q.vote_weight for q in mixed] == [pytest.approx(0.5), pytest.approx(0.5), 0.0]
