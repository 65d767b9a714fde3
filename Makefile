# `make demo` runs the project's main job, `make test` the test suite; both set up first
# whatever is still missing (see tools/setup_env.sh) and skip that step when nothing changed.
VENV := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cvx2-setup-stamp

.PHONY: setup demo test test-all bench
setup: $(STAMP)

$(STAMP): setup.py pyproject.toml requirements/constraints.txt tools/setup_env.sh
	bash tools/setup_env.sh
	touch $@

demo: $(STAMP)
	$(VENV)/bin/cvx2 demo

# Lint, then the default suite (what CI runs); heavy cases (huge models, long runs) are left out.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

# Everything, heavy cases included.
test-all: $(STAMP)
	$(PY) -m pytest -m ""

bench: $(STAMP)
	$(VENV)/bin/cvx2 bench
