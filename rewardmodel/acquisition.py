"""Which pairs are worth a human's time next: refresh a project's comparison queue.

One refresh (the last step of the loop, after a version is activated and has
scored the responses):

1. candidates = the project's OPEN comparisons, plus every unordered pair of
   responses to the same prompt that has no comparison yet (in any status);
2. each candidate gets an acquisition score, higher = more informative;
3. the candidates are ordered into queue slots (best first, with a share of
   random picks, see `queue_order`); the open comparisons get
   priority = descending slot rank, and the best unlabelled candidates become
   new comparisons, at most `pair_budget` of them;
4. complete comparisons are retired, so the open queue stays small.

Strategies (LoopSettings.acquisition, rewardmodel.models.Strategy; the settings
are read through loop.loop_settings_for, so a project without a row ranks by
the defaults):

- "random": a uniformly random order. Also what every project gets while it has
  no active reward model, or the model scored none of its responses.
- "uncertainty": the Bradley-Terry probability P(A beats B) = σ(r_a − r_b)
  closest to 0.5 first. Cheap, but it cannot tell "the model does not know"
  from "the two responses really are about as good" (an aleatoric near-tie that
  a human will also call a coin flip), so it keeps asking about true ties.
- "ensemble": epistemic uncertainty from the reward heads (each trained on a
  bootstrap re-weighting of the judgments; ResponseReward.head_rewards). The
  score is BALD (Houlsby et al., 2011), the mutual information between the
  label and the model:  I = H[mean_h p_h] − mean_h H[p_h],  p_h = σ(r_a^h − r_b^h).
  It is zero when the heads agree, whatever they agree on (a confident 0.5
  included), and largest when confident heads contradict each other: exactly
  the pairs whose label would change the model. It is the expected information
  gain of one label, in nats (at most ln 2), rather than an ad hoc spread such
  as the variance of p_h, which is its first-order approximation.
  The pipeline trains REWARD_MODEL_ENSEMBLE_HEADS heads (default 5) for an
  "ensemble" project (TrainConfig.num_heads; rewardmodel/core/README.md).
  A version without head rewards (a single-head model, or heads missing or of
  different lengths on some response) falls back to "uncertainty", and the
  result says so.

Pairs with a response the version did not score (imported after scoring) rank
after every scored pair, at random among themselves; exploration slots can
still pick them, and the next version scores them. Comparison.selected_by of
every open comparison is rewritten: the strategy, or "exploration" for a slot
given to a random pick ("import" does not survive the first refresh).

- "doptimal": D-optimal experimental design on the reward's last layer, from
  Shen et al., "Active Reward Modeling: Adaptive Preference Labeling for Large
  Model Alignment" (ICML 2025). What we took from it: a Bradley-Terry reward that
  is linear in a frozen embedding e, r = w·e, has Fisher information
  M = λI + Σ_judged p(1−p)·d dᵀ over the judged pairs (d = e_a − e_b,
  p = σ(r_a − r_b), λ the prior's precision); labelling pair x adds
  p(1−p)·d dᵀ, and the paper's greedy D-optimal batch picks, one by one, the
  pair that most increases log det M, i.e. the largest log(1 + p(1−p)·dᵀM⁻¹d),
  updating M after each pick (Sherman-Morrison, so a batch is not spent on
  near-duplicates). Its two factors are the two things a label can teach: a
  pair the model cannot call (p near 0.5) in a direction of embedding space
  the judgments have not yet covered (dᵀM⁻¹d large). The first
  `dopt_batch` slots (the judgments expected before the next refresh:
  LoopSettings.retrain_every, 50 when 0) are that greedy batch; the rest
  rank by the one-pair gain. It needs the embeddings the reward head reads
  (`Features`, passed by the caller: the embedding cache beside each
  version); without them it ranks at random, and the result says so
  ("uncertainty" is what the benchmark found worst on real data).

A mix with random is not a separate strategy: LoopSettings.exploration_share
gives that share of queue slots to uniformly random pairs under any strategy
(`queue_order`), so "50% random, 50% D-optimal" is exploration_share=0.5.
benchmarks/acquisition.py measures such mixes with a strategy spelled
"doptimal:0.5".

We built "ensemble" rather than Thompson sampling: Thompson draws one head per
decision and asks about what that head thinks is best, which suits finding the
best response (a dueling bandit) rather than teaching the reward model where it
is wrong, and it gives one pick per draw instead of a ranking of the whole
queue. The heads needed for either are the same, so nothing is lost.

Speed: four SELECTs (the loop settings, the active version, the responses
with their rewards, the comparisons) load everything as tuples into numpy
arrays (no model instances); scoring is vectorised; the writes are bulk: retiring and creating
in one transaction, then the priorities (PostgreSQL: UPDATE ... FROM
unnest(arrays), one statement per 2,000 rows; SQLite: executemany of a
primary-key UPDATE). See benchmarks/refresh_pairs.py for figures against
Django's bulk_update.

Locks: on PostgreSQL an UPDATE holds the row lock of every comparison it has
rewritten until its transaction commits, and the assignment engine's SKIP
LOCKED passes over locked rows. So all reading and scoring happens before any
write, and the priorities are written best first, each batch of 2,000 in its
own transaction: a row is locked ~0.1 s, and a rater asking for a task
mid-refresh gets the new top of the queue (one transaction for all 100,000
held every open row for ~5 s, and such a rater was told there was nothing to
do). The price: a refresh that fails half-way leaves the queue partly
re-prioritised, which the next refresh completes. Keep refresh_pairs out of
any longer transaction of the caller's: inside one, the batches' locks last
until the caller commits.

Why one module of ~600 lines: it is one job, one refresh, and every part
exists only for it. The scoring and ordering functions are pure numpy and are
tested on their own, without a database; the rest loads and writes in bulk
for them; and a seventh of the file is this docstring.
"""

import json
import logging
import time
from dataclasses import dataclass
from operator import itemgetter

import numpy as np
from django.db import connection, transaction
from django.db.models import FilteredRelation, Q, TextField
from django.db.models.functions import Cast

from labeling.models import Comparison, Project, Response
from rewardmodel import embedding_cache
from rewardmodel.loop import loop_settings_for
from rewardmodel.models import RewardModelVersion, Strategy

logger = logging.getLogger(__name__)


# Rows per priority UPDATE, each in its own short transaction: big enough that
# round trips do not matter, small enough that the rows it locks are held for
# ~0.13 s (PostgreSQL, benchmarks/refresh_pairs.py: 20,000 rows in 1.26 s).
# The commits cost a full refresh of 100,000 about 1-2 s more than one
# transaction did (9.0-11.3 s against 7.8-8.9 s, same machine, same run).
_BATCH_SIZE = 2_000


@dataclass(frozen=True)
class Features:
    """What "doptimal" reads beyond rewards: one vector per response that the reward head is linear in.

    The caller supplies them (the embedding cache beside a version, or the benchmark's frozen embeddings):
    refresh_pairs loads nothing heavy itself. Responses without a row rank as unscored.
    """

    response_ids: np.ndarray  # (n,) int64, ascending
    embeddings: np.ndarray  # (n, d)
    prior_precision: float = 1.0  # λ of the head's Gaussian prior (rewardmodel.core.head.DEFAULT_L2)


@dataclass(frozen=True)
class RefreshResult:
    strategy: Strategy  # the strategy that actually ranked the pairs (after fallbacks)
    comparisons_scored: int  # candidates scored: open comparisons + unlabelled pairs
    comparisons_updated: int  # open comparisons given a new priority
    comparisons_created: int  # new comparisons, at most the settings' pair_budget
    comparisons_retired: int  # complete comparisons moved to retired
    exploration_picks: int  # queue slots (updated or created) given to a random pick
    seconds: float  # wall time of the whole refresh


# "doptimal" plans this many picks jointly when the loop retrains on no judgment count (retrain_every 0).
DOPT_BATCH = 50


# --- Scoring: pure functions over numpy arrays, higher = more informative ---


def random_scores(n: int, rng: np.random.Generator) -> np.ndarray:
    """Independent uniform scores: ordering by them is a uniformly random order."""
    return rng.random(n)


def uncertainty_scores(r_a, r_b) -> np.ndarray:
    """1 − |2·P(A beats B) − 1| with P = σ(r_a − r_b): 1 for a predicted tie, towards 0 for a sure call.

    Computed as 2·σ(−|r_a − r_b|), which stays distinct (if tiny) for pairs far
    apart instead of every P rounding to exactly 1. NaN (unscored) stays NaN.

    >>> uncertainty_scores(np.array([0.0, 0.0]), np.array([0.0, 3.0])).round(3)
    array([1.   , 0.095])
    """
    delta = np.abs(np.asarray(r_a, dtype=float) - np.asarray(r_b, dtype=float))
    return 2.0 * _sigmoid(-delta)


def ensemble_scores(heads_a, heads_b) -> np.ndarray:
    """BALD mutual information per pair, in nats: H[mean_h p_h] − mean_h H[p_h], p_h = σ(r_a^h − r_b^h).

    heads_a, heads_b: (pairs, heads) rewards of each side under each head.
    0 when the heads agree (on anything, 0.5 included); up to ln 2 when they
    contradict each other with confidence. NaN in a row gives NaN.

    >>> agree = [[0.0, 0.0]], [[0.0, 0.0]]           # both heads: a coin flip
    >>> split = [[4.0, -4.0]], [[0.0, 0.0]]          # one head sure of A, one of B
    >>> float(ensemble_scores(*agree)[0]), round(float(ensemble_scores(*split)[0]), 2)
    (0.0, 0.6)
    """
    logits = np.asarray(heads_a, dtype=float) - np.asarray(heads_b, dtype=float)
    p = _sigmoid(logits)
    # H(σ(x)) = softplus(x) − x·σ(x): exact from the logit, no log(0).
    expected_entropy = (np.logaddexp(0.0, logits) - logits * p).mean(axis=1)
    return np.maximum(_entropy(p.mean(axis=1)) - expected_entropy, 0.0)


def doptimal_scores(diff, p, information, *, batch: int, shortlist: int | None = None) -> np.ndarray:
    """Greedy D-optimal batch on the Fisher information (Shen et al., ICML 2025): higher = pick sooner.

    diff: (pairs, d) embedding differences e_a − e_b (NaN rows: unscored); p: (pairs,) P(A beats B) under the
    current model; information: (d, d) the current Fisher M (prior plus judged pairs, `fisher_information`).
    The one-pair gain of x is log det(M + c·d dᵀ) − log det M = log(1 + c·dᵀM⁻¹d), c = p(1−p). The first
    `batch` picks are greedy: each takes the largest gain, then M absorbs it (Sherman-Morrison), so the next
    pick is judged given the ones before it. They come back above every other score, in pick order; the rest
    score their one-pair gain under the starting M. The greedy part runs over the `shortlist` best one-pair
    gains (default max(20·batch, 1000)): a pick only lowers other gains, so the best batch is almost always
    among them, and it keeps 100,000 candidates to one pass.

    >>> m = np.eye(2)                             # nothing judged yet: the prior alone
    >>> d = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> doptimal_scores(d, np.full(3, 0.5), m, batch=2).argsort()[::-1].tolist()   # 2nd pick: the new direction
    [0, 2, 1]
    """
    diff = np.asarray(diff, dtype=float)
    p = np.asarray(p, dtype=float)
    n = len(diff)
    scores = np.full(n, np.nan)
    ok = np.flatnonzero(np.isfinite(diff).all(axis=1) & np.isfinite(p))
    if not len(ok):
        return scores
    d, c = diff[ok], p[ok] * (1.0 - p[ok])
    inverse = np.linalg.inv(np.asarray(information, dtype=float))
    q = ((d @ inverse) * d).sum(axis=1)  # dᵀM⁻¹d per pair, as one matrix product
    gains = np.log1p(c * q)
    scores[ok] = gains
    batch = min(batch, len(ok))
    if batch < 1:
        return scores
    short = np.argsort(-gains, kind="stable")[: max(shortlist or 20 * batch, 1000, batch)]
    d_s, c_s, q_s = d[short], c[short], q[short].copy()
    taken = np.zeros(len(short), dtype=bool)
    top = float(gains.max()) + 1.0
    for rank in range(batch):
        pick = int(np.argmax(np.where(taken, -np.inf, np.log1p(c_s * q_s))))
        taken[pick] = True
        scores[ok[short[pick]]] = top + (batch - rank)
        # M' = M + c·d dᵀ: M'⁻¹ = M⁻¹ − c·u uᵀ / (1 + c·q), u = M⁻¹d; and each q_i drops by c·(u·d_i)² / (1 + c·q).
        u = inverse @ d_s[pick]
        shrink = c_s[pick] / (1.0 + c_s[pick] * q_s[pick])
        q_s = np.maximum(q_s - shrink * (d_s @ u) ** 2, 0.0)
        inverse -= shrink * np.outer(u, u)
    return scores


def fisher_information(diff, p, *, prior_precision: float) -> np.ndarray:
    """(d, d) Fisher information of a linear BT reward: λI + Σ p(1−p)·d dᵀ over the given (judged) pairs.

    Rows with NaN (a response without features or reward) are left out.
    """
    diff = np.asarray(diff, dtype=float)
    p = np.asarray(p, dtype=float)
    ok = np.isfinite(diff).all(axis=1) & np.isfinite(p)
    d, c = diff[ok], p[ok] * (1.0 - p[ok])
    return prior_precision * np.eye(diff.shape[1]) + (d * c[:, None]).T @ d


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


def _entropy(p: np.ndarray) -> np.ndarray:
    def xlogx(v):
        return v * np.log(np.where(v > 0, v, 1.0))

    return -(xlogx(p) + xlogx(1.0 - p))


# --- Ordering: scores -> queue slots, with an exploration share ---


def queue_order(
    scores: np.ndarray,
    *,
    exploration_share: float,
    rng: np.random.Generator,
    new: np.ndarray | None = None,
    budget: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Order candidates into queue slots, best first, keeping a share ε of slots for random picks.

    Each slot is an exploration slot with probability ε = exploration_share,
    independently (one Bernoulli draw per slot). An exploration slot takes a
    candidate drawn uniformly from those not yet placed; every other slot takes
    the best-scored candidate not yet placed (NaN scores rank last; ties are
    broken at random). Candidates flagged in `new` take slots only until
    `budget` of them are placed; the rest are left out of the queue.

    Returns (order, explored): the candidate index of slot 0, 1, ... and
    whether each slot was an exploration pick.

    A uniform draw among the candidates not yet placed is the same as taking
    the next unplaced one from a random permutation fixed up front (the
    unplaced ones are exchangeable), so the whole thing is one merge of two
    orders, linear time.
    """
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    new = np.zeros(n, dtype=bool) if new is None else np.asarray(new, dtype=bool)
    n_slots = n - int(new.sum()) + min(budget, int(new.sum()))
    key = np.where(np.isnan(scores), -np.inf, scores)
    by_score = np.lexsort((rng.random(n), -key))
    explored = rng.random(n_slots) < exploration_share
    if not explored.any():
        # Greedy only: drop the new candidates past the budget, vectorised.
        keep = ~new[by_score] | (np.cumsum(new[by_score]) <= budget)
        return by_score[keep], explored

    by_chance = rng.permutation(n).tolist()
    greedy = by_score.tolist()
    is_new = new.tolist()
    placed = bytearray(n)
    new_left = budget
    order = [0] * n_slots
    g = c = 0
    for slot, explore in enumerate(explored.tolist()):
        if explore:
            while placed[by_chance[c]] or (new_left == 0 and is_new[by_chance[c]]):
                c += 1
            pick = by_chance[c]
        else:
            while placed[greedy[g]] or (new_left == 0 and is_new[greedy[g]]):
                g += 1
            pick = greedy[g]
        placed[pick] = 1
        new_left -= is_new[pick]
        order[slot] = pick
    return np.array(order, dtype=np.int64), explored


# --- The refresh ---


def cached_features(version: RewardModelVersion) -> Features | None:
    """The embeddings the version's scoring pass cached (rewardmodel.embedding_cache), as "doptimal" reads
    them; None when the version has no cache from its checkpoint as it is now (it then ranks at random and
    the result says so)."""
    cache = embedding_cache.load(version)
    if cache is None or not len(cache.response_ids):
        return None
    return Features(response_ids=np.asarray(cache.response_ids, dtype=np.int64), embeddings=cache.embeddings)


def refresh_pairs(
    *,
    project: Project,
    version: RewardModelVersion | None = None,
    seed: int | None = None,
    features: Features | None = None,
) -> RefreshResult:
    """Re-prioritise the project's open comparisons, add the best new pairs, retire complete ones.

    version: whose rewards to rank by; None means the project's active version.
    No version, or one that scored none of the project's responses, ranks at
    random. features: the response embeddings "doptimal" reads (ignored by the
    other strategies); without them "doptimal" ranks at random. The same data
    and seed give the same result.
    """
    started = time.perf_counter()
    settings = loop_settings_for(project)
    if settings.acquisition not in Strategy.values:
        raise ValueError(f"Unknown acquisition strategy {settings.acquisition!r}; expected one of {Strategy.values}.")
    if version is None:
        version = RewardModelVersion.objects.filter(project=project, status=RewardModelVersion.Status.ACTIVE).first()
    elif version.project_id != project.pk:
        raise ValueError(f"Reward model version {version.pk} belongs to another project.")
    rng = np.random.default_rng(seed)

    wanted = Strategy(settings.acquisition) if version is not None else Strategy.RANDOM
    if wanted == Strategy.DOPTIMAL and features is None:
        features = cached_features(version)
    responses = _load_responses(
        project=project,
        version=None if wanted == Strategy.RANDOM else version,
        with_heads=wanted == Strategy.ENSEMBLE,
    )
    comparisons = _load_comparisons(project=project)
    candidates = _candidates(responses, comparisons)
    if wanted == Strategy.DOPTIMAL:
        strategy, scores = _score_doptimal(
            responses, candidates, comparisons, features, batch=settings.retrain_every or DOPT_BATCH, rng=rng
        )
    else:
        strategy, scores = _score(wanted, responses, candidates, rng)
    # Under "random" every slot already is a random pick.
    share = 0.0 if strategy == Strategy.RANDOM else settings.exploration_share
    order, explored = queue_order(
        scores, exploration_share=share, rng=rng, new=candidates.is_new, budget=settings.pair_budget
    )

    n_slots = len(order)
    priorities = (n_slots - np.arange(n_slots)) / max(n_slots, 1)
    # What each slot's comparison says about itself: the strategy's own value
    # (Strategy's values are Comparison.SelectedBy's), or a random pick's.
    reasons = np.where(explored, Comparison.SelectedBy.EXPLORATION.value, strategy.value)
    is_new = candidates.is_new[order]
    update_ids = candidates.comparison_ids[order[~is_new]].tolist()
    new_comparisons = _new_comparisons(
        project=project,
        responses=responses,
        a=candidates.a[order[is_new]],
        b=candidates.b[order[is_new]],
        priorities=priorities[is_new],
        reasons=reasons[is_new],
        rng=rng,
    )

    with transaction.atomic():
        retired = Comparison.objects.filter(project=project, status=Comparison.Status.COMPLETE).update(
            status=Comparison.Status.RETIRED
        )
        # A pair imported between our read and this insert violates the unique
        # pair constraint: this transaction rolls back, old queue intact.
        Comparison.objects.bulk_create(new_comparisons, batch_size=1000)
    # Then the priorities, best first, in short transactions ("Locks" above).
    _set_priorities(ids=update_ids, priorities=priorities[~is_new].tolist(), selected_by=reasons[~is_new].tolist())

    result = RefreshResult(
        strategy=strategy,
        comparisons_scored=len(scores),
        comparisons_updated=len(update_ids),
        comparisons_created=len(new_comparisons),
        comparisons_retired=retired,
        exploration_picks=int(explored.sum()),
        seconds=time.perf_counter() - started,
    )
    logger.info("Refreshed pairs of project %s: %s", project.slug, result)
    return result


@dataclass
class _Responses:
    ids: np.ndarray  # response ids, ascending
    prompt_ids: np.ndarray
    rewards: np.ndarray  # mean reward; NaN where the version scored no reward
    heads: np.ndarray | None  # (responses, heads), NaN rows where unscored; None if unusable


@dataclass
class _Candidates:
    a: np.ndarray  # index into _Responses of each side; len(ids) (a NaN sentinel) if unknown
    b: np.ndarray
    comparison_ids: np.ndarray  # the open comparison's id; -1 for an unlabelled pair
    is_new: np.ndarray


def _load_responses(*, project: Project, version: RewardModelVersion | None, with_heads: bool) -> _Responses:
    queryset = Response.objects.filter(prompt__project=project).order_by("id")
    if version is None:
        rows = list(queryset.values_list("id", "prompt_id"))
        ids, prompt_ids = _columns(rows, 2)
        return _Responses(ids, prompt_ids, np.full(len(ids), np.nan), None)
    # One LEFT JOIN: responses the version did not score come back with NULLs.
    queryset = queryset.annotate(scored=FilteredRelation("rewards", condition=Q(rewards__version=version)))
    fields = ["id", "prompt_id", "scored__reward"]
    if with_heads:
        # As text, parsed below in one json.loads: 100,000 separate decodes
        # (what the JSONField would do) cost more than everything else here.
        queryset = queryset.annotate(heads_json=Cast("scored__head_rewards", output_field=TextField()))
        fields.append("heads_json")
    rows = list(queryset.values_list(*fields))
    ids, prompt_ids = _columns(rows, 2)
    rewards = np.array([row[2] for row in rows], dtype=float)  # None -> NaN
    heads = _heads([row[3] for row in rows], rewards) if with_heads else None
    return _Responses(ids, prompt_ids, rewards, heads)


def _heads(texts: list[str | None], rewards: np.ndarray) -> np.ndarray | None:
    values = json.loads("[" + ",".join(text or "null" for text in texts) + "]")
    scored = np.flatnonzero(~np.isnan(rewards))
    lengths = {len(values[i]) if isinstance(values[i], list) else 0 for i in scored}
    if len(lengths) != 1 or (n_heads := lengths.pop()) < 2:
        return None  # a single head, or heads missing/uneven somewhere: no ensemble to read
    heads = np.full((len(values), n_heads), np.nan)
    heads[scored] = np.array([values[i] for i in scored], dtype=float)
    return heads


def _load_comparisons(*, project: Project) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rows = list(
        Comparison.objects.filter(project=project)
        .order_by("id")
        .values_list("id", "response_a_id", "response_b_id", "status")
    )
    ids, a, b = _columns(rows, 3)
    is_open = np.array([row[3] == Comparison.Status.OPEN for row in rows], dtype=bool)
    return ids, a, b, is_open


def _columns(rows: list[tuple], count: int) -> list[np.ndarray]:
    """The first `count` integer columns of rows, as int64 arrays."""
    return [np.fromiter(map(itemgetter(k), rows), dtype=np.int64, count=len(rows)) for k in range(count)]


def _candidates(responses: _Responses, comparisons) -> _Candidates:
    comparison_ids, pair_a, pair_b, is_open = comparisons
    ids = responses.ids
    n = len(ids)

    def index_of(response_ids):
        # Unknown ids (a comparison pointing outside the project) map to the NaN sentinel n.
        if n == 0:
            return np.full(len(response_ids), n, dtype=np.int64)
        at = np.minimum(np.searchsorted(ids, response_ids), n - 1)
        return np.where(ids[at] == response_ids, at, n)

    # Every unordered pair of responses to the same prompt, as indices (lower id first).
    by_prompt = np.lexsort((ids, responses.prompt_ids))
    starts = np.flatnonzero(np.r_[True, np.diff(responses.prompt_ids[by_prompt]) != 0])
    sizes = np.diff(np.r_[starts, n])
    all_a, all_b = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for size in np.unique(sizes[sizes >= 2]):
        i, j = np.triu_indices(size, 1)
        base = starts[sizes == size][:, None]
        all_a.append(by_prompt[(base + i).ravel()])
        all_b.append(by_prompt[(base + j).ravel()])
    all_a, all_b = np.concatenate(all_a), np.concatenate(all_b)

    # Drop the pairs that already have a comparison, in either order, any status.
    span = int(max(ids.max(initial=0), pair_a.max(initial=0), pair_b.max(initial=0))) + 1
    if span > 3_000_000_000:
        raise OverflowError("Response ids too large to pack a pair into one int64 key.")
    taken = np.minimum(pair_a, pair_b) * span + np.maximum(pair_a, pair_b)
    unlabelled = ~np.isin(ids[all_a] * span + ids[all_b], taken)
    new_a, new_b = all_a[unlabelled], all_b[unlabelled]

    return _Candidates(
        a=np.concatenate([index_of(pair_a[is_open]), new_a]),
        b=np.concatenate([index_of(pair_b[is_open]), new_b]),
        comparison_ids=np.concatenate([comparison_ids[is_open], np.full(len(new_a), -1, dtype=np.int64)]),
        is_new=np.r_[np.zeros(int(is_open.sum()), dtype=bool), np.ones(len(new_a), dtype=bool)],
    )


def _score(wanted: Strategy, responses: _Responses, candidates: _Candidates, rng) -> tuple[Strategy, np.ndarray]:
    rewards = np.append(responses.rewards, np.nan)  # index len(ids) = unknown response
    if wanted == Strategy.RANDOM or not np.isfinite(rewards).any():
        return Strategy.RANDOM, random_scores(len(candidates.a), rng)
    if wanted == Strategy.ENSEMBLE and responses.heads is not None:
        heads = np.vstack([responses.heads, np.full((1, responses.heads.shape[1]), np.nan)])
        return Strategy.ENSEMBLE, ensemble_scores(heads[candidates.a], heads[candidates.b])
    return Strategy.UNCERTAINTY, uncertainty_scores(rewards[candidates.a], rewards[candidates.b])


def _score_doptimal(
    responses: _Responses, candidates: _Candidates, comparisons, features: Features | None, *, batch: int, rng
) -> tuple[Strategy, np.ndarray]:
    rewards = np.append(responses.rewards, np.nan)
    if features is None or not np.isfinite(rewards).any():
        return Strategy.RANDOM, random_scores(len(candidates.a), rng)
    # The feature row of each response (NaN where the caller has none), plus the NaN sentinel row.
    dim = features.embeddings.shape[1]
    vectors = np.full((len(responses.ids) + 1, dim), np.nan)
    rows = np.searchsorted(features.response_ids, responses.ids)
    rows = np.minimum(rows, max(len(features.response_ids) - 1, 0))
    known = (features.response_ids[rows] == responses.ids) if len(features.response_ids) else rows < 0
    vectors[:-1][known] = np.asarray(features.embeddings, dtype=float)[rows[known]]

    # The judged pairs (complete or retired comparisons) are what M already knows.
    _, pair_a, pair_b, is_open = comparisons
    judged_a, judged_b = _index_of(responses.ids, pair_a[~is_open]), _index_of(responses.ids, pair_b[~is_open])
    information = fisher_information(
        vectors[judged_a] - vectors[judged_b],
        _sigmoid(rewards[judged_a] - rewards[judged_b]),
        prior_precision=features.prior_precision,
    )
    p = _sigmoid(rewards[candidates.a] - rewards[candidates.b])
    return Strategy.DOPTIMAL, doptimal_scores(
        vectors[candidates.a] - vectors[candidates.b], p, information, batch=batch
    )


def _index_of(ids: np.ndarray, response_ids: np.ndarray) -> np.ndarray:
    """Index of each response id in the sorted ids; len(ids) (the NaN sentinel row) where it is not there."""
    if not len(ids):
        return np.zeros(len(response_ids), dtype=np.int64)
    at = np.minimum(np.searchsorted(ids, response_ids), len(ids) - 1)
    return np.where(ids[at] == response_ids, at, len(ids))


def _new_comparisons(*, project, responses: _Responses, a, b, priorities, reasons, rng) -> list[Comparison]:
    # Which side is shown as "A" is a coin flip, so the lower id is not always A.
    swap = rng.random(len(a)) < 0.5
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    return [
        Comparison(
            project=project,
            prompt_id=prompt_id,
            response_a_id=response_a,
            response_b_id=response_b,
            priority=priority,
            selected_by=reason,
        )
        for prompt_id, response_a, response_b, priority, reason in zip(
            responses.prompt_ids[a].tolist(),
            responses.ids[a].tolist(),
            responses.ids[b].tolist(),
            priorities.tolist(),
            reasons.tolist(),
            strict=True,
        )
    ]


def _set_priorities(*, ids: list[int], priorities: list[float], selected_by: list[str]) -> None:
    for start in range(0, len(ids), _BATCH_SIZE):
        stop = start + _BATCH_SIZE
        with transaction.atomic(), connection.cursor() as cursor:
            _update_batch(cursor, ids[start:stop], priorities[start:stop], selected_by[start:stop])


def _update_batch(cursor, ids: list[int], priorities: list[float], selected_by: list[str]) -> None:
    table = connection.ops.quote_name(Comparison._meta.db_table)
    if connection.vendor == "postgresql":
        # Three array parameters, one statement: PostgreSQL joins them to the
        # table by primary key. (Django's bulk_update writes a CASE WHEN per row.)
        # They go as array literals built in one join each: Django binds
        # client-side, and psycopg quotes a Python list element by element in
        # Python, ~7x slower. str() of a float is its shortest exact repr; the
        # reasons are our own lowercase words, quoted anyway.
        cursor.execute(
            f"UPDATE {table} AS c SET priority = v.priority, selected_by = v.selected_by "
            "FROM unnest(%s::bigint[], %s::double precision[], %s::varchar[]) AS v(id, priority, selected_by) "
            "WHERE c.id = v.id",
            [
                "{" + ",".join(map(str, ids)) + "}",
                "{" + ",".join(map(str, priorities)) + "}",
                "{" + ",".join(f'"{reason}"' for reason in selected_by) + "}",
            ],
        )
    else:
        # SQLite: one prepared statement run per row inside the transaction;
        # each is a primary-key lookup, with no round trip to pay.
        cursor.executemany(
            f"UPDATE {table} SET priority = %s, selected_by = %s WHERE id = %s",
            list(zip(priorities, selected_by, ids, strict=True)),
        )
