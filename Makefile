# Two commands: `make test` and `make demo`. Both create .venv and install pinned dependencies first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	# without its torchvision dependency: PyPI's torchvision is a CUDA build that breaks beside the CPU torch
	$(BIN)/python -m pip install -q --no-deps onnx2torch==1.5.15
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# The astronaut from scikit-image: landmark PNGs, then out/demo.mp4 (the bundled model saying a sentence through
# eSpeak NG, then a built-in motion script); offline, a few minutes on 2 CPU cores. Path printed last.
demo: $(STAMP)
	$(BIN)/python -m reenact.demo --out out

bench: $(STAMP)
	$(BIN)/python benchmarks/landmarks.py

clean:
	rm -rf $(VENV) out .pytest_cache
