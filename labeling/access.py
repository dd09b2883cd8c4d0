"""Who may do what, and on which project: the one place every view, API view, admin page and action asks.

Three roles, each a Django group (labeling/roles.py keeps them in the database):

- Raters label the projects they are raters of (Project.raters). That membership is their right: the hot
  path (next, submit) checks it inside the query it runs anyway, with no permission lookup.
- Project managers hold the permissions of their group (imports, exports, the project's raters, gold
  answers, quality figures, pausing and excluding raters, retrain, activate), and each counts only on the
  projects whose managers they are (Project.managers): membership AND permission.
- Admins hold every permission, labeling.manage_every_project included, which makes each count on every
  project; they may also label every active project. Superusers are admins.

Staff status grants nothing here: it only lets a user into the Django admin, whose pages ask the same
questions. Objects reach a user only through lookups that check access and raise 404; who may see a
project but not do something on it gets 403 (PermissionDenied).

rewardmodel asks with its own permission names (may(user, "rewardmodel.change_projectloop", project)):
this module names none of them, as labeling never depends on rewardmodel.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q, QuerySet, Value
from django.http import Http404

from labeling.compiled import CompiledQuery
from labeling.models import Comparison, Judgment, Project

EVERY_PROJECT = "labeling.manage_every_project"
# The managers' permissions that labeling's own views and pages ask for.
IMPORT = "labeling.add_comparison"
EXPORT = "labeling.view_judgment"  # a raw export carries every rationale: for those who may read judgments
CHANGE_PROJECT = "labeling.change_project"  # its settings and its raters
SET_GOLD = "labeling.change_comparison"
VIEW_QUALITY = "labeling.view_rater_quality"
MANAGE_RATERS = "labeling.manage_raters"


# -- roles ----------------------------------------------------------------------------------------------


def is_admin(user) -> bool:
    """Superusers, and holders of labeling.manage_every_project (the Admins group). has_perm is False for
    anonymous and inactive users, and caches the user's permissions on the instance (two queries, once)."""
    return user.is_authenticated and user.has_perm(EVERY_PROJECT)


def manages(user, project: Project) -> bool:
    """Whether user is one of project's managers (cached on the user, as Django caches permissions)."""
    if not user.is_authenticated:
        return False
    ids = getattr(user, "_managed_project_ids", None)
    if ids is None:
        ids = frozenset(Project.managers.through.objects.filter(user_id=user.pk).values_list("project_id", flat=True))
        user._managed_project_ids = ids
    return project.pk in ids


def may(user, permission: str, project: Project) -> bool:
    """May user do what permission names ("app.codename") on project: they hold it, and manage project
    (or are an admin)."""
    return user.is_authenticated and user.has_perm(permission) and (is_admin(user) or manages(user, project))


def require(user, permission: str, project: Project, *, message: str) -> None:
    """PermissionDenied (403) with message unless may(user, permission, project). The caller has looked
    the project up through get_project_for_user first, so that those who may not see it get 404."""
    if not may(user, permission, project):
        raise PermissionDenied(message)


# -- projects -------------------------------------------------------------------------------------------


def _member(through, user_id: int) -> Exists:
    return Exists(through.objects.filter(project_id=OuterRef("pk"), user_id=user_id))


def _every_project(*, user_id: int, superuser: bool):
    """The admin test as a condition of the same query (no extra round trip): superuser, or
    labeling.manage_every_project held directly or through a group, as Django's ModelBackend reads it."""
    if superuser:
        return Value(True)
    app_label, codename = EVERY_PROJECT.split(".")
    held = Permission.objects.filter(content_type__app_label=app_label, codename=codename).filter(
        Q(user=user_id) | Q(group__user=user_id)
    )
    return Exists(held)


def projects_for(user) -> QuerySet[Project]:
    """Active projects this user may label: raters their own, admins every one. Staff status counts for
    nothing; a manager labels only the projects they are also a rater of."""
    if not user.is_authenticated or not user.is_active:
        return Project.objects.none()
    return labelable_projects(user_id=user.pk, superuser=user.is_superuser)


def labelable_projects(*, user_id: int, superuser: bool) -> QuerySet[Project]:
    """projects_for of an active user with this id (superuser or not: the two shapes of the query)."""
    may_label = Q(_member(Project.raters.through, user_id)) | Q(_every_project(user_id=user_id, superuser=superuser))
    return Project.objects.filter(is_active=True).filter(may_label).order_by("name")


# get_project_to_label by id, built and compiled once per thread and shape (labeling.compiled): on every
# request of a rater's loop.
_PROJECT_TO_LABEL = CompiledQuery(
    lambda *, user_id, project_id, superuser: labelable_projects(user_id=user_id, superuser=superuser).filter(
        pk=project_id
    )[:1],
    ints=("user_id", "project_id"),
    shapes=("superuser",),
)


def visible_projects(user) -> QuerySet[Project]:
    """Active projects this user may see at all: those they rate or manage, and every one for admins."""
    if not user.is_authenticated or not user.is_active:
        return Project.objects.none()
    sees = (
        Q(_member(Project.raters.through, user.pk))
        | Q(_member(Project.managers.through, user.pk))
        | Q(_every_project(user_id=user.pk, superuser=user.is_superuser))
    )
    return Project.objects.filter(is_active=True).filter(sees).order_by("name")


def managed_projects(user) -> QuerySet[Project]:
    """Every project (active or not) user manages: all of them for admins. What they may do there is
    their permissions' business (projects_where)."""
    if not user.is_authenticated:
        return Project.objects.none()
    if is_admin(user):
        return Project.objects.all()
    return Project.objects.filter(managers=user.pk)


def projects_where(user, permission: str) -> QuerySet[Project]:
    """Every project (active or not) on which may(user, permission, project): the Django admin's scope."""
    if not user.is_authenticated or not user.has_perm(permission):
        return Project.objects.none()
    return managed_projects(user)


def import_refusal(user, *, project_slug: str) -> str | None:
    """Why user may not import into the project called project_slug, or None when they may: an existing
    project needs labeling.add_comparison on it (its managers, admins); a new one labeling.add_project
    too (admins). The same words whether the project exists or not, for those who do not manage it."""
    if not user.is_authenticated or not user.has_perm(IMPORT):
        return "You may not import comparisons."
    if projects_where(user, IMPORT).filter(slug=project_slug).exists():
        return None
    if user.has_perm("labeling.add_project") and not Project.objects.filter(slug=project_slug).exists():
        return None
    return f'You may not import into "{project_slug}": import into a project you manage.'


def _get(projects: QuerySet[Project], project_id, slug) -> Project:
    lookup = {"pk": project_id} if project_id is not None else {"slug": slug}
    try:
        return projects.get(**lookup)
    except (Project.DoesNotExist, ValueError):
        raise Http404("No such project.") from None


def get_project_to_label(user, *, project_id=None, slug=None) -> Project:
    """A project user may label (projects_for); 404 for any other, managers' own included: labeling is a
    rater's act, and a manager who wants to label adds themselves as a rater."""
    if type(project_id) is int and slug is None and user.is_authenticated and user.is_active:
        project = _PROJECT_TO_LABEL.first(user_id=user.pk, project_id=project_id, superuser=user.is_superuser)
        if project is None:
            raise Http404("No such project.")
        return project
    return _get(projects_for(user), project_id, slug)


def get_project_for_user(user, *, project_id=None, slug=None) -> Project:
    """A project user may see (visible_projects); 404 for any other. What they may do there is asked next
    (may, require, can_view_quality, ...)."""
    return _get(visible_projects(user), project_id, slug)


def may_see_project(user, project: Project) -> bool:
    """Whether user may see project at all (the rule of visible_projects)."""
    return visible_projects(user).filter(pk=project.pk).exists()


# -- what labeling's views ask -------------------------------------------------------------------------


def can_view_quality(user, project: Project) -> bool:
    """Raters' quality figures and the source leaderboard of project (labeling.view_rater_quality)."""
    return may(user, VIEW_QUALITY, project)


def can_manage_raters(user, project: Project) -> bool:
    """Pausing and excluding raters of project (labeling.manage_raters)."""
    return may(user, MANAGE_RATERS, project)


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
    """A rater's own judgments, never anyone else's (admins included: the API
    is a rater's view; managers read everyone's in the admin and exports)."""
    return Judgment.objects.filter(rater=user)


def get_comparison_to_manage(user, *, comparison_id) -> Comparison:
    """A comparison whose gold answer user may set: labeling.change_comparison on its project. 403
    (PermissionDenied) for a comparison of a project user may see without that right (it is no secret
    there that it exists), 404 for any other."""
    comparison = Comparison.objects.filter(pk=comparison_id).select_related("project").first()
    if comparison is not None:
        if may(user, SET_GOLD, comparison.project):
            return comparison
        if may_see_project(user, comparison.project):
            raise PermissionDenied("Only the project's managers can set gold answers.")
    raise Http404("No such comparison.")
