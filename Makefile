# fedleak: make demo | make test | make bench | make lint
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint venv clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 or run 'make PY=python3 ...'"; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first: the CPU build on local disk; anything that needs torch before it pulls a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,flower]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	FLWR_TELEMETRY_ENABLED=0 $(BIN)/fedleak demo --out runs/demo

test: $(STAMP)
	OMP_NUM_THREADS=1 FLWR_TELEMETRY_ENABLED=0 $(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/python bench/fl.py
	@for b in bench/inversion.py bench/mia.py bench/defenses.py bench/text.py; do test -f $$b && $(BIN)/python $$b || true; done

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) runs
