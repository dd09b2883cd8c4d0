# The two commands: `make run` and `make test`. Everything else is a step of theirs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run serve collectstatic-production bench-hot-path test setup setup-test migrate demo chromium lint bench-import bench-refresh bench-rm

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.test: requirements-test.txt $(VENV)/.runtime
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@

setup: $(VENV)/.runtime

setup-test: $(VENV)/.test chromium

# Debian's chromium drives the browser tests (Playwright's own browser
# download cannot work offline).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "Installing Debian's chromium for the browser tests..."; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

migrate: setup
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py load_demo

# The production web server (gunicorn, config/gunicorn.conf.py: WEB_CONCURRENCY
# workers, WEB_THREADS threads each), on HOST:PORT. The one place its command
# lives: `make serve` runs it alone, `make run` beside the workers, and
# benchmarks/ start it through `make serve`. In production (DJANGO_ENV=production)
# static files are collected first; locally whitenoise serves them from the app folders.
HOST ?= 127.0.0.1
PORT ?= 8000
SERVE := $(BIN)/gunicorn --config config/gunicorn.conf.py --bind $(HOST):$(PORT) config.wsgi

collectstatic-production:
	@if [ "$$DJANGO_ENV" = production ]; then $(BIN)/python manage.py collectstatic --noinput -v 0; fi

serve: migrate collectstatic-production
	exec $(SERVE)

# Web, a training worker (queue gpu), a light worker with the beat scheduler
# (queue default), all stopped together by Ctrl-C. With no REDIS_URL the
# broker is the embedded one under var/broker.
run: demo collectstatic-production
	@echo "Serving http://$(HOST):$(PORT) with a worker and beat (Ctrl-C stops all)."
	@trap 'kill 0' INT TERM EXIT; \
	$(BIN)/celery -A config worker --queues gpu --concurrency 1 --prefetch-multiplier 1 \
		--hostname gpu@%h --loglevel INFO & \
	$(BIN)/celery -A config worker --queues default --concurrency 1 --hostname default@%h \
		--beat --schedule var/celerybeat-schedule --loglevel INFO & \
	$(SERVE)

test: setup-test
	$(BIN)/python -m pytest

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench-import: setup
	$(BIN)/python benchmarks/import_pairs.py

# The rater loop under load against make serve, SQLite and PostgreSQL (~10 min).
bench-hot-path: setup
	$(BIN)/python benchmarks/hot_path.py --seconds 20 --keepalive

bench-refresh: setup
	$(BIN)/python benchmarks/refresh_pairs.py

# The reward-model trainer against TRL's RewardTrainer (installs TRL into the venv).
bench-rm: setup
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python benchmarks/rm_training.py

# 200 raters against `make serve` on PostgreSQL + Redis (db 7) with real workers, while the trainer,
# Redis and a web process are killed; checks no judgment is lost or doubled (benchmarks/load_faults.py).
.PHONY: bench-faults
bench-faults: setup
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python benchmarks/load_faults.py
