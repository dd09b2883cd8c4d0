"""Rater quality on real HH pairs: are bad raters caught in time, and do reliability weights undo their damage?

    .venv/bin/python benchmarks/rater_quality.py [--data PATH] [--pairs 600] [--gold 40] [--check-every 5]
                                                 [--repeat-rate 0.05] [--sim-seeds 0 1 2 3] [--seeds 0 1 2]
                                                 [--no-reward-model] [--max-length 128]

The HH reference label of each pair (which reply the crowdworker preferred) plays the truth. Twelve simulated
raters judge the pairs through the project's own code, exactly as the API does: `next_comparison_for` leases a
task (gold items interleaved at the project's gold_rate, 5%; repeats at its repeat_rate, 5%), the rater
answers in the terms of their screen (left / right), `record_judgment` stores it. The raters:

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
`rewardmodel.core.train` and `evaluate` on the held-out reference labels), mean over --seeds, on the first
simulation seed (nine trainings per simulation would dominate the run).

Each of --sim-seeds is a separate project (same pairs, fresh judgments); a goal is met only if it holds on every
seed. The last lines give the bound on what any test can do about the random clicker (`random_clicker_bound`):
a careful rater who is right 75% of the time and a clicker who is right 50% of the time are hard to tell
apart in 50 answers when most of the answers can only be checked against two other raters.

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
OVERLAP = 3
GOLD_RATE = 0.05


def random_clicker_bound(*, judgments: int, raters: int, overlap: int, gold_rate: float, seed: int = 0) -> dict:
    """What `judgments` answers can tell about a random clicker: the power of the most powerful test there is
    (Neyman–Pearson: the likelihood ratio, at a fixed number of judgments, against a null that knows the careful
    raters' accuracy exactly) at a per-rater error rate of 5% / raters, Monte Carlo.

    "project": what a project knows: on gold items the truth, elsewhere the answers of overlap − 1 other raters,
    all taken to be careful (more than the project knows: a third of the raters here are not); "oracle": the truth
    of every comparison. Decisive answers only (a careful rater's 5% ties, which a random clicker never gives,
    are left out: the flags judge answers against the item, not a rater's taste for ties). Any sequential test
    that flags a careful rater with probability at most that error rate, ever, flags a random clicker within
    `judgments` judgments at most this often, since "flagged by then" is itself such a test.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    sims, p, alpha = 40_000, CAREFUL_ACCURACY, 0.05 / raters

    def info(size):  # P(the reference answer is the truth) per judgment
        agree = rng.binomial(overlap - 1, p, size)  # other raters who give the truth
        right = p**agree * (1 - p) ** (overlap - 1 - agree)
        wrong = (1 - p) ** agree * p ** (overlap - 1 - agree)
        # The reference is the other raters' majority (a split: either side, no information).
        majority = np.maximum(right, wrong) / (right + wrong)
        return np.where(rng.random(size) < gold_rate, 1.0, majority)

    def statistic(posterior, careful: bool):
        match0 = posterior * p + (1 - posterior) * (1 - p)  # a careful rater matches the reference
        matched = rng.random(posterior.shape) < (match0 if careful else 0.5)
        return np.where(matched, np.log(0.5 / match0), np.log(0.5 / (1 - match0))).sum(axis=1)

    power = {}
    for name, sampler in (("project", info), ("oracle", lambda size: np.ones(size))):
        threshold = np.quantile(statistic(sampler((sims, judgments)), True), 1 - alpha)
        power[name] = float(np.mean(statistic(sampler((sims, judgments)), False) > threshold))
    return power


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


def build_project(*, data: Path, pairs: int, gold: int, seed: int, repeat_rate: float) -> Project:
    """A fresh project per simulation seed (the twelve rater accounts are shared: judgments are per project)."""
    lines = data.read_text(encoding="utf-8").splitlines()[:pairs]
    result = importing.import_pairs(
        project_slug=f"rater-quality-{seed}", lines=lines, format="hh", project_name=f"Raters {seed}"
    )
    project = result.project
    Project.objects.filter(pk=project.pk).update(
        overlap=OVERLAP, gold_rate=GOLD_RATE, repeat_rate=repeat_rate, min_time_ms=3000
    )
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
        project.raters.add(users.get_or_create(username=name)[0])
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


def run_seed(args, seed: int, admin) -> dict:
    """One simulated project: who was flagged when, the aggregated-label accuracies and (if asked) the reward model."""
    started = time.perf_counter()
    project = build_project(data=args.data, pairs=args.pairs, gold=args.gold, seed=seed, repeat_rate=args.repeat_rate)
    outcome = simulate(project, check_every=args.check_every, seed=seed, max_rounds=args.max_rounds)
    report = outcome["report"]
    careful_only = {n: (1.0 if n in CAREFUL else 0.0) for n in CAREFUL + BAD}
    acc = {
        "a": label_accuracy(project, careful_only),
        "b": label_accuracy(project, quality_report.rater_weights(report, "equal")),
        "c": label_accuracy(project, quality_report.rater_weights(report, "reliability")),
    }
    gap = acc["a"][0] - acc["b"][0]
    rm: dict[str, list[float]] = {}
    if not args.no_reward_model and seed == args.sim_seeds[0]:
        bad_users = list(get_user_model().objects.filter(username__in=BAD))
        for key, weighting, exclude in (("a", "equal", True), ("b", "equal", False), ("c", "reliability", False)):
            for user in bad_users:
                set_excluded(project=project, rater=user, excluded=exclude, by=admin, reason="benchmark")
            Project.objects.filter(pk=project.pk).update(judgment_weighting=weighting)
            project.refresh_from_db()
            rm[key] = reward_model_accuracy(project, seeds=args.seeds, max_length=args.max_length, epochs=args.epochs)
    return outcome | {
        "seed": seed,
        "acc": acc,
        "recovery": (acc["c"][0] - acc["b"][0]) / gap if gap > 0 else float("nan"),
        "rm": rm,
        "seconds": time.perf_counter() - started,
    }


def print_seed(run: dict, args) -> None:
    counts, flagged_at, report = run["counts"], run["flagged_at"], run["report"]
    print(
        f"simulation seed {run['seed']}: {args.pairs} HH pairs ({args.gold} gold), overlap {OVERLAP}, gold rate "
        f"{GOLD_RATE:.0%}, repeats {args.repeat_rate:.0%}; {run['rounds']} rounds, {sum(counts.values())} judgments; "
        f"quality computed {run['checks']} times, {run['check_seconds'] / max(run['checks'], 1):.2f} s each on "
        f"average ({run['seconds']:.0f} s in all)"
    )
    print(f"  {'rater':<13} {'judgments':>9} {'flagged after':>13} {'reliability':>11} {'vote weight':>11}  first flag")
    by_name = {q.rater: q for q in report.raters}
    for name in BAD + CAREFUL:
        at = flagged_at[name]
        q = by_name[name]
        rel = "-" if q.reliability is None else f"{q.reliability:.2f}"
        print(
            f"  {name:<13} {counts[name]:>9} {('-' if at is None else at):>13} {rel:>11} {q.vote_weight:>11.2f}  "
            + (run["reasons"][name][0] if name in run["reasons"] else "-")
        )
    for key, title in (("a", "careful raters only"), ("b", "everyone, equal weights"), ("c", "reliability weights")):
        value, n = run["acc"][key]
        print(f"  ({key}) {title}: aggregated-label accuracy {value:.3f} (n={n})", end=";" if key != "c" else "\n")
    print(f"  (c) recovers {100 * run['recovery']:.0f}% of the gap between (b) and (a)")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=600, help="HH pairs to import (default %(default)s)")
    parser.add_argument("--gold", type=int, default=40, help="of which gold items (default %(default)s)")
    parser.add_argument("--repeat-rate", type=float, default=0.05, help="project repeat_rate (default %(default)s)")
    parser.add_argument("--check-every", type=int, default=5, help="rounds between quality computations")
    parser.add_argument("--max-rounds", type=int, default=10_000)
    parser.add_argument(
        "--sim-seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="simulation seeds, one project each"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="reward-model training seeds (first simulation)"
    )
    parser.add_argument("--no-reward-model", action="store_true", help="skip the reward-model trainings")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} is not there (the shared HH data sits beside the checkout)")
        return 0

    call_command("migrate", verbosity=0)
    admin = get_user_model().objects.create_user(username="bench-admin", password=None)
    runs = []
    for seed in args.sim_seeds:
        runs.append(run_seed(args, seed, admin))
        print_seed(runs[-1], args)

    seeds = [run["seed"] for run in runs]
    print(f"Across simulation seeds {', '.join(map(str, seeds))}:")
    print(f"  {'judgments until flagged':<34}" + "".join(f"{f'seed {s}':>9}" for s in seeds))
    for name in BAD:
        print(f"  {name:<34}" + "".join(f"{run['flagged_at'][name] or '-':>9}" for run in runs))
    print(
        f"  {'careful raters flagged':<34}"
        + "".join(f"{sum(run['flagged_at'][n] is not None for n in CAREFUL):>7}/8" for run in runs)
    )
    for key, title in (("a", "careful only"), ("b", "everyone, equal"), ("c", "everyone, reliability")):
        print(f"  {f'({key}) label accuracy, ' + title:<34}" + "".join(f"{run['acc'][key][0]:>9.3f}" for run in runs))
    print(f"  {'(c) recovery of the (b)-(a) gap':<34}" + "".join(f"{100 * run['recovery']:>8.0f}%" for run in runs))
    if runs[0]["rm"]:
        print()
        print(
            f"Reward model, held-out accuracy against the HH labels (simulation seed {seeds[0]}, training seeds "
            f"{', '.join(map(str, args.seeds))}):"
        )
        for key, title in (("a", "careful raters only"), ("b", "everyone, equal weights"), ("c", "reliability")):
            values = runs[0]["rm"][key]
            print(f"  ({key}) {title:<28} {statistics.fmean(values):.3f} ({', '.join(f'{x:.3f}' for x in values)})")

    bound = random_clicker_bound(
        judgments=GOAL_JUDGMENTS, raters=len(CAREFUL + BAD), overlap=OVERLAP, gold_rate=GOLD_RATE
    )
    print()
    print(
        f"What {GOAL_JUDGMENTS} judgments can tell: the most powerful test at the {GOAL_JUDGMENTS}th judgment, at a "
        f"per-rater error rate of 5% / {len(CAREFUL + BAD)}, flags a random clicker {bound['project']:.0%} of the "
        f"time with what a project knows (gold, {OVERLAP - 1} other raters per comparison) and "
        f"{bound['oracle']:.0%} even knowing the truth of every comparison."
    )
    late = {run["seed"]: [n for n in BAD if (run["flagged_at"][n] or 10**9) > GOAL_JUDGMENTS] for run in runs}
    goals = {
        f"every bad rater flagged within {GOAL_JUDGMENTS} of their judgments": not any(late.values()),
        "no careful rater flagged": all(run["flagged_at"][n] is None for run in runs for n in CAREFUL),
        f"(c) recovers at least {GOAL_RECOVERY:.0%} of the gap": all(run["recovery"] >= GOAL_RECOVERY for run in runs),
    }
    for goal, met in goals.items():
        detail = ""
        if not met and goal.startswith("every bad"):
            detail = " (late or never: " + "; ".join(f"seed {s}: {', '.join(v)}" for s, v in late.items() if v) + ")"
        print(f"{'met' if met else 'NOT met'}: {goal} on every seed{detail}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        if _SCRATCH is not None:
            import shutil

            shutil.rmtree(_SCRATCH, ignore_errors=True)
