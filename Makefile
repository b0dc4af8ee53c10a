# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create .venv and install rpztune with its pinned torch first.

VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rpztune-installed
DEMO_TRIALS ?= 100  # numpy-mlp trials (a fraction of a second each)

.PHONY: demo test lint install

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,dashboard]'
	scripts/ensure-bubblewrap.sh
	touch $(STAMP)

# The finetune part runs when a photo folder is found: DATA=FOLDER holding dogs_and_cats/ (or the lab's zip).
PHOTOS ?= $(firstword $(wildcard $(DATA)/dogs_and_cats $(DATA)/dogs_and_cats.zip dogs_and_cats.zip dogs_and_cats))

demo: $(STAMP)
	$(BIN)/rpztune run numpy-mlp --trials $(DEMO_TRIALS) $(if $(DATA),--data $(DATA))
	$(BIN)/rpztune export --study numpy-mlp --out results/numpy-mlp
	$(BIN)/rpztune run mynet --workers 2 --trials 16 --seed 0 $(if $(DATA),--data $(DATA)) --set epochs=8 \
	  --set 'channels={low=8, high=16}' --set convs_per_stage=1 --set kernel_size=3
	$(BIN)/rpztune refit --study mynet
	$(BIN)/rpztune export --study mynet --out results/mynet
	@if [ -n "$(PHOTOS)" ]; then \
	  $(BIN)/rpztune run finetune --data $(PHOTOS) --trials 8 --seed 0 --set freeze=linear --set augment=none \
	    --set 'backbone=["tf_efficientnet_lite0"]' --set resolution=128 --set epochs=8 && \
	  $(BIN)/rpztune export --study finetune --out results/finetune && \
	  $(BIN)/rpztune submit --standalone --out results/submission.zip; \
	else echo "finetune: skipped; to run it, give DATA=FOLDER holding dogs_and_cats/ (or the lab's dogs_and_cats.zip)"; fi
	$(BIN)/rpztune report --all --out results/reports
	$(BIN)/rpztune status
	@echo
	@echo "Results: studies.db (all trials), studies-checkpoints/ (best weights), results/<study>/ (exported"
	@echo "winners), results/submission.zip (with photos: the lab's zip, validated), results/reports/index.html"

lint: $(STAMP)
	$(BIN)/ruff check .

# The tests use real services: a private PostgreSQL on loopback (stopped afterwards when the run started it),
# a headless Chromium, and network namespaces for the multi-host test (as root).
test: lint
	scripts/ensure-chromium.sh
	scripts/ensure-bubblewrap.sh
	scripts/ensure-netns-tools.sh
	scripts/with-postgres.sh $(BIN)/python -m pytest
