"""Settings, all from the environment (see README, "Configuration").

Local runs need nothing set: SQLite under var/, a secret key generated once
and kept in var/secret_key. Production (DJANGO_ENV=production) requires
SECRET_KEY and ALLOWED_HOSTS and turns on the secure-cookie/HSTS settings that
`manage.py check --deploy --fail-level WARNING` asks for.

One file of ~400 lines on purpose: Django reads its settings from one module,
and keeping every setting here (each with the why) is what makes them findable.
"""

import json
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

from config.broker import filesystem_transport_options

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true or false)")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


PRODUCTION = env_str("DJANGO_ENV", "local") == "production"
DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when DJANGO_ENV=production")
    # Local runs: generate once and keep it, so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()

if PRODUCTION and not os.environ.get("ALLOWED_HOSTS"):
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DJANGO_ENV=production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "csp",
    "django_celery_beat",
    "axes",
    "labeling",
    "rewardmodel",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Refuses JSON bodies too deep or too big before any view parses them.
    "config.middleware.BoundedJSONMiddleware",
    # An id no database column can hold: 404 (SQLite raises on binding it).
    "config.middleware.IdOverflowMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as axes asks: turns a lockout seen during the request into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: DATABASE_URL (postgres://user@host:port/name) or SQLite under var/.
_default_sqlite = f"sqlite:///{VAR_DIR / 'labeling.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(env_str("DATABASE_URL", _default_sqlite))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Each process keeps a pool of DB_POOL_SIZE connections (psycopg_pool),
    # reused across requests: no connection set-up per request, and never more
    # than processes x DB_POOL_SIZE connections, whatever the number of raters
    # (make serve: WEB_CONCURRENCY x this). One per request thread, plus one
    # for the process's publisher thread (rewardmodel.tasks), which checks the
    # retrain triggers between requests. A request that finds none free waits
    # DB_POOL_TIMEOUT seconds, then fails.
    # The pool owns the connections, so CONN_MAX_AGE must stay 0.
    # Several machines against one PostgreSQL: PgBouncer in front (README).
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # With a pool, Django turns this into psycopg_pool's check on hand-out: a
    # connection that died with its server (a PostgreSQL restart) is replaced
    # instead of failing a request.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    _pool_size = env_int("DB_POOL_SIZE", env_int("WEB_THREADS", 1) + 1)
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": _pool_size,
        "max_size": _pool_size,
        "timeout": env_int("DB_POOL_TIMEOUT", 10),
    }
    # Prepared statements. Parameters bound by the server, not pasted into the
    # SQL text, make the same query the same statement each time; psycopg
    # prepares it on its DB_PREPARE_THRESHOLD-th run on a connection, and
    # PostgreSQL stops planning it again. The hot path's joins took 4 ms to
    # plan and 0.3 ms to run (EXPLAIN ANALYZE; README "The hot path"). Django
    # leaves both off for the sake of poolers: PgBouncer keeps prepared
    # statements in transaction mode from 1.21 on (max_prepared_statements);
    # behind an older one, set DB_PREPARE_THRESHOLD=0 (off).
    _prepare_threshold = env_int("DB_PREPARE_THRESHOLD", 5)
    DATABASES["default"]["OPTIONS"]["server_side_binding"] = _prepare_threshold > 0
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = _prepare_threshold or None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite ignores SELECT ... FOR UPDATE. IMMEDIATE transactions take the
    # write lock at BEGIN, so two raters' assignment transactions serialise
    # instead of both reading the same free slot. WAL lets readers go on.
    # Connections persist (one per gunicorn worker): opening one and running
    # the PRAGMAs below cost every request otherwise. The busy timeout bounds
    # a wait for the write lock (held for one short transaction at a time).
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("SQLITE_CONN_MAX_AGE", 600)
    # Django's backend, with write transactions queued on a file lock (config/sqlite/base.py).
    DATABASES["default"]["ENGINE"] = "config.sqlite"
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    VAR_DIR.mkdir(parents=True, exist_ok=True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # Validates nothing: Django calls its password_changed() once a new password
    # is saved, and it revokes the user's API tokens (labeling/api/tokens.py).
    {"NAME": "labeling.api.tokens.RevokeTokensOnPasswordChange"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "labeling:projects"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# Local runs serve static files straight from the app folders (no collectstatic).
WHITENOISE_USE_FINDERS = not PRODUCTION
# Re-read files on change while developing (DEBUG=true); otherwise the file
# list is built once at start-up, as in production (a scan per request costs).
WHITENOISE_AUTOREFRESH = DEBUG and not PRODUCTION

# Uploaded import files can be large (100k pairs is ~100 MB of JSONL).
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# The admin's import page refuses a larger upload with 413 from its Content-Length, before reading it.
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_MB", 200) * 1024 * 1024
# JSON bodies nested deeper than this are refused with 400 (config/middleware.py):
# Python's json recurses once per level, and "[" * 50_000 would be a 500.
JSON_MAX_DEPTH = 32

REST_FRAMEWORK = {
    # Token first: an unauthenticated request then gets 401 with
    # WWW-Authenticate (what a script needs), not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "labeling.api.tokens.ExpiringTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # DRF's own default is AllowAny; every endpoint here needs a login.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    # DRF's per-user rate, counted in fixed windows (one cache increment a request; see the module).
    "DEFAULT_THROTTLE_CLASSES": ["labeling.api.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"user": env_str("API_USER_RATE", "6000/hour")},
    # Throttling keys on the client address; trust X-Forwarded-For only this deep.
    # Login lockouts use the same rule (config.security.client_address).
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
}
# API tokens (labeling/api/tokens.py) stop working this long after they were
# issued; a password change or deactivation revokes them at once.
API_TOKEN_TTL_HOURS = env_int("API_TOKEN_TTL_HOURS", 24 * 30)
SPECTACULAR_SETTINGS = {
    "TITLE": "Preference labeling API",
    "DESCRIPTION": "Pairwise comparison tasks for human raters, and the judgments they make.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # One name for a set of choices that several fields share (a version's trigger, a pending retrain's reason).
    "ENUM_NAME_OVERRIDES": {"TriggerEnum": "rewardmodel.models.Trigger"},
}

# Content Security Policy: model output is untrusted text. Even if something
# slipped past the sanitiser, no inline or foreign script runs and no image
# loads from another host (tracking beacons).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}

# --- Login protection (django-axes) ------------------------------------------
# Failed sign-ins are counted per (username, client address) pair on the sign-in
# page, the admin's and POST /api/auth/token/; after LOGIN_FAILURE_LIMIT of them
# that pair is refused (429) until LOGIN_COOLOFF_MINUTES pass without another
# failure. A name that does not exist is counted and refused the same way.
# The pair, rather than the username alone, so that a stranger cannot lock a
# rater out of their own account; the token endpoint's per-address throttle
# bounds one address trying many names.
# The database handler: counts survive restarts, every process and machine
# shares them without a cache, and admins see and clear them in the admin
# (Axes: Access attempts); a failure costs one row write, and stops when locked.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
if AXES_FAILURE_LIMIT < 1 or AXES_COOLOFF_TIME <= timedelta(0):
    # axes reads a zero cool-off as "locked until an admin unlocks it".
    raise ImproperlyConfigured("LOGIN_FAILURE_LIMIT and LOGIN_COOLOFF_MINUTES must be at least 1")
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # a rater who mistyped twice and then signed in starts again from zero
AXES_HTTP_RESPONSE_CODE = 429
AXES_CLIENT_IP_CALLABLE = "config.security.client_address"  # NUM_PROXIES decides, as for throttles
AXES_LOCKOUT_CALLABLE = "config.security.lockout_response"
AUTHENTICATION_BACKENDS = [
    "config.security.LoginLockoutBackend",  # axes' check first: a locked-out pair is never authenticated
    "django.contrib.auth.backends.ModelBackend",
]


def _caches(redis_url: str, var_dir: Path) -> dict:
    """The cache that DRF's throttles count in, shared by every web process:
    Redis when REDIS_URL is set; otherwise files under var/cache, shared by
    the processes of the one machine that the embedded default runs on.
    Never per-process memory, which multiplies every rate by the number of
    processes and forgets it on restart."""
    if redis_url:
        return {
            "default": {
                "BACKEND": "config.cache.FailOpenRedisCache",
                "LOCATION": redis_url,
                "KEY_PREFIX": "labeling",
                # A Redis that does not answer must not hold a request up.
                "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25},
            }
        }
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(var_dir / "cache"),
        }
    }


CACHES = _caches(env_str("REDIS_URL"), VAR_DIR)

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the label page's script reads it for fetch()
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# How many comparisons of one prompt the `responses` import format creates at
# most (every pair of n responses is n*(n-1)/2).
LABELING_MAX_PAIRS_PER_PROMPT = env_int("LABELING_MAX_PAIRS_PER_PROMPT", 6)

# --- Reward model and the Celery loop ---------------------------------------
MODEL_ROOT = Path(env_str("MODEL_ROOT", str(VAR_DIR / "models")))

# Broker: Redis when REDIS_URL (or CELERY_BROKER_URL) is set; otherwise kombu's
# filesystem transport under var/broker, which needs no server, so `make run`
# runs web, worker and beat on a bare machine. The database stays the truth:
# a retrain lost by either broker is found again by the periodic reconcile.
REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
# The longest training we expect. Redis redelivers a task that is not yet
# acknowledged (tasks ack late, after they finish) once its visibility timeout
# has passed, so the timeout must be longer than this, or a long training is
# delivered twice.
REWARD_MODEL_MAX_TRAINING_SECONDS = env_int("REWARD_MODEL_MAX_TRAINING_SECONDS", 4 * 3600)
# Redis transport options. A rater's request must never hang on a broker that
# is down: one connection attempt (max_retries 0), short socket timeouts.
REDIS_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": REWARD_MODEL_MAX_TRAINING_SECONDS + 3600,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "max_retries": 0,
}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_transport_options(VAR_DIR / "broker")
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = REDIS_BROKER_TRANSPORT_OPTIONS
CELERY_TASK_IGNORE_RESULT = True  # status lives on RewardModelVersion rows
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "rewardmodel.tasks.retrain": {"queue": "gpu"},
    "rewardmodel.tasks.refresh": {"queue": "gpu"},
    # A linear fit on cached embeddings and a re-rank: seconds on a CPU, never behind a training.
    "rewardmodel.tasks.refit_heads": {"queue": "default"},
    # Rater quality: row reads and numpy work, no model.
    "labeling.tasks.compute_quality": {"queue": "default"},
    "labeling.tasks.compute_quality_for_active_projects": {"queue": "default"},
    "labeling.tasks.run_import": {"queue": "default"},  # admin uploads (labeling/importing/jobs.py)
}
CELERY_TASK_SOFT_TIME_LIMIT = REWARD_MODEL_MAX_TRAINING_SECONDS
CELERY_TASK_TIME_LIMIT = REWARD_MODEL_MAX_TRAINING_SECONDS + 600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY = False  # publishing fails fast; reconcile catches up
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Run tasks in the process that publishes them instead of a worker
# (CELERY_TASK_ALWAYS_EAGER=true): debugging the loop without a worker.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Reward-model training defaults (rewardmodel.core.config.TrainConfig fields):
# a backbone path or hub id ("" = the bundled all-MiniLM-L6-v2) and overrides
# as JSON, e.g. REWARD_MODEL_TRAINING='{"epochs": 2, "max_length": 384}'.
REWARD_MODEL_BACKBONE = env_str("REWARD_MODEL_BACKBONE")
try:
    REWARD_MODEL_TRAINING = json.loads(env_str("REWARD_MODEL_TRAINING", "{}"))
except ValueError:
    REWARD_MODEL_TRAINING = None
if not isinstance(REWARD_MODEL_TRAINING, dict):
    raise ImproperlyConfigured("REWARD_MODEL_TRAINING must be a JSON object of TrainConfig fields")
# A training worker renews its single-flight lease while it works; a lease not
# renewed for this long belongs to a dead worker and may be taken over.
REWARD_MODEL_LOCK_TTL_SECONDS = env_int("REWARD_MODEL_LOCK_TTL_SECONDS", 300)
# Reward heads trained for projects with "ensemble" acquisition (bootstrapped heads on one backbone).
REWARD_MODEL_ENSEMBLE_HEADS = env_int("REWARD_MODEL_ENSEMBLE_HEADS", 5)
# Where web processes run the active model for the score API (rewardmodel/serving.py):
# the CPU by default, as the GPUs belong to the training workers; "cuda:N" for a
# web host with a GPU of its own.
REWARD_MODEL_SERVING_DEVICE = env_str("REWARD_MODEL_SERVING_DEVICE", "cpu")
