import json
from collections import Counter
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.management import CommandError, call_command
from django.db.models import Count

from labeling import demo
from labeling.models import Comparison, Project, Prompt, Response

User = get_user_model()


def load_demo(*args) -> str:
    out = StringIO()
    call_command("load_demo", *args, stdout=out)
    return out.getvalue()


def data_lines() -> list[dict]:
    text = demo.PROMPTS_PATH.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def table_counts() -> dict[str, int]:
    return {
        "projects": Project.objects.count(),
        "prompts": Prompt.objects.count(),
        "responses": Response.objects.count(),
        "comparisons": Comparison.objects.count(),
        "users": User.objects.count(),
        "raters": Project.raters.through.objects.count(),
    }


# --- The data file, read as the importer's `responses` format. ---


def test_every_data_line_is_a_responses_record_with_two_to_four_distinct_responses():
    lines = data_lines()
    assert len(lines) >= 45
    for number, record in enumerate(lines, start=1):
        assert set(record) == {"prompt", "responses", "metadata"}, number
        assert isinstance(record["metadata"].get("topic"), str), number
        responses = record["responses"]
        assert 2 <= len(responses) <= 4, number
        for response in responses:
            assert set(response) == {"text", "model"}, number
            assert response["text"].strip() and response["model"].strip(), number
        assert len({r["text"] for r in responses}) == len(responses), f"line {number} repeats a response"


def test_every_multi_turn_conversation_alternates_and_ends_with_a_user_turn():
    conversations = [r["prompt"] for r in data_lines() if isinstance(r["prompt"], list)]
    assert len(conversations) >= 10
    for turns in conversations:
        roles = [turn["role"] for turn in turns]
        assert roles[0] == "user" and roles[-1] == "user", roles
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False)), roles
        assert 2 <= len(turns) - 1 <= 4, "2-4 turns before the final user turn"
        assert all(turn["content"].strip() for turn in turns)


def test_the_data_covers_code_tables_and_html_looking_text():
    texts = [r["text"] for record in data_lines() for r in record["responses"]]
    everything = "\n".join(texts)
    for fence in ("```python", "```sql", "```js", "```bash", "```html"):
        assert fence in everything, fence
    assert any("|---" in t or "|----" in t for t in texts), "a markdown table"
    assert any("<script>" in t for t in texts), "text a renderer must escape"
    sources = Counter(r["model"] for record in data_lines() for r in record["responses"])
    assert {"model-a-7b", "model-b-13b", "model-c-70b", "human"} <= set(sources)


def test_the_demo_passwords_pass_the_password_validators():
    for account in demo.ACCOUNTS:
        validate_password(account.password, User(username=account.username))


# --- load_demo ---


@pytest.mark.django_db
def test_it_creates_the_demo_project_with_its_criteria_overlap_and_guidelines():
    load_demo()

    project = Project.objects.get(slug="demo")
    assert project.name == "Demo: assistant responses"
    assert project.criteria == ["helpfulness", "harmlessness", "honesty"]
    assert project.overlap == 2
    assert project.guidelines == demo.GUIDELINES_PATH.read_text(encoding="utf-8")
    assert project.is_active


@pytest.mark.django_db
def test_it_imports_at_least_40_prompts_each_with_2_to_4_responses_and_its_comparisons():
    load_demo()

    prompts = Prompt.objects.filter(project__slug="demo").annotate(
        n_responses=Count("responses", distinct=True), n_comparisons=Count("comparisons", distinct=True)
    )
    assert prompts.count() == len(data_lines()) >= 40
    for prompt in prompts:
        assert 2 <= prompt.n_responses <= 4
        # Every pair of a prompt's responses is compared (4 responses: 6 pairs).
        assert prompt.n_comparisons == prompt.n_responses * (prompt.n_responses - 1) // 2
    assert not Comparison.objects.exclude(status=Comparison.Status.OPEN).exists()
    multi_turn = [p for p in prompts if len(p.conversation) > 1]
    assert len(multi_turn) >= 10
    assert all(p.conversation[-1]["role"] == "user" for p in multi_turn)
    assert Response.objects.filter(prompt__project__slug="demo", source="human").exists()


@pytest.mark.django_db
def test_it_creates_an_admin_a_manager_and_two_raters_who_can_log_in(client):
    load_demo()

    for username in ("admin", "manager", "alice", "bob"):
        assert client.login(username=username, password=f"{username}-demo-pass"), username
        client.logout()
    admin = User.objects.get(username="admin")
    assert admin.is_staff and admin.is_superuser
    manager = User.objects.get(username="manager")
    assert manager.is_staff and not manager.is_superuser
    assert list(manager.groups.values_list("name", flat=True)) == ["Project managers"]
    assert manager.has_perm("rewardmodel.change_projectloop") and not manager.has_perm("labeling.add_project")
    assert not User.objects.filter(username__in=["alice", "bob"], is_staff=True).exists()
    assert User.objects.filter(username__in=["alice", "bob"], groups__name="Raters").count() == 2
    project = Project.objects.get(slug="demo")
    assert sorted(project.raters.values_list("username", flat=True)) == ["alice", "bob"]
    assert list(project.managers.values_list("username", flat=True)) == ["manager"]


@pytest.mark.django_db
def test_it_prints_the_url_and_the_four_logins_with_their_roles():
    out = load_demo()

    assert "http://127.0.0.1:8000" in out
    for login, role in [
        ("admin   / admin-demo-pass", "administrator"),
        ("manager / manager-demo-pass", "project manager of the demo"),
        ("alice   / alice-demo-pass", "rater of the demo"),
        ("bob     / bob-demo-pass", "rater of the demo"),
    ]:
        assert next(line for line in out.splitlines() if login in line).split(login)[1].strip().startswith(role)
    assert "Imported" in out


@pytest.mark.django_db
def test_it_changes_no_counts_when_run_twice():
    load_demo()
    before = table_counts()

    out = load_demo()

    assert table_counts() == before
    assert "nothing new to import" in out


@pytest.mark.django_db
def test_it_sets_the_demo_project_back_to_its_settings_on_a_rerun():
    load_demo()
    Project.objects.filter(slug="demo").update(overlap=5, criteria=["style"], guidelines="", name="Renamed")

    load_demo()

    project = Project.objects.get(slug="demo")
    assert (project.name, project.overlap, project.criteria) == (demo.PROJECT_NAME, 2, demo.PROJECT_CRITERIA)
    assert project.guidelines.startswith("# Rater guidelines")


@pytest.mark.django_db
def test_it_keeps_a_password_its_user_changed_unless_asked_to_reset_it(client):
    load_demo()
    alice = User.objects.get(username="alice")
    alice.set_password("alice's own passphrase 42")
    alice.save()

    out = load_demo()

    assert client.login(username="alice", password="alice's own passphrase 42")
    assert not client.login(username="alice", password="alice-demo-pass")
    assert "alice   / alice-demo-pass" not in out
    assert "--reset-passwords" in out

    out = load_demo("--reset-passwords")

    assert client.login(username="alice", password="alice-demo-pass")
    assert "alice   / alice-demo-pass" in out


@pytest.mark.django_db
def test_it_restores_an_existing_admins_staff_flags():
    User.objects.create_user(username="admin", password="whatever-it-was-7")

    load_demo()

    admin = User.objects.get(username="admin")
    assert admin.is_staff and admin.is_superuser
    assert admin.check_password("whatever-it-was-7"), "an existing account keeps its password"


@pytest.mark.django_db
def test_it_refuses_to_create_the_accounts_in_production_and_changes_nothing(settings):
    settings.PRODUCTION = True

    with pytest.raises(CommandError, match="production"):
        load_demo()

    assert table_counts() == {k: 0 for k in table_counts()}


@pytest.mark.django_db
def test_it_loads_only_the_project_in_production_with_no_accounts(settings):
    settings.PRODUCTION = True

    out = load_demo("--no-accounts")

    assert Prompt.objects.filter(project__slug="demo").count() == len(data_lines())
    assert not User.objects.exists()
    assert "demo-pass" not in out


@pytest.mark.django_db
def test_it_creates_the_accounts_in_production_with_force(settings, client):
    settings.PRODUCTION = True

    err = StringIO()
    call_command("load_demo", "--force", stdout=StringIO(), stderr=err)

    assert client.login(username="alice", password="alice-demo-pass")
    assert "production" in err.getvalue()


@pytest.mark.django_db
def test_it_rolls_everything_back_and_names_the_line_when_the_data_file_is_broken(tmp_path, monkeypatch):
    broken = tmp_path / "prompts.jsonl"
    good = demo.PROMPTS_PATH.read_text(encoding="utf-8").splitlines()[0]
    broken.write_text(good + '\n{"prompt": "Only one answer?", "responses": [{"text": "Yes.", "model": "m"}]}\n')
    monkeypatch.setattr(demo, "PROMPTS_PATH", broken)

    with pytest.raises(CommandError, match="line 2: a responses line needs at least 2 distinct responses"):
        load_demo()

    assert table_counts() == {k: 0 for k in table_counts()}
