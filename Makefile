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

# The browser tests of `cnnkit serve` drive a Chromium: Debian's when it is there, else Playwright's own build.
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test install lint clean browser

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,test,pretrained,analysis,serve,tensorboard,export,detect,baselines]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cnnkit train lenet5 --data mnist --recipe recipes/lenet5_mnist.yaml --out runs/demo-lenet5 --resume auto
	@echo "Next: 'cnnkit serve' and open http://127.0.0.1:8000 to draw digits for runs/demo-lenet5, classify photos, train live and explore the zoo; or 'cnnkit predict runs/demo-lenet5 docs/digits/7.png' (one MNIST digit per class in docs/digits/), 'cnnkit models', 'cnnkit --help'."

# What the tests need beyond Python packages, installed exactly as CI does (.ci/run only calls `make test`):
# Debian/Ubuntu as root: apt's chromium; elsewhere Playwright's own download; if neither can run, one line
# saying what to run (the browser tests then fail with the same advice).
browser: $(STAMP)
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser tests (apt-get)"; \
	  apt-get update -qq && apt-get install -y -qq chromium; \
	elif $(PY) -m playwright install chromium; then :; \
	else echo "The browser tests need Chromium: run 'sudo apt-get install chromium' (Debian/Ubuntu) or '$(PY) -m playwright install chromium'."; \
	fi

# One pytest worker a core (pytest-xdist); `make test TEST_WORKERS=0` runs the suite in one process.
TEST_WORKERS ?= auto
test: $(STAMP) browser
	$(PY) -m pytest -q --durations=25 -n $(TEST_WORKERS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) runs .pytest_cache
