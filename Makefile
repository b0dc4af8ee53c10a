# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install rpztune with its pinned torch first.

VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rpztune-installed
DEMO_TRIALS ?= 100

.PHONY: demo test lint install

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,dashboard]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rpztune run numpy-mlp --trials $(DEMO_TRIALS) $(if $(DATA),--data $(DATA))
	$(BIN)/rpztune export --study numpy-mlp --out results/numpy-mlp
	$(BIN)/rpztune status
	@echo
	@echo "Results: studies.db (all trials), studies-checkpoints/ (best weights), results/numpy-mlp/ (exported winner)"

lint: $(STAMP)
	$(BIN)/ruff check .

# The tests use real services: a private PostgreSQL on loopback and a headless Chromium.
test: lint
	scripts/ensure-chromium.sh
	RPZTUNE_PG_URL="$${RPZTUNE_PG_URL:-$$(scripts/postgres-test-server.sh)}" $(BIN)/python -m pytest
