"""The demo campaign `make run` loads, so that a first start shows real work.

prompts.jsonl holds prompts written for this project (coding, math, writing,
advice, facts, safety; single- and multi-turn) with 2-4 responses each of
deliberately uneven quality, in the `responses` import format. guidelines.md is
the project's rater guidelines. load_demo() puts both into the project "demo"
and creates four accounts with known passwords: an admin (a superuser), a
project manager of the demo (staff, in the "Project managers" group), and two
raters (in the "Raters" group); see labeling.access for what each may do.
This is the human side only; the `load_demo` command (rewardmodel's) also sets
the demo's reward-model loop.

Running it again is safe: the importer matches rows by content hash, so nothing
is duplicated; the project's name, criteria, overlap and guidelines are set back
to the demo's; an existing account keeps its password (a user who changed it
keeps the change) unless reset_passwords is asked for.
"""

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.db import transaction

from labeling import roles
from labeling.importing import ImportResult, import_pairs
from labeling.models import Project

DEMO_DIR = Path(__file__).resolve().parent
PROMPTS_PATH = DEMO_DIR / "prompts.jsonl"
GUIDELINES_PATH = DEMO_DIR / "guidelines.md"

PROJECT_SLUG = "demo"
PROJECT_NAME = "Demo: assistant responses"
PROJECT_CRITERIA = ["helpfulness", "harmlessness", "honesty"]
PROJECT_OVERLAP = 2  # both demo raters judge every comparison: agreement is visible at once


ADMIN, MANAGER, RATER = "admin", "manager", "rater"


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str
    role: str  # ADMIN: staff and superuser; MANAGER: staff, manages the demo project; RATER: rates it

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


# Known on purpose: a first start needs logins nobody has to look up. They pass
# Django's password validators, and load_demo refuses to create them in
# production unless told to.
ACCOUNTS = (
    DemoAccount("admin", "admin-demo-pass", role=ADMIN),
    DemoAccount("manager", "manager-demo-pass", role=MANAGER),
    DemoAccount("alice", "alice-demo-pass", role=RATER),
    DemoAccount("bob", "bob-demo-pass", role=RATER),
)


@dataclass(frozen=True)
class AccountStatus:
    account: DemoAccount
    created: bool
    password_is_demo: bool  # False when its owner has changed it since the demo set it


@dataclass(frozen=True)
class DemoResult:
    project: Project
    project_created: bool
    imported: ImportResult
    accounts: list[AccountStatus]  # empty when accounts were not asked for


class DemoRefused(Exception):
    """Demo accounts with published passwords were asked for in production."""


def load_demo(*, accounts: bool = True, reset_passwords: bool = False, allow_in_production: bool = False) -> DemoResult:
    """Create or update the demo project, import its data, and (with accounts)
    create the admin, the manager and the two raters. All of it commits or none of it does."""
    if accounts and settings.PRODUCTION and not allow_in_production:
        raise DemoRefused(
            "This is a production deployment (DJANGO_ENV=production): the demo accounts have "
            "published passwords, so they are not created here."
        )
    with transaction.atomic():
        project, project_created = _save_project()
        with PROMPTS_PATH.open("rb") as lines:
            imported = import_pairs(project_slug=PROJECT_SLUG, lines=lines, format="responses")
        statuses = (
            [_save_account(a, project=project, reset_password=reset_passwords) for a in ACCOUNTS] if accounts else []
        )
    return DemoResult(project=project, project_created=project_created, imported=imported, accounts=statuses)


def _save_project() -> tuple[Project, bool]:
    project = Project.objects.select_for_update().filter(slug=PROJECT_SLUG).first()
    created = project is None
    if created:
        project = Project(slug=PROJECT_SLUG)
    project.name = PROJECT_NAME
    project.criteria = list(PROJECT_CRITERIA)
    project.overlap = PROJECT_OVERLAP
    project.guidelines = GUIDELINES_PATH.read_text(encoding="utf-8")
    project.full_clean()
    project.save()
    return project, created


def _save_account(account: DemoAccount, *, project: Project, reset_password: bool) -> AccountStatus:
    user, created = get_user_model().objects.get_or_create(username=account.username)
    if account.role in (ADMIN, MANAGER):
        # The printed login promises the admin site; an existing "admin" or
        # "manager" who lost the flags would make that promise false.
        user.is_staff = True
    if account.role == ADMIN:
        user.is_superuser = True
    if created or reset_password:
        validate_password(account.password, user)
        user.set_password(account.password)
        password_is_demo = True
    else:
        password_is_demo = user.check_password(account.password)
    user.save()
    if account.role == MANAGER:
        user.groups.add(Group.objects.get(name=roles.MANAGERS))
        project.managers.add(user)
    elif account.role == RATER:
        user.groups.add(Group.objects.get(name=roles.RATERS))
        project.raters.add(user)
    return AccountStatus(account=account, created=created, password_is_demo=password_is_demo)
