import pytest

from tests.factories import ProjectFactory, UserFactory

PASSWORD = "correct horse battery staple"


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob")


@pytest.fixture
def carol(db):
    """A third rater, on no project until a test adds her."""
    return UserFactory(username="carol")


@pytest.fixture
def admin_user(db):
    return UserFactory(username="admin", is_staff=True, is_superuser=True)


@pytest.fixture
def project(db, alice, bob):
    project = ProjectFactory(slug="demo", name="Demo")
    project.raters.add(alice, bob)
    return project
