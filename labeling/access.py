"""Who may see what. Every view and endpoint reaches projects, comparisons and
judgments only through these lookups, which check ownership and raise 404."""

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
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
