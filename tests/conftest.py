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


@pytest.fixture
def throttle_clock(monkeypatch):
    """The API throttles' clock (labeling.api.throttling), stopped in the middle of a window: a test that
    counts requests up to a limit cannot straddle two windows. Move it with clock.now = ..."""
    from labeling.api.throttling import FixedWindowThrottle

    class Clock:
        now = 1_000_000 * 3600 + 1800.0  # half past the hour: mid-window for per-minute and per-hour rates

    monkeypatch.setattr(FixedWindowThrottle, "timer", staticmethod(lambda: Clock.now))
    return Clock
