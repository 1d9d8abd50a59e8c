# Everything a user or CI needs, from a machine that has only Python 3.11+ and pip.
#   make demo   set up, simulate 30 days and run the whole pipeline through Dagster
#   make test   set up and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed

export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
export UV_PYTHON_DOWNLOADS := never

.PHONY: setup home demo test browser dashboard fuzz lint typecheck check validate dev ui bench bench-ingest \
	bench-attribution bench-reports bench-nightly lock clean

setup: $(STAMP)

# The lock pins every package with hashes; uv installs it (pip would too, only slower).
# Bytecode is compiled once at install: otherwise every run worker compiles the libraries'
# sources again when it imports them (about 10 s of CPU for Evidently, GX and Dagster).
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
	$(UV) pip install --python $(BIN)/python --compile-bytecode --require-hashes -r requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

demo: setup
	$(BIN)/feedback-pipeline demo

# The dashboard's browser test drives the system's headless Chromium (a Debian package).
browser:
	bash scripts/install-chromium.sh

# One worker per core, each taking whole test files (a file's runs share module fixtures).
test: setup browser
	$(BIN)/pytest -n auto --dist loadfile

lint: setup
	$(BIN)/ruff check feedback_pipeline feedback_pipeline_tests
	$(BIN)/ruff format --check feedback_pipeline feedback_pipeline_tests

typecheck: setup
	$(BIN)/pyright

# The Dagster instance lives in DAGSTER_HOME, configured by the project's dagster.yaml.
home:
	mkdir -p "$(DAGSTER_HOME)"
	test -f "$(DAGSTER_HOME)/dagster.yaml" || cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

validate: setup home
	$(BIN)/dagster definitions validate -w workspace.yaml

check: lint typecheck validate test

# The fuzz tests at ten times their CI size (5,700 random examples instead of 570 fixed ones).
fuzz: setup
	FEEDBACK_PIPELINE_FUZZ_SCALE=10 $(BIN)/pytest feedback_pipeline_tests/lib/test_fuzz.py

# Rebuild the feedback analysis and the dashboard page (data/dashboard/index.html).
dashboard: setup home
	$(BIN)/feedback-pipeline dashboard

dev: setup home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1

# Dagster, MLflow and Evidently on 127.0.0.1:3000, :5000 and :8000 until Ctrl-C; logs in
# data/logs/ui. Other ports or a subset: UI_ARGS="--mlflow-port 5001 --only mlflow,evidently".
UI_ARGS ?=
ui: setup home
	$(BIN)/feedback-pipeline ui $(UI_ARGS)

# Benchmarks print medians and write JSON under data/bench/ (SIZES="100000 1000000 10000000").
# bench-nightly runs whole nights through Dagster; COMPARE="nannyml naive" adds the same work done
# by NannyML (installed on first use into data/bench/nannyml-venv) and by a naive pandas script.
SIZES ?= 100000 1000000
COMPARE ?=
bench: bench-ingest bench-attribution bench-reports bench-nightly

bench-nightly: setup
	$(BIN)/python -m feedback_pipeline.bench.nightly --sizes $(SIZES) $(if $(COMPARE),--compare $(COMPARE))

bench-ingest: setup
	$(BIN)/python -m feedback_pipeline.bench.ingest --sizes $(SIZES)

bench-attribution: setup
	$(BIN)/python -m feedback_pipeline.bench.attribution --sizes $(SIZES)

bench-reports: setup
	$(BIN)/python -m feedback_pipeline.bench.reports --sizes $(SIZES)

lock: setup
	$(UV) pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes --no-emit-index-url -o requirements.lock

clean:
	rm -rf $(VENV) data/landing data/warehouse data/quarantine data/dagster_home data/mlflow
