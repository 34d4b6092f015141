# prefect-conformance: every target creates/updates .venv from pyproject.toml on first use.
#   make conformance                         suite against the bundled reference server (real Prefect)
#   make conformance TARGET=http://h:4200/api suite against any Prefect-compatible server
#   make conformance TARGET=url EXPECTATIONS=expectations/my-server.toml [UPDATE_EXPECTATIONS=1]
#   make matrix [TARGET=url]                 suite over Prefect releases as servers and clients (matrix.html)
#   make test                                the project's own tests, in parallel (what .ci/run calls)
#   make bench | make flake-check N=20       timings of the suite; pass rate per check over N runs
#   make image                               a Docker image of the suite: docker run ... prefect-conformance run --target URL

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

TARGET ?=
ARGS ?=
REPORT_DIR ?= reports

.PHONY: venv browser test-images conformance matrix test bench flake-check reference-images image differential clean help

help:
	@sed -n '2,9p' Makefile

venv: $(STAMP)

# uv (from PyPI, into the venv) installs in a sixth of pip's time and CPU: 8 s against 49 s on 2 cores. Bytecode
# is compiled at install time, as pip does, so no process compiles Prefect's modules on every start.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e '.[test]'
	@touch $@

EXPECTATIONS ?=
UPDATE_EXPECTATIONS ?=
# Reference mode and images (read by the CLI from the environment): REFERENCE=local|local-postgres|docker|docker-postgres
export REFERENCE REFERENCE_IMAGE POSTGRES_IMAGE REFERENCE_DB_URL

# make itself exits 2 whenever a recipe fails, so the CLI's own 0/1/2 verdict is printed as the last line.
VERDICT = case $$1 in 0) echo "verdict: 0 — passed";; 1) echo "verdict: 1 — conformance failures";; \
  2) echo "verdict: 2 — no verdict (see the message above)";; *) echo "verdict: $$1 — interrupted";; esac
conformance: $(STAMP)
	@set -- 0; $(BIN)/prefect-conformance run $(if $(TARGET),--target $(TARGET)) --report-dir $(REPORT_DIR) \
	  $(if $(EXPECTATIONS),--expectations $(EXPECTATIONS)) $(if $(UPDATE_EXPECTATIONS),--update-expectations) $(ARGS) \
	  || set -- $$?; $(VERDICT); exit $$1

# The suite over a grid of Prefect releases (servers x clients); ARGS e.g. "--clients 3.4.25,3.9.1 --jobs 2".
matrix: $(STAMP)
	@set -- 0; $(BIN)/prefect-conformance matrix $(if $(TARGET),--target $(TARGET)) --report-dir $(REPORT_DIR) $(ARGS) \
	  || set -- $$?; $(VERDICT); exit $$1

# The project's own tests run in parallel: most of their time is spent waiting on real servers and clients.
# They start about a hundred Python processes that import this checkout's modules; where the environment says
# PYTHONDONTWRITEBYTECODE, each would compile them (and pytest rewrite the scenarios) again: 0.3-0.4 CPU-s per run.
# Four workers on 2 cores: a quarter of the tests mostly wait (a 60-s scheduler loop, a 300-ms-per-request target),
# and a fourth worker keeps the cores busy meanwhile (5 min 36 s against 6 min 29 s with three, 2026-11-28).
# On a fresh machine the venv (downloads, then uv) and the browser (apt-get) are mostly waits on the network: they
# are set up side by side. The Docker test's images (Debian's and PyPI's packages, a minute) are built beside the
# tests, which start at once: the Docker test waits for that build (one build at a time per machine) when it
# gets there first.
TEST_WORKERS ?= 4
test:
	@$(MAKE) --no-print-directory -j2 $(STAMP) browser
	@$(MAKE) --no-print-directory test-images & \
	echo "env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadgroup --durations=25 $(ARGS)"; \
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadgroup --durations=25 $(ARGS); \
	status=$$?; wait; exit $$status

# The HTML report is checked in a real headless browser; installed from Debian's packages where we may.
browser:
	@if ! command -v chromium >/dev/null || ! command -v pdftotext >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's chromium and poppler-utils for the HTML report test"; \
	    apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium poppler-utils >/dev/null; \
	  else echo "chromium or pdftotext missing and not root: the HTML report test will be skipped"; fi; \
	fi

# Docker images of the reference built from Debian's and PyPI's packages, for engines that cannot pull.
reference-images: $(STAMP)
	$(BIN)/python -m harness.reference.images

# A Docker image of the suite itself (built from Debian's and PyPI's packages, on the reference's image):
#   docker run --rm --network host -v "$$PWD/reports:/reports" prefect-conformance run --target URL
image: $(STAMP)
	$(BIN)/python -m harness.commands.image

# The same for `make test`, without the venv (the build needs only the standard library): where a Docker engine
# answers, we are root and the images are missing. A failed build is the Docker test's to report, not make's.
test-images:
	@if [ "$$(id -u)" = 0 ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then \
	  mkdir -p build; echo "Building the reference's Docker images for the Docker test (log: build/reference-images.log)"; \
	  $(PYTHON) -m harness.reference.images > build/reference-images.log 2>&1 || \
	    echo "The reference's Docker images were not built (see build/reference-images.log); the Docker test will try"; \
	fi

# The differential self-check: the reference on SQLite and on PostgreSQL must give identical verdicts.
# 'compare' lists checks that fail only on PostgreSQL as "new failures" and only on SQLite as "fixed".
# Both runs always happen and are always compared; the target fails if either run or the comparison did.
differential: $(STAMP)
	@sqlite=0; postgres=0; same=0; \
	REFERENCE=docker $(BIN)/prefect-conformance run --report-dir $(REPORT_DIR)/differential/sqlite $(ARGS) || sqlite=$$?; \
	REFERENCE=docker-postgres $(BIN)/prefect-conformance run --report-dir $(REPORT_DIR)/differential/postgres $(ARGS) || postgres=$$?; \
	$(BIN)/prefect-conformance compare $(REPORT_DIR)/differential/sqlite/latest/results.json \
	  $(REPORT_DIR)/differential/postgres/latest/results.json || same=$$?; \
	echo "differential: sqlite run exit $$sqlite, postgres run exit $$postgres, compare exit $$same"; \
	[ $$sqlite = 0 ] && [ $$postgres = 0 ] && [ $$same = 0 ]

# A benchmark of the suite against the bundled reference (writes reports/bench/bench.md); ARGS="--repeat 1" for a quick one.
bench: $(STAMP)
	$(BIN)/python -m harness.commands.bench --report-dir $(REPORT_DIR) $(ARGS)

# The full suite N times in a row; pass rate per check (writes reports/flake/flake.md).
N ?= 20
flake-check: $(STAMP)
	$(BIN)/python -m harness.commands.flake -N $(N) --report-dir $(REPORT_DIR)

# The reference's template database lives in the user cache dir (~/.cache/prefect-conformance/).
clean:
	rm -rf $(VENV) build *.egg-info
