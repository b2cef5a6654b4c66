# The interface: `make run` (the stack and its gates, quick profile) and `make test`.
# Both bootstrap what they need and are safe to run again.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOME_DIR ?= .sonia-run
PROFILE ?= quick

.PHONY: venv system-deps run console test check lint typecheck lock bench clean

venv: $(STAMP)

# The package with its gates and dev extras, pinned to the resolved set in
# constraints.txt (the versions the suite last ran with).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,gates,postgres]'
	@touch $(STAMP)

# Re-resolve the dependencies in a scratch venv and pin the result.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet '.[dev,gates,postgres]'
	{ echo '# The resolved set the suite and the gates ran with (`make lock` re-resolves it).'; \
	  echo '# `make venv` installs from it; evidence records every installed version.'; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -vi '^sonia'; } > constraints.txt
	rm -rf .lock-venv

# bubblewrap (the tool sandbox) and espeak-ng (speech out) are optional: Sonia
# reports what is in force without them. chromium is the headless browser of the
# console's tests (driven by Playwright; they skip, naming it, without it).
# postgresql is the server the storage tests start in a temporary folder (initdb,
# postgres; they skip, naming it, without it) and brings libpq5, which psycopg uses.
# Installed when we are root with apt.
PG_BINDIR = $(firstword $(wildcard /usr/lib/postgresql/*/bin))
system-deps:
	@if command -v bwrap >/dev/null && command -v espeak-ng >/dev/null && command -v chromium >/dev/null \
	    && [ -x "$(PG_BINDIR)/initdb" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap espeak-ng chromium postgresql) >/dev/null 2>&1 \
	    || echo "note: could not install bubblewrap/espeak-ng/chromium/postgresql; running without them"; \
	else echo "note: bubblewrap/espeak-ng/chromium/postgresql missing and cannot install (not root or no apt)"; fi

run: venv system-deps
	$(BIN)/sonia gate all --profile $(PROFILE) --home $(HOME_DIR)

# The web console on the home `make run` filled with gate evidence: starts its stack
# and prints the address and a new approver key to sign in with.
console: venv
	$(BIN)/sonia up --home $(HOME_DIR)
	@echo "console: $$($(BIN)/python -c 'import sys; from sonia.home import Home; print(Home.at(sys.argv[1]).settings().url_of("gateway"))' $(HOME_DIR))/"
	@echo "approver key: $$($(BIN)/sonia keys create --role approver --home $(HOME_DIR))"
	@echo "stop it with: $(BIN)/sonia down --home $(HOME_DIR)"

# Whole-gate runs carry the `gate` marker: `make run` runs every gate, so CI runs each once.
# Test files are spread over one worker per core (at most 4): each file's module stack
# stays in one worker, and each worker takes its own share of the port range.
TEST_WORKERS ?= auto
test: venv system-deps
	$(BIN)/python -m pytest -m "not gate" -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile

check: lint typecheck

lint: venv
	$(BIN)/ruff check src tests bench

typecheck: venv
	$(BIN)/mypy
	$(BIN)/mypy --explicit-package-bases tests bench

bench: venv
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) $(HOME_DIR) .lock-venv build *.egg-info
