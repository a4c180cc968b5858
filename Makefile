# Set-up is part of every target: a fresh clone needs only `make run` (PAPER defaults to the paper in examples/) or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The paper shipped in examples/ (MIT), so `make run` works on a fresh clone.
EXAMPLE_PAPER := examples/fashion-mnist-xiao2017.pdf
PAPER ?= $(EXAMPLE_PAPER)
# On the example paper, `make run` is the researcher's path with no LLM (docs/no-llm.md): the bundled spec and the
# bundled logistic-regression code, every review approved, to the report. Another PAPER gets the plain main job.
ifeq ($(PAPER),$(EXAMPLE_PAPER))
RUN_ARGS ?= --no-llm --spec examples/fashion_mnist_logreg/spec.md --code examples/fashion_mnist_logreg --auto-approve
endif
# Where datasets are looked up (with /usr/share/datasets): yours, else the shared data folder beside the clone.
REPLICATE_DATA ?= $(abspath $(wildcard ../shared/data))
PYTEST_ARGS ?=

.PHONY: install run test lint bench

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# constraints.txt pins every package, so pip does not backtrack and torch stays the 2.13.0 CPU wheel.
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=1 REPLICATE_DATA="$(REPLICATE_DATA)" $(BIN)/replicate $(PAPER) $(RUN_ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check agent retrieval mlexp tests benchmarks examples
	# [tool.mypy] in pyproject.toml names the packages it checks (agent, retrieval, mlexp).
	$(BIN)/mypy
