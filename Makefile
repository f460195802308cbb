# autoresearch: one command each for set-up, tests, the demo and lint.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# A CUDA machine takes the default torch build; elsewhere the pinned release, which is the CPU
# build where the package index serves one (macOS; Linux indexes that carry CPU wheels). On Linux,
# the default index's torch bundles CUDA (several GB, and it runs on a CPU too): for the CPU-only
# build, point TORCH_INDEX at PyTorch's CPU wheel index (its install page gives the URL).
TORCH  := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")
TORCH_INDEX ?=

.PHONY: install test demo lint slurm-up slurm-down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "autoresearch needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) -V 2>&1): make PYTHON=python3.12 ..."; exit 1; }
	@echo "== setting up $(VENV): $(TORCH), then autoresearch and its dependencies (a few minutes, once)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/pytest -q

# The demo takes Hydra overrides in ARGS: make demo ARGS="campaign.budget.max_experiments=60".
# A stop (the controller's exit 3, or 130 for a second Ctrl-C) is the user's, said by the tool in
# its own closing lines: make adds no "*** [demo] Error 3", which read as a crash. At a terminal
# Ctrl-C reaches make too, which still ends with its own "Interrupt" line (exit 130). Any other
# failure keeps its exit code and make's line.
ARGS ?=
demo: export AUTORESEARCH_MAKE_TARGET = demo
demo: export AUTORESEARCH_MAKE_ARGS = $(ARGS)
demo: install
	$(info $(BIN)/python -m autoresearch +campaign=demo $(ARGS))
	@$(BIN)/python -m autoresearch +campaign=demo $(ARGS) || { code=$$?; [ $$code -eq 3 ] || [ $$code -eq 130 ] || exit $$code; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

slurm-up:
	bash slurm/local/up.sh

slurm-down:
	bash slurm/local/down.sh

clean:  # the environment and caches; campaigns (runs/) are left alone
	rm -rf $(VENV) .pytest_cache .ruff_cache
