# `make demo` runs the project's main job, `make test` the test suite; both set up first
# whatever is still missing (see tools/setup_env.sh) and skip that step when nothing changed.
# CVX2_STACK=onedl picks the maintained forks of OpenMMLab (own environment .venv-onedl; README, "Two stacks").
STACK := $(or $(CVX2_STACK),upstream)
CONSTRAINTS := requirements/$(if $(filter onedl,$(STACK)),constraints-onedl.txt,constraints.txt)
VENV := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(if $(filter onedl,$(STACK)),.venv-onedl,.venv))
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cvx2-setup-stamp

.PHONY: setup demo test test-all bench setup-forks test-forks
setup: $(STAMP)

$(STAMP): setup.py pyproject.toml $(CONSTRAINTS) tools/setup_env.sh
	CVX2_STACK=$(STACK) bash tools/setup_env.sh
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

# The maintained forks (onedl-mmengine, onedl-mmcv, onedl-mmdetection, onedl-mmsegmentation) in their own environment,
# .venv-onedl (CVX2_STACK=onedl tools/setup_env.sh), and the tests that touch the OpenMMLab stack run there
# (`CVX2_STACK=onedl make test` runs the whole suite there).
FORK_TESTS := tests/host/test_configs.py tests/host/test_mm_integration.py tests/host/test_upstream_checkpoints.py \
	tests/host/test_upstream_inferencers.py tests/host/test_mmengine_fork_loader.py tests/cli/test_demo.py \
	tests/engine/test_lr_decay.py tests/engine/test_train_e2e.py tests/engine/test_heads_e2e.py \
	tests/engine/test_fsdp2.py tests/engine/test_fsdp2_configs.py tests/engine/test_fsdp2_runner.py \
	tests/deploy/test_models.py

setup-forks:
	env -u VIRTUAL_ENV $(MAKE) --no-print-directory CVX2_STACK=onedl setup

test-forks: setup-forks
	.venv-onedl/bin/python -m pytest $(FORK_TESTS)
