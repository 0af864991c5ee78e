# Two entry points: `make demo` (the main job) and `make test`. Each creates the
# virtual environment on first use and installs the Debian packages the tests use when
# they are missing and the user is root (scripts/system-packages.sh).
PYTHON ?= python3
VENV ?= .venv
# The PyTorch build to install first. The default pair is what torchvision needs;
# `make TORCH=torch==2.13.0 ...` takes a CPU-only build without torchvision, and
# `make TORCH=` lets pip resolve torch from pyproject.toml alone.
TORCH ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= vision,serve,faiss,tensorboard,dev
STAMP := $(VENV)/.installed

.PHONY: demo test env system-packages clean

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(if $(strip $(TORCH)),$(VENV)/bin/pip install $(TORCH))
	$(VENV)/bin/pip install -e '.[$(EXTRAS)]'
	touch $@

system-packages:
	sh scripts/system-packages.sh

demo: $(STAMP) system-packages
	$(VENV)/bin/order-embedding demo

# The linter and the type checker (settings in pyproject.toml) run before the tests: they take
# seconds, and a lint or type error fails the target before the slower suite starts.
test: $(STAMP) system-packages
	$(VENV)/bin/ruff check
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) demo
