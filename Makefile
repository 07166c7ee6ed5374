# gauntlet: `make train` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config/train.yaml
ARGS   ?=

# Prefect keeps its state inside the project; analytics off; a patient first start-up.
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export DO_NOT_TRACK := 1
export COMET_ERROR_TRACKING_ENABLE := false
export COMET_LOGGING_CONSOLE := WARNING

# Deployments (prefect.yaml): the nightly schedule, and where `make deploy` registers them.
GAUNTLET_NIGHTLY_CRON ?= 0 3 * * *
GAUNTLET_TIMEZONE     ?= UTC
PREFECT_PORT          ?= 4200
PORT                  ?= 8000
# deploy and worker talk to PREFECT_API_URL when it is set, else to `make server` on this machine.
SERVER_API            ?= $(or $(PREFECT_API_URL),http://127.0.0.1:$(PREFECT_PORT)/api)
MODEL                 ?=
export GAUNTLET_NIGHTLY_CRON GAUNTLET_TIMEZONE

.PHONY: help setup train test test-fast lint docs evaluate predict serve server deploy worker clean

help:
	@echo "make train   set up .venv, then train on $(CONFIG) (extra flags: ARGS='--set key=value')"
	@echo "make test    set up .venv, then run the test suite"
	@echo "make test-fast   the unit tests only (tests/unit, under a minute)"
	@echo "make lint    ruff over the project"
	@echo "make docs    regenerate docs/configuration.md from the config schema's field descriptions"
	@echo "make evaluate RUN=artifacts/runs/<run_id>   re-evaluate a finished run"
	@echo "make predict INPUT=rows.parquet OUTPUT=predictions.parquet [MODEL=name]   score a file with the champion (ARGS='--version 3')"
	@echo "make serve   [MODEL=name]   REST predictions of the champion on http://127.0.0.1:$(PORT) (POST /predict, /docs)"
	@echo "make server  Prefect server + UI on http://127.0.0.1:$(PREFECT_PORT)"
	@echo "make deploy  register train/nightly, train/manual, evaluate/manual, predict/manual, contribute_trials/worker on that server"
	@echo "make worker  run the deployments' flow runs, trial workers included (process work pool gauntlet-process); run it N times to scale out"
	@echo "make clean   remove .venv, .prefect and caches (artifacts/ stays)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
		{ echo "error: gauntlet needs Python >= 3.11; run with PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# uv installs the same wheels several times faster than pip (bench/README.md: set-up). It is taken from
# PATH, else fetched into the venv; pip installs wherever uv is unavailable or fails (INSTALLER=pip: always).
# Bytecode is compiled at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (CI), every process
# would otherwise compile its imports again (7.5 s instead of 3.5 s to import the libraries a run uses).
INSTALLER ?= uv
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
define install
	@if [ "$(INSTALLER)" = uv ] && { command -v uv >/dev/null || $(PIP) uv >/dev/null 2>&1; }; then \
		echo "installing $(1) with uv"; \
		$$(command -v uv || echo $(BIN)/uv) pip install --quiet --compile-bytecode --python $(BIN)/python $(1) || \
		{ echo "uv failed; installing with pip"; $(PIP) $(1); }; \
	else echo "installing $(1) with pip"; $(PIP) $(1); fi
endef

# Reinstall whenever pyproject.toml changes; training needs only the package, the tests its dev extra.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(call install,-e .)
	@$(BIN)/python -m compileall -q config flows tasks gauntlet
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(call install,-e '.[dev]')
	@touch $@

# Migrate Prefect's database once, before the first flow run (a fresh database otherwise races
# the ephemeral server's start-up timeout).
$(PREFECT_HOME)/.migrated: $(VENV)/.installed
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/prefect server database upgrade -y >/dev/null
	@touch $@

setup: $(PREFECT_HOME)/.migrated

train: setup
	$(BIN)/gauntlet train --config $(CONFIG) $(ARGS)

evaluate: setup
	$(BIN)/gauntlet evaluate --run $(RUN) $(ARGS)

serve: setup
	$(BIN)/gauntlet serve --port $(PORT) $(if $(MODEL),--model $(MODEL)) $(ARGS)

predict: setup
	$(BIN)/gauntlet predict --input $(INPUT) --output $(OUTPUT) $(if $(MODEL),--model $(MODEL)) $(ARGS)

# Flows wait on servers and subprocesses much of the time: two workers (tests spread, an idle
# worker takes the other's queued tests) halve the wall time on 2 cores. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: setup $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal) $(PYTEST_ARGS)

test-fast: setup $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

server: setup
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

# Prefect's deploy output (about 150 lines) goes to .prefect/deploy.log; shown only when it fails.
deploy: setup
	@PREFECT_API_URL=$(SERVER_API) $(BIN)/prefect work-pool create gauntlet-process --type process --overwrite \
		> $(PREFECT_HOME)/deploy.log 2>&1 && \
	PREFECT_API_URL=$(SERVER_API) $(BIN)/prefect --no-prompt deploy --all >> $(PREFECT_HOME)/deploy.log 2>&1 || \
		{ tail -40 $(PREFECT_HOME)/deploy.log; echo "error: deploying to $(SERVER_API) failed (full log: .prefect/deploy.log)"; exit 1; }
	@echo "deployed to $(SERVER_API), work pool gauntlet-process: $$(grep -o "Deployment '[^']*'" $(PREFECT_HOME)/deploy.log | cut -d"'" -f2 | sort -u | paste -sd, - | sed 's/,/, /g')"
	@echo "start a worker with: make worker   (details: .prefect/deploy.log)"

worker: setup
	PREFECT_API_URL=$(SERVER_API) $(BIN)/gauntlet worker --pool gauntlet-process

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

# docs/configuration.md is generated; tests/test_config_reference.py fails when it is stale.
docs: $(VENV)/.installed
	$(BIN)/python -m config.reference

clean:
	rm -rf $(VENV) $(PREFECT_HOME) .pytest_cache .ruff_cache *.egg-info
