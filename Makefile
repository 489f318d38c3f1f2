# Set-up and everyday commands. Works on a fresh machine with Python 3.11 and
# make: uv is installed from PyPI when missing, and `make test` installs
# Debian's redis-server and postgresql where they are missing and it can.
SHELL := /bin/bash
UV := $(or $(shell command -v uv 2>/dev/null),$(HOME)/.local/bin/uv)

.PHONY: run test test-quick e2e soak faults lint format bench histories setup redis-server chromium postgresql

$(UV):
	python3 -m pip install --user --quiet uv

setup: $(UV)
	$(UV) sync --frozen

## The main job end to end: dev server + workers + generated workload -> ./data/out
run: setup
	$(UV) run python -m script.demo

## The whole suite (what CI runs): lint, then every tier: unit, activity,
## replay, integration (real dev server, real processes, real redis-server,
## PostgreSQL, Google's Pub/Sub emulator), faults at quick scale, and the slow
## end-to-end runs at 1,000 jobs per sink (`make e2e` runs the full 5,000)
test: setup redis-server chromium postgresql
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	EVENTFLOW_E2E_JOBS=1000 $(UV) run pytest

## The soak: 30 minutes of trickle at 20,000 events/min, sampled each minute,
## audited exactly (`make test` runs a 2-minute version); its chart and JSON
## go to docs/
soak: setup
	$(UV) run python -m script.soak --minutes 30 --rate 20000 \
	  --out docs/soak.json --chart docs/soak.png --markdown

## The acceptance workload end to end at full size (5,000 jobs) on every sink
e2e: setup redis-server postgresql
	$(UV) run pytest tests/integration/test_pipeline_e2e.py -v

## The fast tier only: unit, activity and replay tests (about half a minute);
## skips what tests/conftest.py marks integration or faults by folder, and slow
test-quick: setup redis-server postgresql
	$(UV) run pytest -m "not integration and not faults and not slow"

## The fault-injection suite at full scale (10x what `make test` runs), and
## its table for RELIABILITY.md
faults: setup redis-server postgresql
	mkdir -p data && rm -f data/faults.jsonl
	EVENTFLOW_FAULT_SCALE=full EVENTFLOW_FAULT_REPORT=data/faults.jsonl \
	  $(UV) run pytest tests/faults -v
	$(UV) run python -m tests.faults.report data/faults.jsonl

lint: setup
	$(UV) run ruff check .
	$(UV) run ruff format --check .

format: setup
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

## Record fresh workflow histories for the replay tests (commit them)
histories: setup
	$(UV) run python -m tests.replay.record tests/histories/$(or $(VERSION),v1)

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing: install Redis 7 so that redis-server is on PATH"; exit 1; \
	  fi; }

## Debian's Chromium for the browser test (tests/support/browser.py drives it
## with Playwright, which downloads no browser of its own)
chromium:
	@[ -x /usr/bin/chromium ] || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "chromium is missing: install it so that /usr/bin/chromium exists"; exit 1; \
	  fi; }

# The SQL sink tests start a private PostgreSQL server (tests/support/postgres.py).
postgresql:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "PostgreSQL is missing: install its server so that /usr/lib/postgresql/*/bin/postgres exists"; exit 1; \
	  fi; }
