# medidiff: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: install demo test bench lint docs clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/python -m medidiff.demo --out $(OUT)/demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m pytest -q -m slow
	$(BIN)/python -m benchmarks.run_all

lint: install
	$(BIN)/ruff check medidiff tests benchmarks slicer tools docs/*.py
	$(BIN)/ruff format --check medidiff tests benchmarks slicer tools docs/*.py
	$(BIN)/mypy

docs: install
	$(BIN)/python -m docs.gen_cli_reference
	$(BIN)/python -m docs.gen_api
	$(BIN)/python -m docs.gen_troubleshooting
	$(BIN)/mkdocs build -q

clean:
	rm -rf $(VENV) $(OUT) site
