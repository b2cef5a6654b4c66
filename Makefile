# The interface: `make run` (the stack and its gates, quick profile) and `make test`.
# Both bootstrap what they need and are safe to run again.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOME_DIR ?= .sonia-run
PROFILE ?= quick

.PHONY: venv system-deps run test lint typecheck bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# bubblewrap (the tool sandbox) and espeak-ng (speech out) are optional: Sonia
# reports what is in force without them. Installed when we are root with apt.
system-deps:
	@if command -v bwrap >/dev/null && command -v espeak-ng >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap espeak-ng) >/dev/null 2>&1 \
	    || echo "note: could not install bubblewrap/espeak-ng; running without them"; \
	else echo "note: bubblewrap/espeak-ng missing and cannot install (not root or no apt)"; fi

run: venv system-deps
	$(BIN)/sonia gate all --profile $(PROFILE) --home $(HOME_DIR)

test: venv system-deps
	$(BIN)/python -m pytest -m "not gate"

lint: venv
	$(BIN)/ruff check src tests bench

typecheck: venv
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) $(HOME_DIR) build *.egg-info
