# One virtual environment, built on first use; torch is the CPU build unless TORCH_SPEC says otherwise.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
SHARED ?= ../shared
DATA ?= $(SHARED)/data/allsides/articles.parquet

.PHONY: install run lint test test-fast bench style clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[all,minilm,test]'
	touch $@

install: $(VENV)/.installed

# The nightly score-corpus flow on Prefect's ephemeral local server: trains models/latest first if absent
# (`allsides-batch nightly`, the same job as `python -m flows`).
run: install
	DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 $(PY) -m allsides_batch nightly --corpus $(DATA)

lint: install
	$(VENV)/bin/ruff check allsides_batch flows tests bench deploy

# The suite in TEST_WORKERS processes (pytest-xdist), a test file per process, one math thread each: a
# Prefect server test waiting on its workers leaves the other process the CPU (9 min here, 12-16 in one process).
TEST_WORKERS ?= 2
test: lint
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=20

test-fast: lint
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) bench/train_bench.py
	$(PY) bench/score_bench.py --n 128 --max-length 512
	$(PY) bench/score_memory.py

style: install
	$(VENV)/bin/ruff check --fix allsides_batch flows tests bench deploy

clean:
	rm -rf runs .pytest_cache
