"""API tokens: their lifetime, issuing and revoking them (the endpoints
POST /api/auth/token/, GET /api/auth/tokens/ and DELETE
/api/auth/tokens/{prefix}/ are in views.py).

DRF's token model (rest_framework.authtoken) holds one token per user, so a
user's list of tokens has at most one entry: POST /api/auth/token/ returns
the token the user already has while it lasts, and a new one once it has
expired or was revoked. A token stops working API_TOKEN_TTL_HOURS after it
was issued, at once when its user changes password or is deactivated, and
when its user revokes it (DELETE /api/auth/tokens/{prefix}/). The list shows
an 8-character prefix, never the key: the key is shown once, when issued.

The keys are stored as DRF stores them, in plain text: anyone who can read
the token table can use them until they expire. Hashed keys need a token
model of our own (one migration); not done here.

Sign-in lockouts (config/security.py, django-axes) apply here too: the token
serializer authenticates with the request, and a locked-out client is
answered 429 with the reason.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

# Only what DRF can import while it reads its settings (this module holds an
# authentication class): no views, no serializers. The endpoints are in views.py.
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

PREFIX_LENGTH = 8
# DRF's keys: 40 hexadecimal characters.
_KEY_LENGTH = 40


def expires_at(token: Token) -> datetime:
    return token.created + timedelta(hours=settings.API_TOKEN_TTL_HOURS)


def is_expired(token: Token, *, now: datetime | None = None) -> bool:
    return expires_at(token) <= (now or timezone.now())


def issue_token(*, user) -> Token:
    """The user's token: the one they hold while it lasts, a new one once it has expired."""
    token, _ = Token.objects.get_or_create(user=user)
    if is_expired(token):
        Token.objects.filter(pk=token.pk).delete()
        token, _ = Token.objects.get_or_create(user=user)
    return token


def tokens_of(user):
    return Token.objects.filter(user_id=user.pk)


def revoke_token(*, user, prefix: str) -> bool:
    """Delete the user's token whose key starts with `prefix`; False when they have none."""
    if len(prefix) != PREFIX_LENGTH or not prefix.isalnum():
        return False
    deleted, _ = tokens_of(user).filter(key__startswith=prefix).delete()
    return bool(deleted)


def revoke_tokens(*, user) -> int:
    """Delete every token of the user. Returns how many there were."""
    deleted, _ = tokens_of(user).delete()
    return deleted


class ExpiringTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, plus the token's lifetime."""

    def authenticate_credentials(self, key):
        # Anything but a key's shape cannot match one; refusing it here also
        # keeps a NUL character (PostgreSQL refuses those) out of the query.
        if len(key) != _KEY_LENGTH or not key.isalnum():
            raise AuthenticationFailed("Invalid token.")
        user, token = super().authenticate_credentials(key)
        if is_expired(token):
            raise AuthenticationFailed(
                f"Token expired at {expires_at(token):%Y-%m-%d %H:%M} UTC. "
                "Ask for a new one with POST /api/auth/token/ (username and password)."
            )
        return user, token


class RevokeTokensOnPasswordChange:
    """Listed in AUTH_PASSWORD_VALIDATORS for its password_changed hook, which
    Django calls once a new password (set_password) has been saved: from the
    password change and reset pages, the admin, `manage.py changepassword`.
    It validates nothing."""

    def validate(self, password, user=None):
        return None

    def password_changed(self, password, user=None):
        if user is not None and user.pk is not None:
            revoke_tokens(user=user)

    def get_help_text(self):
        return "Changing your password revokes your API token."


@receiver(post_save, sender=get_user_model(), dispatch_uid="labeling.revoke_tokens_of_inactive_users")
def _revoke_tokens_of_inactive_users(sender, instance, created, raw=False, **kwargs):
    # Authentication refuses an inactive user's token anyway (DRF checks
    # is_active); deleting it means that reactivating the account does not
    # bring an old token back to life.
    if not created and not raw and not instance.is_active:
        revoke_tokens(user=instance)
