# acmeda — two commands on a fresh machine: `make run` (the CA) and `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HASH   := $(shell cat pyproject.toml | sha256sum | cut -c1-12)
# `make run` needs only the server; the tests also need the device client's tpm2-pytss, which
# builds against Debian's libtss2-dev: so `test` installs the Debian packages first.
RUN_STAMP  := $(VENV)/.installed-run-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)
DEBIAN_PACKAGES := certbot lego uacme pebble swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config

.PHONY: install system-deps run test test-sqlite test-postgres bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(PY)
	$(VENV)/bin/pip install -q -e .
	rm -f $(VENV)/.installed-run-*; touch $@

$(TEST_STAMP): pyproject.toml | $(PY) system-deps
	$(VENV)/bin/pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*; touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)

# The real ACME clients, Pebble and the software TPM the tests drive (Debian packages).
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "install as root: apt-get install$$missing"; exit 1; fi; fi

run: install
	$(VENV)/bin/acmeda serve

# Runs on SQLite, and on PostgreSQL too where one answers at 127.0.0.1:5432 (required when CI=true).
test: system-deps $(TEST_STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

# Figures go to docs/performance.md, each benchmark its own section. The issuance bench also
# runs acmeda over PostgreSQL where one answers at 127.0.0.1:5432 (as the tests do).
BENCH_PG := postgresql://postgres@127.0.0.1:5432/postgres
bench: system-deps $(TEST_STAMP)
	$(PY) bench/issuance.py --pebble-validating $$(pg_isready -q -h 127.0.0.1 -p 5432 && echo --database-url $(BENCH_PG))
	$(PY) bench/attestation.py --docs docs/performance.md
	$(PY) bench/device.py --docs docs/performance.md
	$(PY) bench/tpm_enrollment.py --docs docs/performance.md

clean:
	rm -rf $(VENV) acmeda-data .pytest_cache
