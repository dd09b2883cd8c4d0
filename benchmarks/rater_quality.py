"""Rater quality on real HH pairs: are bad raters caught in time, and do reliability weights undo their damage?

    .venv/bin/python benchmarks/rater_quality.py [--data PATH] [--pairs 600] [--gold 40] [--check-every 5]
                                                 [--seeds 0 1 2] [--no-reward-model] [--max-length 128]

The HH reference label of each pair (which reply the crowdworker preferred) plays the truth. Twelve simulated
raters judge the pairs through the project's own code, exactly as the API does: `next_comparison_for` leases a
task (gold items interleaved at the project's gold_rate, 5%; repeats at 3%), the rater answers in the terms of
their screen (left / right), `record_judgment` stores it. The raters:

- careful_1 .. careful_8: answer the truth 75% of the time (people agree with HH's labels about that often),
  the other reply otherwise, 5% ties; 8-40 s per answer;
- random: left or right at random; always_left: always the left reply; adversarial: the opposite of the truth;
  these three take as long as careful raters;
- speeder: left or right at random in 0.4-1.5 s (the project's minimum time is 3 s).

Every `--check-every` rounds (a round = one task per rater), `labeling.quality.service.compute_quality` runs
over the project (the same function the schedule runs); the first time a rater carries a flag, their
judgment count is noted. At the end it prints, per bad rater, the judgments it took until flagged; the careful
raters flagged by mistake; and for (a) careful raters only, (b) everyone with equal weights, (c) everyone with
reliability weights: the accuracy of the aggregated per-comparison label against the truth (the weighted
majority of first judgments, `report.comparison_labels`; an undecided comparison counts as a coin flip, 0.5),
over the non-gold comparisons, and, unless --no-reward-model, the reward model's accuracy against the truth on
the held-out split (`rewardmodel.dataset.build_dataset` with the project's weighting, then
`rewardmodel.core.train` and `evaluate` on the held-out reference labels), mean over --seeds.

Goals (issue 11): every bad rater flagged within 50 of their judgments, no careful rater flagged, and (c)
recovering at least 90% of the gap between (b) and (a) in aggregated-label accuracy.

It runs on a scratch SQLite database of its own (removed at the end) unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hh_harmless_dev.jsonl"
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
_SCRATCH = None
if not os.environ.get("DATABASE_URL"):
    _SCRATCH = Path(tempfile.mkdtemp(prefix="bench-rater-quality-"))
    os.environ["DATABASE_URL"] = f"sqlite:///{_SCRATCH / 'db.sqlite3'}"
    os.environ.setdefault("VAR_DIR", str(_SCRATCH))

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from labeling import importing  # noqa: E402
from labeling.assignment import next_comparison_for  # noqa: E402
from labeling.comparisons import mark_gold_by_reference_label  # noqa: E402
from labeling.judgments import JudgmentInput, record_judgment  # noqa: E402
from labeling.models import Comparison, Judgment, Project  # noqa: E402
from labeling.quality import report as quality_report  # noqa: E402
from labeling.quality.service import compute_quality  # noqa: E402
from labeling.raters import set_excluded  # noqa: E402

CAREFUL = [f"careful_{i}" for i in range(1, 9)]
BAD = ["random", "always_left", "adversarial", "speeder"]
CAREFUL_ACCURACY = 0.75
CAREFUL_TIES = 0.05
GOAL_JUDGMENTS = 50
GOAL_RECOVERY = 0.90


def answer(name: str, *, truth: str, left: str, rng: random.Random) -> tuple[str, int]:
    """(outcome in shown terms, time in ms) for one simulated rater; truth and left are "a"/"b"."""
    truth_shown = "left" if truth == left else "right"
    other = "right" if truth_shown == "left" else "left"
    thinking = int(rng.uniform(8_000, 40_000))
    if name.startswith("careful"):
        if rng.random() < CAREFUL_TIES:
            return "tie", thinking
        return (truth_shown if rng.random() < CAREFUL_ACCURACY else other), thinking
    if name == "random":
        return rng.choice(["left", "right"]), thinking
    if name == "always_left":
        return "left", thinking
    if name == "adversarial":
        return other, thinking
    if name == "speeder":
        return rng.choice(["left", "right"]), int(rng.uniform(400, 1_500))
    raise ValueError(name)


def build_project(*, data: Path, pairs: int, gold: int) -> Project:
    lines = data.read_text(encoding="utf-8").splitlines()[:pairs]
    result = importing.import_pairs(project_slug="rater-quality", lines=lines, format="hh", project_name="Raters")
    project = result.project
    Project.objects.filter(pk=project.pk).update(overlap=3, gold_rate=0.05, repeat_rate=0.03, min_time_ms=3000)
    project.refresh_from_db()
    # The first `gold` decisive pairs become gold items, with the reference label as their known answer.
    gold_ids = list(
        Comparison.objects.filter(project=project, reference_label__in=["a", "b"])
        .order_by("pk")[:gold]
        .values_list("pk", flat=True)
    )
    mark_gold_by_reference_label(comparison_ids=gold_ids)
    users = get_user_model().objects
    for name in CAREFUL + BAD:
        project.raters.add(users.create_user(username=name, password=None))
    return project


def simulate(project: Project, *, check_every: int, seed: int, max_rounds: int) -> dict:
    rng = random.Random(seed)
    random.seed(seed)  # the assignment engine's own draws (left side, gold, repeats)
    users = {u.username: u for u in get_user_model().objects.filter(username__in=CAREFUL + BAD)}
    truth = dict(Comparison.objects.filter(project=project).values_list("pk", "reference_label"))
    counts = dict.fromkeys(users, 0)
    flagged_at: dict[str, int | None] = dict.fromkeys(users, None)
    flag_reasons: dict[str, list[str]] = {}
    rounds = checks = 0
    check_seconds = 0.0
    while rounds < max_rounds:
        served = 0
        # Raters come in a fresh random order each round: in a fixed order the same three raters would take
        # each new comparison together, round after round, and the bad raters would mostly judge alongside
        # each other.
        for name in rng.sample(CAREFUL + BAD, len(CAREFUL + BAD)):
            lease = next_comparison_for(rater=users[name], project=project)
            if lease is None:
                continue
            served += 1
            label = truth[lease.comparison_id]
            if label not in ("a", "b"):
                label = rng.choice(["a", "b"])  # an HH tie: no truth, any answer is as good
            outcome, spent = answer(name, truth=label, left=lease.left, rng=rng)
            record_judgment(
                rater=users[name],
                judgment=JudgmentInput(
                    comparison_id=lease.comparison_id,
                    outcome=outcome,
                    strength=None if outcome in ("tie", "both_bad") else rng.choice([1, 2, 3]),
                    time_spent_ms=spent,
                ),
                project=project,
            )
            counts[name] += 1
        rounds += 1
        if not served:
            break
        if rounds % check_every == 0:
            started = time.perf_counter()
            report = compute_quality(project=project)
            check_seconds += time.perf_counter() - started
            checks += 1
            for quality in report.raters:
                if quality.flags and flagged_at[quality.rater] is None:
                    flagged_at[quality.rater] = counts[quality.rater]
                    flag_reasons[quality.rater] = [f.reason for f in quality.flags]
    report = compute_quality(project=project)
    for quality in report.raters:
        if quality.flags and flagged_at[quality.rater] is None:
            flagged_at[quality.rater] = counts[quality.rater]
            flag_reasons[quality.rater] = [f.reason for f in quality.flags]
    return {
        "report": report,
        "counts": counts,
        "flagged_at": flagged_at,
        "reasons": flag_reasons,
        "rounds": rounds,
        "checks": checks,
        "check_seconds": check_seconds,
    }


def records(project: Project) -> list[dict]:
    rows = Judgment.objects.filter(project=project).values_list(
        "pk", "rater__username", "comparison_id", "outcome", "left", "time_spent_ms", "repeat_of_id"
    )
    return [
        {"id": pk, "rater": rater, "comparison": c, "outcome": o, "left": left, "time_ms": t, "is_repeat_of": rep}
        for pk, rater, c, o, left, t, rep in rows
    ]


def label_accuracy(project: Project, weights: dict[str, float]) -> tuple[float, int]:
    labels = quality_report.comparison_labels(records(project), weights)
    truth = dict(
        Comparison.objects.filter(project=project, is_gold=False, reference_label__in=["a", "b"]).values_list(
            "pk", "reference_label"
        )
    )
    scores = [
        0.5 if labels[pk].label is None else float(labels[pk].label == label)
        for pk, label in truth.items()
        if pk in labels
    ]
    return statistics.fmean(scores), len(scores)


def reward_model_accuracy(project: Project, *, seeds: list[int], max_length: int, epochs: int) -> list[float]:
    # torch only here, and only when asked for: the rest of the benchmark is the web side's code.
    from rewardmodel.core.config import TrainConfig
    from rewardmodel.core.evaluate import evaluate
    from rewardmodel.core.train import train
    from rewardmodel.dataset import build_dataset

    dataset = build_dataset(project=project, include_reference_labels=False)
    accuracies = []
    for seed in seeds:
        config = TrainConfig(max_length=max_length, epochs=epochs, seed=seed, device="cpu")
        result = train(config, dataset.train)
        metrics = evaluate(result.model, result.tokenizer, dataset.held_out_reference, config)
        accuracies.append(float(metrics["accuracy"]))
    return accuracies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=600, help="HH pairs to import (default %(default)s)")
    parser.add_argument("--gold", type=int, default=40, help="of which gold items (default %(default)s)")
    parser.add_argument("--check-every", type=int, default=5, help="rounds between quality computations")
    parser.add_argument("--max-rounds", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0, help="the simulation's seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="reward-model training seeds")
    parser.add_argument("--no-reward-model", action="store_true", help="skip the reward-model trainings")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} is not there (the shared HH data sits beside the checkout)")
        return 0

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    project = build_project(data=args.data, pairs=args.pairs, gold=args.gold)
    outcome = simulate(project, check_every=args.check_every, seed=args.seed, max_rounds=args.max_rounds)
    report = outcome["report"]
    counts, flagged_at = outcome["counts"], outcome["flagged_at"]
    print(
        f"{args.pairs} HH pairs ({args.gold} gold), overlap 3, gold rate 5%, repeats 3%; {outcome['rounds']} rounds, "
        f"{sum(counts.values())} judgments; quality computed {outcome['checks']} times, "
        f"{outcome['check_seconds'] / max(outcome['checks'], 1):.2f} s each on average "
        f"({time.perf_counter() - started:.0f} s in all)"
    )
    print()
    print(f"{'rater':<13} {'judgments':>9} {'flagged after':>13} {'reliability':>11}  first flag")
    by_name = {q.rater: q for q in report.raters}
    for name in BAD + CAREFUL:
        at = flagged_at[name]
        reason = outcome["reasons"].get(name, ["-"])[0]
        rel = by_name[name].reliability
        print(
            f"{name:<13} {counts[name]:>9} {('-' if at is None else at):>13} "
            f"{('-' if rel is None else f'{rel:.2f}'):>11}  {reason}"
        )
    late = [n for n in BAD if flagged_at[n] is None or flagged_at[n] > GOAL_JUDGMENTS]
    false_flags = [n for n in CAREFUL if flagged_at[n] is not None]
    print()
    print(
        f"bad raters flagged within {GOAL_JUDGMENTS} of their judgments: {len(BAD) - len(late)}/{len(BAD)}"
        + (f" (late or never: {', '.join(late)})" if late else "")
    )
    print(
        f"careful raters flagged: {len(false_flags)}/{len(CAREFUL)}"
        + (f" ({', '.join(false_flags)})" if false_flags else "")
    )

    careful_only = {n: (1.0 if n in CAREFUL else 0.0) for n in CAREFUL + BAD}
    equal = quality_report.rater_weights(report, "equal")
    reliability = quality_report.rater_weights(report, "reliability")
    acc = {
        "a": label_accuracy(project, careful_only),
        "b": label_accuracy(project, equal),
        "c": label_accuracy(project, reliability),
    }
    gap = acc["a"][0] - acc["b"][0]
    recovery = (acc["c"][0] - acc["b"][0]) / gap if gap > 0 else float("nan")

    rm: dict[str, list[float]] = {}
    if not args.no_reward_model:
        bad_users = list(get_user_model().objects.filter(username__in=BAD))
        admin = get_user_model().objects.create_user(username="bench-admin", password=None)
        for key, weighting, exclude in (("a", "equal", True), ("b", "equal", False), ("c", "reliability", False)):
            for user in bad_users:
                set_excluded(project=project, rater=user, excluded=exclude, by=admin, reason="benchmark")
            Project.objects.filter(pk=project.pk).update(judgment_weighting=weighting)
            project.refresh_from_db()
            rm[key] = reward_model_accuracy(project, seeds=args.seeds, max_length=args.max_length, epochs=args.epochs)

    print()
    print(f"{'':<38} {'aggregated label':>16} {'reward model (held-out)':>24}")
    names = {
        "a": "(a) careful raters only",
        "b": "(b) everyone, equal weights",
        "c": "(c) everyone, reliability weights",
    }
    for key in "abc":
        value, n = acc[key]
        rm_text = "-"
        if key in rm:
            rm_text = f"{statistics.fmean(rm[key]):.3f} ({', '.join(f'{x:.3f}' for x in rm[key])})"
        print(f"{names[key]:<38} {value:>9.3f} (n={n}) {rm_text:>24}")
    print()
    print(
        f"(c) recovers {100 * recovery:.0f}% of the gap between (b) and (a) in aggregated-label accuracy "
        f"(goal: at least {100 * GOAL_RECOVERY:.0f}%)"
    )
    met = not late and not false_flags and recovery >= GOAL_RECOVERY
    print("goals met" if met else "goals NOT met")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        if _SCRATCH is not None:
            import shutil

            shutil.rmtree(_SCRATCH, ignore_errors=True)
