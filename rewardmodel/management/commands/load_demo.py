from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from labeling import demo
from labeling.importing import ImportFileError
from rewardmodel.demo import load_demo

URL = "http://127.0.0.1:8000"
ROLES = {
    demo.ADMIN: f"administrator (every project), also at {URL}/admin/",
    demo.MANAGER: f"project manager of the demo (imports, exports, raters, retrain), also at {URL}/admin/",
    demo.RATER: "rater of the demo",
}


class Command(BaseCommand):
    help = (
        'Load the demo project "demo" (prompts, responses, comparisons, rater guidelines, a reward-model loop '
        "that retrains every 10 judgments) and the demo accounts admin, manager, alice and bob. Safe to run again: "
        "nothing is duplicated, and accounts keep passwords their users changed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-accounts", action="store_true", help="Load only the project and its data; create no accounts."
        )
        parser.add_argument(
            "--reset-passwords",
            action="store_true",
            help="Set the demo accounts' passwords back to the demo passwords, even if their users changed them.",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Create the demo accounts even when DJANGO_ENV=production. Their passwords are public.",
        )

    def handle(self, *args, no_accounts, reset_passwords, force, **options):
        try:
            result = load_demo(accounts=not no_accounts, reset_passwords=reset_passwords, allow_in_production=force)
        except demo.DemoRefused as refused:
            raise CommandError(
                f"{refused} Nothing was changed. Use --no-accounts to load only the demo project, "
                "or --force if you really want these accounts on this deployment."
            ) from None
        except ImportFileError as error:
            raise CommandError(f"The demo data file {demo.PROMPTS_PATH} is broken: {error}") from None
        self._report(result)
        if result.accounts and settings.PRODUCTION:
            self.stderr.write(
                self.style.WARNING("Demo accounts with public passwords now exist on a production deployment.")
            )

    def _report(self, result: demo.DemoResult):
        project, imported = result.project, result.imported
        verb = "Created" if result.project_created else "Updated"
        self.stdout.write(self.style.SUCCESS(f'{verb} the demo project "{project.name}" (slug "{project.slug}").'))
        if imported.prompts_created or imported.responses_created or imported.comparisons_created:
            self.stdout.write(
                f"Imported {imported.prompts_created} prompts, {imported.responses_created} responses and "
                f"{imported.comparisons_created} comparisons."
            )
        else:
            self.stdout.write("Its data was already loaded: nothing new to import.")
        if not result.accounts:
            return

        name_width = max(len(s.account.username) for s in result.accounts)
        logins, roles = [], []
        for status in result.accounts:
            account = status.account
            role = ROLES[account.role]
            if status.password_is_demo:
                password = account.password
            else:
                password = "(changed)"
                role += "; its user changed the password (--reset-passwords restores the demo one)"
            logins.append(f"{account.username.ljust(name_width)} / {password}")
            roles.append(role)
        login_width = max(len(login) for login in logins)
        lines = [f"    {login.ljust(login_width)}   {role}" for login, role in zip(logins, roles, strict=True)]
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "=" * 72,
                    f"  Open {URL} and sign in with one of the demo accounts:",
                    "",
                    *lines,
                    "",
                    "  These passwords are public: use them on your own machine only.",
                    "=" * 72,
                    "",
                ]
            )
        )
