"""Who may see what. Every view and endpoint reaches projects, comparisons and
judgments only through these lookups, which check ownership and raise 404."""

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404

from labeling.models import Comparison, Judgment, Project


def projects_for(user) -> QuerySet[Project]:
    """Active projects this user may label: staff every one, raters their own."""
    if not user.is_authenticated:
        return Project.objects.none()
    projects = Project.objects.filter(is_active=True)
    if not user.is_staff:
        projects = projects.filter(raters=user)
    return projects.order_by("name")


def get_project_for_user(user, *, project_id=None, slug=None) -> Project:
    lookup = {"pk": project_id} if project_id is not None else {"slug": slug}
    try:
        return projects_for(user).get(**lookup)
    except (Project.DoesNotExist, ValueError):
        raise Http404("No such project.") from None


def may_see_project(user, project: Project) -> bool:
    """Whether user may see project at all (the rule of projects_for)."""
    return projects_for(user).filter(pk=project.pk).exists()


def can_view_quality(user, project: Project) -> bool:
    """Raters' quality figures and the source leaderboard of project: the
    labeling.view_rater_quality permission (superusers hold every one) on a
    project user may see. Staff status alone grants nothing here."""
    return user.is_authenticated and user.has_perm("labeling.view_rater_quality") and may_see_project(user, project)


def can_manage_raters(user, project: Project) -> bool:
    """Pausing and excluding raters of project: labeling.manage_raters on a
    project user may see."""
    return user.is_authenticated and user.has_perm("labeling.manage_raters") and may_see_project(user, project)


def get_rater_of_project(*, project: Project, username: str):
    """The user called username who rates project (a member, or someone who
    judged in it); 404 for anyone else. The caller checks its own right to
    act first (can_manage_raters), so that a 404 reveals nothing to others."""
    member = Project.raters.through.objects.filter(project_id=project.pk, user_id=OuterRef("pk"))
    judged = Judgment.objects.filter(project_id=project.pk, rater_id=OuterRef("pk"))
    rater = (
        get_user_model()
        .objects.filter(**{get_user_model().USERNAME_FIELD: username})
        .filter(Q(Exists(member)) | Q(Exists(judged)))
        .first()
    )
    if rater is None:
        raise Http404("No such rater in this project.")
    return rater


def judgments_for(user) -> QuerySet[Judgment]:
    """A rater's own judgments, never anyone else's (staff included: the API
    is a rater's view; admins read everyone's in the admin and exports)."""
    return Judgment.objects.filter(rater=user)


def get_comparison_to_manage(user, *, comparison_id) -> Comparison:
    """A comparison whose gold answer user may set: any, with the
    labeling.change_comparison permission. Without it, 403 (PermissionDenied)
    for a comparison of a project user may label (it is no secret there that
    it exists), 404 for any other."""
    if user.has_perm("labeling.change_comparison"):
        comparison = Comparison.objects.filter(pk=comparison_id).first()
        if comparison is None:
            raise Http404("No such comparison.")
        return comparison
    if Comparison.objects.filter(pk=comparison_id, project__in=projects_for(user)).exists():
        raise PermissionDenied("Only those who may change comparisons can set gold answers.")
    raise Http404("No such comparison.")
