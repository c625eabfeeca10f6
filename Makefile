# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
# The report's browser test drives Debian's chromium (Playwright's own browser download is not
# reachable from every machine); `make test` installs the package when it is missing.
CHROMIUM := /usr/bin/chromium
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint docs install bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,docs,bench,duckdb,dagster,cluster,xgboost,s3test,browser,airflow]"
	touch $@

install: $(BIN)/.installed

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

test: lint docs $(CHROMIUM)
	$(BIN)/pytest

bench: install
	$(BIN)/python benchmarks/quality.py --parts mnist smalln
	$(BIN)/python benchmarks/paper_mnist.py
	$(BIN)/python benchmarks/madelon.py
	$(BIN)/python benchmarks/throughput.py --parts a b c

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
