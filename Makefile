# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install rpztune with its pinned torch first.

VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rpztune-installed

.PHONY: demo demo-results test test-fast lint install

# The mynet stand-in warning is printed once, by the first mynet run; the later demo commands stay quiet.
STAND_IN_WARNED := RPZTUNE_STAND_IN_WARNED=make

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,dashboard]'
	scripts/ensure-bubblewrap.sh
	touch $(STAMP)

# With photos (DATA=FOLDER holding dogs_and_cats/ or the lab's dogs_and_cats.zip, MNIST and FashionMNIST), the
# demo is one `rpztune submit --timeout`: the three studies through the pipeline, then the validated zip.
# Without, numpy-mlp and mynet each run the pipeline within their own budget. Budgets in seconds.
PHOTOS ?= $(firstword $(wildcard $(DATA)/dogs_and_cats $(DATA)/dogs_and_cats.zip))
DEMO_TIMEOUT ?= 2400
DEMO_NUMPY_TIMEOUT ?= 120
DEMO_MYNET_TIMEOUT ?= 600

demo: $(STAMP)
	@if [ -n "$(PHOTOS)" ]; then \
	  $(BIN)/rpztune submit --data $(DATA) --timeout $(DEMO_TIMEOUT) --seed 0 --out results/submission.zip && \
	  for study in numpy-mlp mynet finetune; do \
	    $(STAND_IN_WARNED) $(BIN)/rpztune export --study $$study --out results/$$study || exit 1; done; \
	else \
	  $(BIN)/rpztune run numpy-mlp --timeout $(DEMO_NUMPY_TIMEOUT) --seed 0 $(if $(DATA),--data $(DATA)) && \
	  $(BIN)/rpztune export --study numpy-mlp --out results/numpy-mlp && \
	  $(BIN)/rpztune run mynet --timeout $(DEMO_MYNET_TIMEOUT) --seed 0 $(if $(DATA),--data $(DATA)) --set epochs=8 \
	    --set 'channels={low=8, high=16}' --set convs_per_stage=1 --set kernel_size=3 --set refit_epochs=16 && \
	  $(STAND_IN_WARNED) $(BIN)/rpztune export --study mynet --out results/mynet && \
	  echo "finetune: skipped; to run it, give DATA=FOLDER holding dogs_and_cats/ (or the lab's dogs_and_cats.zip)"; \
	fi
	$(BIN)/rpztune report --all --out results/reports
	$(BIN)/rpztune status
	@$(MAKE) -s -f $(firstword $(MAKEFILE_LIST)) demo-results

# What the demo made (only what is there: an offline demo makes no submission.zip).
DEMO_RESULTS := studies.db=every_trial studies-checkpoints=the_best_trials_weights \
  results/numpy-mlp=exported_winner results/mynet=exported_winner results/finetune=exported_winner \
  results/submission.zip=the_lab_zip,_validated results/reports/index.html=the_reports

demo-results:
	@echo; echo "Results:"
	@for item in $(DEMO_RESULTS); do path=$${item%%=*}; \
	  if [ -e "$$path" ]; then echo "  $$path ($$(echo "$${item#*=}" | tr _ ' '))"; fi; done

lint: $(STAMP)
	$(BIN)/ruff check .

# pytest in 2 processes (pytest-xdist); each test module runs whole in one of them, so a module's fixtures
# (a study several of its tests read) are built once, and its tests never race each other.
PYTEST := $(BIN)/python -m pytest -n 2 --dist loadfile

# The tests use real services: a private PostgreSQL on loopback (stopped afterwards when the run started it),
# a headless Chromium, and network namespaces for the multi-host test (as root). Under 15 minutes on 2 cores.
test: lint
	scripts/ensure-chromium.sh
	scripts/ensure-bubblewrap.sh
	scripts/ensure-netns-tools.sh
	scripts/with-postgres.sh $(PYTEST)

# Daily work: the tests not marked slow (pyproject.toml: none trains beyond a few seconds), under 2 minutes on
# 2 cores; they need no PostgreSQL.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"
