# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv on first use. torch is installed first and pinned: on these machines
# `torch==2.13.0` is a local CPU wheel, whereas an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.cnnkit-installed
# Datasets: $CNNKIT_DATA if set, else the shared folder beside the checkout when there is one
# (cnnkit then falls back to ~/.cache/cnnkit and the download mirrors).
CNNKIT_DATA ?= $(abspath $(wildcard ../shared/datasets))
export CNNKIT_DATA

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,test,pretrained,analysis,serve]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cnnkit train lenet5 --data mnist --recipe recipes/lenet5_mnist.yaml --out runs/demo-lenet5 --resume auto
	@echo "Next: 'cnnkit serve' and open http://127.0.0.1:8000 to draw digits for runs/demo-lenet5, classify photos, train live and explore the zoo; or 'cnnkit predict runs/demo-lenet5 docs/digits/7_mnist_test_0000.png' (one MNIST digit per class in docs/digits/), 'cnnkit models', 'cnnkit --help'."

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) runs .pytest_cache
