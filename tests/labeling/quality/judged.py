"""A small judged project for the quality pages, API and service tests, and users with the quality permissions."""

from django.contrib.auth.models import Permission

from tests.factories import ComparisonFactory, JudgmentFactory, UserFactory


def grant(user, *codenames: str):
    """user with the labeling permissions named (e.g. "view_rater_quality", "manage_raters")."""
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="labeling", codename__in=codenames))
    # Permissions are cached on the instance: a fresh one sees the new ones.
    return type(user).objects.get(pk=user.pk)


def manager(project, username="maria", *, staff=False):
    """One of project's managers who may see raters' quality and manage raters (not staff unless asked)."""
    user = UserFactory(username=username, is_staff=staff)
    project.raters.add(user)
    project.managers.add(user)  # labeling.access: a manager's permissions count on the projects they manage
    return grant(user, "view_rater_quality", "manage_raters")


def judged_project(project, alice, bob, carol, *, gold=10):
    """12 comparisons judged by alice, bob and carol, the first `gold` of them gold, with ten repeats by alice.

    alice answers the truth ("a" on even comparisons, "b" on odd ones), bob does too except on comparisons 0
    and 1, carol always picks the left response, which is always A for her (she is flagged for position
    bias). alice's repeats swap the sides and keep her answer. Responses come from "big" (A) and "small" (B).
    Returns the comparisons and the judgments as report records.
    """
    project.raters.add(carol)
    comparisons = []
    for i in range(12):
        truth = "a" if i % 2 == 0 else "b"
        comparisons.append(
            ComparisonFactory(
                prompt__project=project,
                response_a__source="big",
                response_b__source="small",
                **({"is_gold": True, "gold_label": truth} if i < gold else {}),
            )
        )
    records = []

    def judge(rater, comparison, outcome, *, left, time_ms, repeat_of=None, criteria=None):
        judgment = JudgmentFactory(
            comparison=comparison,
            rater=rater,
            outcome=outcome,
            left=left,
            time_spent_ms=time_ms,
            repeat_of=repeat_of,
            criteria=criteria or {},
        )
        records.append(
            {
                "id": judgment.pk,
                "rater": rater.username,
                "comparison": comparison.pk,
                "outcome": outcome,
                "left": left,
                "time_ms": time_ms,
                "criteria": criteria or {},
                "is_repeat_of": repeat_of.pk if repeat_of else None,
            }
        )
        return judgment

    firsts = {}
    for i, comparison in enumerate(comparisons):
        truth = "a" if i % 2 == 0 else "b"
        wrong = "b" if truth == "a" else "a"
        left = "a" if i % 3 else "b"
        firsts[i] = judge(alice, comparison, truth, left=left, time_ms=5000 + 100 * i, criteria={"helpfulness": truth})
        judge(bob, comparison, wrong if i < 2 else truth, left=left, time_ms=2000 + 500 * i)
        judge(carol, comparison, "a", left="a", time_ms=900, criteria={"helpfulness": "tie"})
    for i in range(10):
        first = firsts[i]
        swapped = "b" if first.left == "a" else "a"
        judge(alice, comparisons[i], first.outcome, left=swapped, time_ms=4000, repeat_of=first)
    return comparisons, records
