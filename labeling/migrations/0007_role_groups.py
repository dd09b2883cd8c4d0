"""The three roles as Django groups (labeling.roles says what each holds, labeling.access what it means).

Permissions are normally created after all migrations have run (post_migrate); create_permissions here
makes them exist already on a fresh database, so that the groups can hold them. The groups' contents come
from labeling.roles, which the post_migrate receiver also uses to top them up: one list, not two.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

from labeling.roles import ADMINS, MANAGERS, RATERS, sync_role_groups


def create_roles(apps, schema_editor):
    using = schema_editor.connection.alias
    for app_config in apps.get_app_configs():
        # Historical app configs have no models module, which create_permissions takes for "no models".
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps, using=using)
        app_config.models_module = None
    sync_role_groups(
        group_model=apps.get_model("auth", "Group"), permission_model=apps.get_model("auth", "Permission"), using=using
    )


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=[RATERS, MANAGERS, ADMINS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0006_roles_and_import_jobs"),
        # The reward-model loop's permissions go into the managers' group: its models must exist.
        ("rewardmodel", "0004_trigger_choices"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="project",
            options={
                "ordering": ["name"],
                "permissions": [("manage_every_project", "Can act on every project (admins)")],
            },
        ),
        migrations.RunPython(create_roles, remove_roles),
    ]
