# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
# The report's browser test drives Debian's chromium (Playwright's own browser download is not
# reachable from every machine); `make test` installs the package when it is missing.
CHROMIUM := /usr/bin/chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-oldest test-light lint docs install bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[train,dev,docs,bench,duckdb,dagster,cluster,xgboost,s3test,browser,airflow]"
	touch $@

install: $(BIN)/.installed

# The oldest Ray and Feast cae-ray admits (constraints/oldest.txt), in a venv of their own.
OLDEST := .venv-oldest
# The tests that touch what changed between the oldest and the newest Ray and Feast, one or two
# per part (which and why, and how long: docs/versions.md): the demo end to end, Ray Train
# workers with a killed worker and a refused checkpoint, Ray Data reads, the file, DuckDB and
# Ray offline stores, prune / restore / retire through the real `feast` CLI. The rest runs on
# the newest versions only, to keep `make test` within CI's time.
OLDEST_TESTS := tests/test_versions.py \
	tests/test_run.py::test_demo_marks_the_unselected_features_and_writes_a_report \
	tests/test_feast_export.py::test_export_is_point_in_time_correct_and_keeps_the_entity_order \
	tests/test_feast_export.py::test_the_cli_export_feeds_prepare \
	"tests/test_pipeline.py::test_the_driver_prepares_what_ray_data_prepares[label]" \
	tests/test_feast_export.py::test_a_duckdb_source_without_file_format_exports_or_names_the_feast_it_needs \
	tests/test_feast_export.py::test_the_ray_store_answers_every_row_on_the_cluster \
	"tests/test_feast_prune.py::test_apply_marks_then_restore_gives_the_original_back[file]" \
	"tests/test_feast_prune.py::test_marks_survive_feast_apply_through_the_repo_overlay[file]" \
	tests/test_lifecycle.py::test_retire_refuses_when_feast_apply_would_delete_what_the_definitions_lack \
	tests/test_fault_tolerance.py::test_sigkilled_worker_resumes_from_its_last_checkpoint \
	"tests/test_guarantees.py::test_a_checkpoint_that_holds_code_is_refused_and_never_run[1]"

$(OLDEST)/bin/.installed: pyproject.toml constraints/oldest.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install --quiet --upgrade pip
	$(OLDEST)/bin/pip install --quiet "$(TORCH)"
	$(OLDEST)/bin/pip install --quiet -c constraints/oldest.txt -e ".[train,dev,duckdb,s3test,xgboost]"
	touch $@

# The registry side alone (no torch, no Ray), as a Feast repo's CI installs it, on the oldest
# Python cae-ray admits (3.10) where one is found (pyenv's too), else on $(PYTHON).
LIGHT := .venv-light
LIGHT_PYTHON ?= $(or $(shell for p in python3.10 $(HOME)/.pyenv/versions/3.10*/bin/python3.10; \
	do $$p -c "" 2>/dev/null && echo $$p && break; done),$(PYTHON))

$(LIGHT)/bin/.installed: pyproject.toml
	$(LIGHT_PYTHON) -m venv $(LIGHT)
	$(LIGHT)/bin/pip install --quiet --upgrade pip
	$(LIGHT)/bin/pip install --quiet -e .
	touch $@

$(CHROMIUM):
	$(SUDO) apt-get install -y --no-install-recommends chromium || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium)

demo: install
	$(BIN)/cae-ray demo

lint: install
	$(BIN)/ruff check cae_ray tests benchmarks pipelines docs/hooks
	$(BIN)/ruff format --check cae_ray tests benchmarks pipelines docs/hooks
	$(BIN)/mypy

# The documentation site (mkdocs.yml, docs/) into site/. Strict: a broken link or anchor, a
# reference to code that moved, a page out of the navigation or any other warning fails it.
docs: install
	$(BIN)/mkdocs build --strict --site-dir site

test: lint docs $(CHROMIUM) $(LIGHT)/bin/.installed
	CAE_RAY_LIGHT_VENV=$(LIGHT) $(BIN)/pytest
	$(MAKE) test-oldest

test-oldest: $(OLDEST)/bin/.installed
	$(OLDEST)/bin/pytest -p no:cacheprovider $(OLDEST_TESTS)

test-light: install $(LIGHT)/bin/.installed
	CAE_RAY_LIGHT_VENV=$(LIGHT) $(BIN)/pytest tests/test_light_install.py

bench: install
	$(BIN)/python benchmarks/quality.py --parts mnist smalln
	$(BIN)/python benchmarks/paper_mnist.py
	$(BIN)/python benchmarks/madelon.py
	$(BIN)/python benchmarks/throughput.py --parts a b c

clean:
	rm -rf $(VENV) $(OLDEST) $(LIGHT) .pytest_cache .mypy_cache .ruff_cache site
