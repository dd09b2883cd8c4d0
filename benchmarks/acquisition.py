"""Does the loop's choice of pairs save labels? Simulated raters answer through the project's own code.

For each strategy and seed, one project is imported (labeling.importing.import_pairs) from a pool of HH pairs,
with one simulated rater (overlap 1, no gold, no repeats). The rater asks for work with
labeling.assignment.next_comparison_for, answers with labeling.judgments.record_judgment, and after every batch
the loop's steps run as in rewardmodel.pipeline: build_dataset (the 80/20 held-out split by comparison hash
included), train, score every response into ResponseReward, activate, refresh_pairs with the project's
strategy. Cheap mode activates every version unless --gate; full mode runs pipeline.run_retrain, its gate
included. After each batch the active version is scored on test pairs that were never imported.

Tasks
- hh: raters answer with the pair's HH reference label; accuracy = agreement with HH's chosen response.
- oracle: a reward model trained once on all shared HH pairs plays the truth; a rater picks A with probability
  σ((r_a − r_b) / temperature) (so some answers are noisy, as people's are); accuracy = agreement with the
  oracle's preference. Here labels are the limit, so a strategy can show what it saves.

Modes
- cheap: frozen all-MiniLM-L6-v2 (or --backbone) embeddings, computed once and cached under
  VAR_DIR/benchmarks/acquisition/, and reward heads fitted on them (rewardmodel.core.head): a full grid runs in
  minutes on two cores. "doptimal" gets those embeddings as its Features.
- full: rewardmodel.pipeline.run_retrain fine-tunes the backbone after every batch (minutes per batch on a CPU;
  for the record). The oracle is then a fine-tuned model too, trained once and cached.

    .venv/bin/python benchmarks/acquisition.py --task hh --mode cheap \\
        --strategies random,uncertainty,ensemble,doptimal,doptimal:0.5 --seeds 3 --budgets 100,200,400,800,1600

A strategy spelled name:share runs with LoopSettings.exploration_share = share (default: the model's default).
It uses its own SQLite database (VAR_DIR/benchmarks/acquisition/bench.sqlite3) unless DATABASE_URL is set,
and deletes its projects when done. It prints one table per task (accuracy with 95% bootstrap intervals over
seeds and test pairs, and the difference from random, paired), "labels needed to reach random's accuracy at
the largest budget", writes the raw curves as JSON and draws every task's curves into --plot.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl"
STRENGTH = 2  # a simulated rater says "clearly better", as an imported reference label counts (dataset.py)
BOOTSTRAP = 2000


# --- the data ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    line: str  # the HH JSONL line (what is imported)
    conversation: list
    chosen: str
    rejected: str


def item_key(conversation, text: str) -> str:
    """One response in its conversation, as the cache and the oracle name it."""
    return hashlib.sha256(json.dumps([conversation, text], sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def load_pairs(path: Path) -> list[Pair]:
    """The file's pairs through the importer's own parser, one per line it would import (chosen first)."""
    from labeling.importing.formats import parse_labeled_pairs

    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        parsed = parse_labeled_pairs([line], format="hh")
        if not parsed:
            continue  # a line the importer skips (equal replies, empty reply)
        p = parsed[0]
        chosen, rejected = (p.response_a, p.response_b) if p.label == "a" else (p.response_b, p.response_a)
        pairs.append(Pair(line, p.conversation, chosen, rejected))
    # The importer keeps one comparison per (prompt, pair of texts): so do we.
    unique = {}
    for p in pairs:
        unique.setdefault((item_key(p.conversation, p.chosen), item_key(p.conversation, p.rejected)), p)
    return list(unique.values())


def split(pairs: list[Pair], *, test: int, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(pool, test): one fixed split for every strategy and seed, so their results are paired."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    return [pairs[i] for i in order[test:]], [pairs[i] for i in order[:test]]


def all_items(pairs: list[Pair]) -> dict[str, tuple[list, str]]:
    items = {}
    for p in pairs:
        for text in (p.chosen, p.rejected):
            items.setdefault(item_key(p.conversation, text), (p.conversation, text))
    return items


# --- embeddings (cheap mode) ------------------------------------------------------


def cached_embeddings(items: dict[str, tuple[list, str]], config, cache_dir: Path) -> dict[str, np.ndarray]:
    """key -> frozen embedding (rewardmodel.core.head.embed), computed once per backbone and max_length."""
    from rewardmodel.core.head import embed
    from rewardmodel.core.model import load_backbone

    tag = hashlib.sha256(f"{config.backbone}|{config.max_length}|mean-v1".encode()).hexdigest()[:16]
    path = cache_dir / f"embeddings-{tag}.npz"
    cached: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            cached = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
    missing = [k for k in items if k not in cached]
    if missing:
        started = time.perf_counter()
        model, tokenizer = load_backbone(config.backbone)
        vectors = embed(model, tokenizer, [items[k] for k in missing], config)
        cached.update(zip(missing, vectors, strict=True))
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(cached)
        staging = path.with_suffix(".partial.npz")
        np.savez(staging, keys=np.array(keys), vectors=np.stack([cached[k] for k in keys]))
        os.replace(staging, path)
        print(f"embedded {len(missing)} responses in {time.perf_counter() - started:.0f} s -> {path}", flush=True)
    return {k: cached[k] for k in items}


# --- the truth: what raters answer and what accuracy is measured against -------------


@dataclass
class Truth:
    task: str
    rewards: dict[str, float] = field(default_factory=dict)  # oracle: key -> reward
    temperature: float = 1.0

    def p_first(self, conversation, text_a: str, text_b: str, reference: str) -> float:
        """P(the rater prefers text_a)."""
        if self.task == "hh":
            return 1.0 if reference == "a" else 0.0
        margin = self.rewards[item_key(conversation, text_a)] - self.rewards[item_key(conversation, text_b)]
        return float(1.0 / (1.0 + np.exp(-margin / self.temperature)))

    def chosen_is_better(self, pair: Pair) -> bool:
        if self.task == "hh":
            return True
        return (
            self.rewards[item_key(pair.conversation, pair.chosen)]
            > self.rewards[item_key(pair.conversation, pair.rejected)]
        )


def oracle_truth(pairs: list[Pair], *, mode: str, config, embeddings, temperature: float, cache_dir: Path) -> Truth:
    """A reward model trained once on every pair (chosen over rejected) plays the truth."""
    if mode == "cheap":
        from rewardmodel.core.head import fit_heads, score_heads

        keys = list(embeddings)
        a = np.stack([embeddings[item_key(p.conversation, p.chosen)] for p in pairs])
        b = np.stack([embeddings[item_key(p.conversation, p.rejected)] for p in pairs])
        heads = fit_heads(a, b)
        values = score_heads(heads, np.stack([embeddings[k] for k in keys]))[:, 0]
        return Truth("oracle", dict(zip(keys, values.tolist(), strict=True)), temperature)

    path = cache_dir / f"oracle-full-{hashlib.sha256(json.dumps(config.to_dict()).encode()).hexdigest()[:16]}.json"
    if not path.exists():
        from rewardmodel.core.examples import PreferenceExample
        from rewardmodel.core.scoring import mean_reward, score
        from rewardmodel.core.train import train

        examples = [PreferenceExample(p.conversation, p.chosen, p.rejected, target=1.0) for p in pairs]
        result = train(config, examples)
        items = all_items(pairs)
        values = score(result.model, result.tokenizer, list(items.values()), config)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(zip(items, map(mean_reward, values), strict=True))))
    return Truth("oracle", json.loads(path.read_text()), temperature)


# --- the learner: the loop's train -> score -> activate -> refresh --------------------


class CheapLearner:
    """Reward heads on frozen embeddings, through the pipeline's data, versions, rewards and activation."""

    def __init__(self, embeddings: dict[str, np.ndarray], *, gate: bool = False):
        self.embeddings = embeddings
        self.gate = gate
        self.heads = {}  # version pk -> Heads

    def retrain(self, project, *, seed: int):
        from labeling.models import Response
        from rewardmodel import pipeline
        from rewardmodel.activation import activate, activate_if_not_worse
        from rewardmodel.core.head import fit_heads, score_heads
        from rewardmodel.dataset import build_dataset
        from rewardmodel.models import ResponseReward, RewardModelVersion

        dataset = build_dataset(project=project)
        if len(dataset.train) < pipeline.MIN_TRAIN_PAIRS:
            return None
        config = pipeline.default_config(project)
        number = RewardModelVersion.objects.filter(project=project).count() + 1
        heads = fit_heads(
            *self._sides(dataset.train),
            target=np.array([e.target for e in dataset.train]),
            weight=np.array([e.weight for e in dataset.train]),
            num_heads=config["num_heads"],
            seed=seed * 1000 + number,
        )
        metrics = {}
        if dataset.held_out:
            a, b = self._sides(dataset.held_out)
            margin = score_heads(heads, a).mean(axis=1) - score_heads(heads, b).mean(axis=1)
            target = np.array([e.target for e in dataset.held_out])
            decided = target != 0.5
            if decided.any():
                metrics = {
                    "accuracy": float(((margin > 0) == (target > 0.5))[decided].mean()),
                    "n": int(decided.sum()),
                }
        version = RewardModelVersion.objects.create(
            project=project,
            version=number,
            status=RewardModelVersion.Status.READY,
            config={**config, "benchmark": "frozen embeddings + reward heads (rewardmodel.core.head)"},
            metrics=metrics,
            judgments_count=dataset.snapshot["judgments"],
            data_snapshot=dataset.snapshot,
        )
        self.heads[version.pk] = heads
        rows = list(
            Response.objects.filter(prompt__project=project)
            .order_by("pk")
            .values_list("pk", "prompt__conversation", "text")
        )
        vectors = np.stack([self.embeddings[item_key(conversation, text)] for _, conversation, text in rows])
        rewards = score_heads(heads, vectors)
        ResponseReward.objects.bulk_create(
            [
                ResponseReward(
                    version=version,
                    response_id=pk,
                    reward=float(r.mean()),
                    head_rewards=r.tolist() if heads.num_heads > 1 else None,
                )
                for (pk, _, _), r in zip(rows, rewards, strict=True)
            ],
            batch_size=2000,
        )
        if self.gate:
            activated = activate_if_not_worse(version)
        else:
            activate(version)
            activated = True
        features = self.features(rows, vectors, heads.l2)
        return version if activated else None, features

    @staticmethod
    def features(rows, vectors, l2):
        from rewardmodel.acquisition import Features

        return Features(np.array([pk for pk, _, _ in rows], dtype=np.int64), vectors, prior_precision=l2)

    def _sides(self, examples):
        a = np.stack([self.embeddings[item_key(e.conversation, e.response_a)] for e in examples])
        b = np.stack([self.embeddings[item_key(e.conversation, e.response_b)] for e in examples])
        return a, b

    def margins(self, version, test: list[Pair]) -> np.ndarray:
        """r(chosen) − r(rejected) of each test pair under the version's heads (the mean head)."""
        from rewardmodel.core.head import score_heads

        heads = self.heads[version.pk]
        a = np.stack([self.embeddings[item_key(p.conversation, p.chosen)] for p in test])
        b = np.stack([self.embeddings[item_key(p.conversation, p.rejected)] for p in test])
        return score_heads(heads, a).mean(axis=1) - score_heads(heads, b).mean(axis=1)


class FullLearner:
    """rewardmodel.pipeline.run_retrain: fine-tune, evaluate, save, score, activate, refresh, as a worker does."""

    def __init__(self, overrides: dict):
        self.overrides = overrides

    def retrain(self, project, *, seed: int):
        from rewardmodel import pipeline
        from rewardmodel.models import RewardModelVersion, Trigger

        outcome = pipeline.run_retrain(
            project_id=project.pk,
            owner=f"bench-{project.pk}-{time.time_ns()}",
            trigger=Trigger.COMMAND,
            config_overrides={**self.overrides, "seed": seed},
            force=True,
        )
        if outcome.status != pipeline.RetrainStatus.TRAINED:
            return None
        # Keep the active checkpoint only: a MiniLM checkpoint is ~90 MB.
        for old in RewardModelVersion.objects.filter(project=project).exclude(status=RewardModelVersion.Status.ACTIVE):
            if old.artifact_path:
                shutil.rmtree(old.artifact_path, ignore_errors=True)
        # run_retrain refreshed the queue itself (pipeline.refresh_queue) when it activated the version.
        return "refreshed"

    def cleanup(self, project) -> None:
        from django.conf import settings

        shutil.rmtree(Path(settings.MODEL_ROOT) / project.slug, ignore_errors=True)

    def margins(self, version, test: list[Pair]) -> np.ndarray:
        from rewardmodel.core.checkpoint import load_checkpoint
        from rewardmodel.core.config import TrainConfig
        from rewardmodel.core.scoring import mean_reward, score

        config = TrainConfig.from_dict(version.config)
        model, tokenizer, _ = load_checkpoint(Path(version.artifact_path), device="cpu")
        items = [(p.conversation, t) for p in test for t in (p.chosen, p.rejected)]
        values = np.array([mean_reward(r) for r in score(model, tokenizer, items, config)])
        return values[0::2] - values[1::2]


# --- one simulated project --------------------------------------------------------------


def parse_strategy(spec: str) -> tuple[str, float | None]:
    from rewardmodel.models import Strategy

    name, _, share = spec.partition(":")
    if name not in Strategy.values:
        raise SystemExit(f"unknown strategy {name!r}; expected one of {', '.join(Strategy.values)}")
    return name, (float(share) if share else None)


def simulate(
    *,
    pool: list[Pair],
    test: list[Pair],
    truth: Truth,
    learner,
    strategy: str,
    seed: int,
    budgets: list[int],
    batch: int,
    exploration_share: float | None = None,
    keep: bool = False,
) -> list[tuple[int, list[bool]]]:
    """One project, one rater, one seed: [(labels so far, correct per test pair)] after every retrain.

    keep: leave the project in the database (tests look at it); by default it is deleted at the end.
    """
    from django.contrib.auth import get_user_model

    from labeling.assignment import next_comparison_for
    from labeling.importing.importer import import_pairs
    from labeling.judgments import JudgmentInput, record_judgment
    from labeling.models import Project
    from rewardmodel.acquisition import refresh_pairs
    from rewardmodel.models import LoopSettings, RewardModelVersion

    rng = np.random.default_rng(seed)
    slug = f"bench-acq-{strategy}-{seed}-{os.getpid()}-{time.time_ns()}"
    project = import_pairs(project_slug=slug, lines=[p.line for p in pool]).project
    Project.objects.filter(pk=project.pk).update(overlap=1, gold_rate=0.0, repeat_rate=0.0)
    project.refresh_from_db()
    LoopSettings.objects.create(
        project=project,
        acquisition=strategy,
        retrain_every=0,  # the benchmark retrains after each batch itself, without a broker
        pair_budget=0,  # HH prompts have two responses: every candidate pair is imported already
        # The between-retrain head refit (when this tree has it) would only re-rank between our own retrains.
        **({"refit_every": 0} if any(f.name == "refit_every" for f in LoopSettings._meta.fields) else {}),
        **({} if exploration_share is None else {"exploration_share": exploration_share}),
    )
    rater = get_user_model().objects.create_user(username=f"rater-{slug}"[:150])
    project.raters.add(rater)
    curve: list[tuple[int, list[bool]]] = []
    try:
        refresh_pairs(project=project, seed=seed)  # no model yet: a random order, as every new project gets
        labels = 0
        for _ in range(10**6):
            if labels >= budgets[-1]:
                break
            step = min(batch, min(b for b in budgets if b > labels) - labels)
            answered = 0
            for _ in range(step):
                assignment = next_comparison_for(rater=rater, project=project)
                if assignment is None:
                    break
                c = assignment.comparison
                p_a = truth.p_first(c.prompt.conversation, c.response_a.text, c.response_b.text, c.reference_label)
                answer = "a" if rng.random() < p_a else "b"
                record_judgment(
                    rater=rater,
                    project=project,
                    judgment=JudgmentInput(
                        comparison_id=c.pk,
                        outcome="left" if assignment.left == answer else "right",
                        strength=STRENGTH,
                        time_spent_ms=5000,
                    ),
                )
                answered += 1
            labels += answered
            trained = learner.retrain(project, seed=seed)
            if isinstance(trained, tuple):  # cheap: the learner leaves the refresh to us, with its features
                version, features = trained
                if version is not None:
                    refresh_pairs(project=project, version=version, seed=seed + labels, features=features)
            active = RewardModelVersion.objects.filter(project=project, status=RewardModelVersion.Status.ACTIVE).first()
            if active is not None:
                margins = learner.margins(active, test)
                truth_sign = np.array([truth.chosen_is_better(p) for p in test])
                curve.append((labels, ((margins > 0) == truth_sign).tolist()))
            if answered < step:
                break  # the pool ran out
    finally:
        if not keep:
            if hasattr(learner, "cleanup"):
                learner.cleanup(project)
            Project.objects.filter(pk=project.pk).delete()
            rater.delete()
    return curve


# --- statistics -----------------------------------------------------------------------------


def bootstrap_mean(correct: np.ndarray, *, rng: np.random.Generator, reps: int = BOOTSTRAP) -> tuple[float, float]:
    """95% percentile interval of the mean of a (seeds, pairs) matrix, resampling seeds and pairs (two levels)."""
    seeds, pairs = correct.shape
    s = rng.integers(0, seeds, size=(reps, seeds))
    p = rng.integers(0, pairs, size=(reps, pairs))
    # mean over the resampled seeds of each seed's mean over the resampled pairs
    per_seed = np.stack([correct[:, p[r]].mean(axis=1) for r in range(reps)])  # (reps, seeds)
    means = np.take_along_axis(per_seed, s, axis=1).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def at_labels(curves: list[list[tuple[int, list[bool]]]], labels: int) -> np.ndarray | None:
    """(seeds, pairs) correctness at this label count, or None if some seed has no point there.

    A budget beyond a curve's last point reads that point: a run stops short of its largest budget only when
    the pool ran out, so its last point is "every label there is" (1,597 for a 1,600 budget on the HH pool).
    """
    rows = []
    for curve in curves:
        if not curve:
            return None
        row = next((c for n, c in curve if n == labels), None)
        if row is None and curve[-1][0] < labels:
            row = curve[-1][1]
        if row is None:
            return None
        rows.append(row)
    return np.array(rows, dtype=float)


def summarise(results: dict[str, list], budgets: list[int], *, baseline: str = "random") -> dict:
    rng = np.random.default_rng(12345)
    table = {}
    for name, curves in results.items():
        rows = {}
        for b in budgets:
            m = at_labels(curves, b)
            if m is None:
                continue
            row = {"accuracy": float(m.mean()), "ci": bootstrap_mean(m, rng=rng)}
            base = at_labels(results.get(baseline, []), b) if baseline in results else None
            if base is not None and name != baseline and base.shape == m.shape:
                row["vs_random"] = float((m - base).mean())
                row["vs_random_ci"] = bootstrap_mean(m - base, rng=rng)
            rows[b] = row
        table[name] = rows
    needed = {}
    if baseline in results and (target := at_labels(results[baseline], budgets[-1])) is not None:
        goal = float(target.mean())
        for name, curves in results.items():
            points = sorted({n for curve in curves for n, _ in curve})
            reached = [n for n in points if (m := at_labels(curves, n)) is not None and m.mean() >= goal]
            needed[name] = reached[0] if reached else None
        needed["_goal"] = goal
    return {"table": table, "labels_needed": needed}


def print_report(task: str, summary: dict, budgets: list[int], seeds: int, n_test: int, extra: str) -> None:
    print(f"\n## task {task}: accuracy on {n_test} held-out pairs, mean of {seeds} seeds [95% bootstrap CI]; {extra}")
    names = list(summary["table"])
    print("| labels | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for b in budgets:
        cells = []
        for name in names:
            row = summary["table"][name].get(b)
            if row is None:
                cells.append("–")
                continue
            cell = f"{row['accuracy']:.3f} [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]"
            if "vs_random" in row:
                low, high = row["vs_random_ci"]
                cell += f" (Δ {row['vs_random']:+.3f} [{low:+.3f}, {high:+.3f}])"
            cells.append(cell)
        print(f"| {b:,} | " + " | ".join(cells) + " |")
    needed = summary["labels_needed"]
    if needed:
        goal = needed["_goal"]
        print(f"\nlabels needed to reach random's accuracy at {budgets[-1]:,} labels ({goal:.3f}):")
        for name in names:
            n = needed.get(name)
            print(f"  {name}: {'not reached' if n is None else f'{n:,}'}")


def plot(results_dir: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted(results_dir.glob("curves-*.json"))
    if not files:
        return
    fig, axes = plt.subplots(1, len(files), figsize=(6 * len(files), 4.2), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, path in zip(axes[0], files, strict=True):
        data = json.loads(path.read_text())
        for name, curves in data["results"].items():
            points = sorted({n for curve in curves for n, _ in curve})
            xs, ys, lows, highs = [], [], [], []
            for n in points:
                m = at_labels(curves, n)
                if m is None:
                    continue
                low, high = bootstrap_mean(m, rng=rng, reps=300)
                xs.append(n)
                ys.append(m.mean())
                lows.append(low)
                highs.append(high)
            (line,) = ax.plot(xs, ys, label=name, linewidth=1.6)
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.12, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(data["budgets"], [f"{b:,}" for b in data["budgets"]])
        ax.set_xlabel("labels")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(f"{data['task']} ({data['mode']}, {data['seeds']} seeds, {data['n_test']} test pairs)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Date": None} if out.suffix == ".svg" else None)
    plt.close(fig)
    print(f"plot: {out}")


# --- the command line ----------------------------------------------------------------------


def run(args) -> dict:
    """Everything after Django is set up: data, truth, learner, every strategy and seed, the report."""
    from rewardmodel.core.config import TrainConfig

    budgets = sorted(args.budgets)
    cache_dir = Path(args.cache_dir)
    pairs = load_pairs(Path(args.data))
    pool, test = split(pairs, test=args.test_pairs)
    config = TrainConfig(
        **({"backbone": args.backbone} if args.backbone else {}), max_length=args.max_length, device="cpu"
    )
    embeddings = cached_embeddings(all_items(pairs), config, cache_dir) if args.mode == "cheap" else None
    if args.task == "hh":
        truth = Truth("hh")
        extra = "raters answer with HH's reference label"
    else:
        truth = oracle_truth(
            pairs,
            mode=args.mode,
            config=config,
            embeddings=embeddings,
            temperature=args.temperature,
            cache_dir=cache_dir,
        )
        noise = [1.0 - max(q, 1 - q) for q in (truth.p_first(p.conversation, p.chosen, p.rejected, "") for p in pool)]
        extra = (
            f"oracle raters at temperature {args.temperature:g}: an answer disagrees with the oracle with "
            f"probability {np.mean(noise):.3f} on average over the pool"
        )
    if args.mode == "cheap":
        learner = CheapLearner(embeddings, gate=args.gate)
    else:
        learner = FullLearner(
            {"backbone": config.backbone, "max_length": args.max_length, "epochs": args.epochs, "device": "cpu"}
        )
    print(f"{len(pairs)} pairs: pool {len(pool)}, test {len(test)}; {extra}", flush=True)

    results: dict[str, list] = {spec: [] for spec in args.strategies}
    specs = [(spec, *parse_strategy(spec)) for spec in args.strategies]
    # Seeds outer: after each seed every strategy has a curve, and the results so far are written.
    for seed in range(args.seeds):
        for spec, name, share in specs:
            started = time.perf_counter()
            curve = simulate(
                pool=pool,
                test=test,
                truth=truth,
                learner=learner,
                strategy=name,
                seed=seed,
                budgets=budgets,
                batch=args.batch,
                exploration_share=share,
            )
            results[spec].append(curve)
            last = curve[-1] if curve else (0, [])
            print(
                f"{args.task} {spec} seed {seed}: {last[0]} labels, accuracy {np.mean(last[1]) if last[1] else 0:.3f}"
                f" ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        summary = report(args, results, budgets, seed + 1, len(test), extra)
    return summary


def report(args, results, budgets, seeds, n_test, extra) -> dict:
    summary = summarise(results, budgets)
    print_report(args.task, summary, budgets, seeds, n_test, extra)
    if args.results_dir:
        results_dir = Path(args.results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / f"curves-{args.task}-{args.mode}.json").write_text(
            json.dumps(
                {
                    "task": args.task,
                    "mode": args.mode,
                    "seeds": seeds,
                    "budgets": budgets,
                    "n_test": n_test,
                    "batch": args.batch,
                    "note": extra,
                    "results": results,
                    "summary": {k: {str(b): v for b, v in rows.items()} for k, rows in summary["table"].items()},
                    "labels_needed": summary["labels_needed"],
                }
            )
        )
        if args.plot:
            plot(results_dir, Path(args.plot))
    return summary


def parser() -> argparse.ArgumentParser:
    var_dir = Path(os.environ.get("VAR_DIR", ROOT / "var"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["hh", "oracle"], default="hh")
    p.add_argument("--mode", choices=["cheap", "full"], default="cheap")
    p.add_argument(
        "--strategies", type=lambda s: s.split(","), default=["random", "uncertainty", "ensemble", "doptimal"]
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budgets", type=lambda s: [int(x) for x in s.split(",")], default=[100, 200, 400, 800, 1600])
    p.add_argument("--batch", type=int, default=50, help="judgments between two retrains (the loop's retrain_every)")
    p.add_argument("--test-pairs", type=int, default=250, help="pairs held out of the pool for accuracy")
    p.add_argument(
        "--temperature",
        type=float,
        default=0.5,
        help="oracle task: the raters' BT temperature (0.5: raters disagree with the oracle on ~28%% of the pool)",
    )
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--backbone", default="", help="default: TrainConfig's (all-MiniLM-L6-v2 from its wheel)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1, help="full mode: epochs per retrain")
    p.add_argument(
        "--gate",
        action="store_true",
        help="cheap mode: activate a version only if not worse on the project's held-out judgments, as the loop "
        "does (activate_if_not_worse); off by default: on the few held-out judgments of the first batches the "
        "gate is noise, and it kept a first version serving for the whole run in a probe",
    )
    p.add_argument("--cache-dir", default=str(var_dir / "benchmarks" / "acquisition"))
    p.add_argument("--results-dir", default=str(var_dir / "benchmarks" / "acquisition"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "acquisition.svg"))
    p.add_argument(
        "--replot", action="store_true", help="only print the tables and draw --plot from the curves in --results-dir"
    )
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.replot:
        for path in sorted(Path(args.results_dir).glob("curves-*.json")):
            data = json.loads(path.read_text())
            results = {k: [[tuple(point) for point in curve] for curve in v] for k, v in data["results"].items()}
            budgets = data["budgets"]
            summary = summarise(results, budgets)
            print_report(data["task"], summary, budgets, data["seeds"], data["n_test"], data["note"])
        plot(Path(args.results_dir), Path(args.plot))
        return
    if not Path(args.data).exists():
        raise SystemExit(f"no data at {args.data} (the shared HH pairs); nothing to measure")
    var_dir = Path(os.environ.get("VAR_DIR", ROOT / "var"))
    bench_dir = var_dir / "benchmarks" / "acquisition"
    bench_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{bench_dir / 'bench.sqlite3'}")
    os.environ.setdefault("MODEL_ROOT", str(bench_dir / "models"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    for name in ("rewardmodel.acquisition", "rewardmodel.pipeline", "labeling", "rewardmodel.core"):
        logging.getLogger(name).setLevel(logging.WARNING)
    call_command("migrate", verbosity=0)
    run(args)


if __name__ == "__main__":
    main()
