# mediacore: `make run` brings up a live demo stream; `make test` installs what the tests
# need and runs them. Everything installs into .venv and node_modules inside the checkout.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.dev-installed
# pytest worker processes (pytest-xdist; 0: the suite in one process). On a machine with
# more cores than the CI's 2, TEST_WORKERS=2 runs the light modules beside the heavy ones
# (tests/conftest.py, unit_of_work); on 2 cores that broke browser playback and deadline
# tests in one of two runs, so the default stays one process.
TEST_WORKERS ?= 0

.PHONY: install run test test-fast system-deps bench lint clean

install: $(STAMP) mediacore/web/static/hls.min.js

$(STAMP): requirements.txt setup.py pyproject.toml cython_ext/*.pxd cython_ext/*.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -r requirements.txt
	$(PIP) install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	$(PY) setup.py -q build_ext --inplace
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

mediacore/web/static/hls.min.js: node_modules/.package-lock.json
	mkdir -p $(@D)
	cp node_modules/hls.js/dist/hls.min.js $@

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PIP) install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

run: install
	$(VENV)/bin/mediacore demo

test: system-deps install $(DEV_STAMP) lint
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS)

test-fast: install $(DEV_STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) -m "not slow"

bench: install
	$(VENV)/bin/mediacore-bench ingest

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy

clean:
	rm -rf $(VENV) node_modules build *.egg-info cython_ext/*.c cython_ext/*.so mediacore/web/static/hls.min.js
