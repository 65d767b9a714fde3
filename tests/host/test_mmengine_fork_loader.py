"""The maintained fork's checkpoint loader, closed by importing cvx2_backbone; its resume, made to replay.

onedl-mmengine's ``mmengine.runner.checkpoint._safe_torch_load`` loads under ``torch.serialization.safe_globals``
with its own allow-list and, when torch refuses the pickle, loads it again with ``weights_only=False``. Upstream
mmengine has no such function. The stand-in below behaves like the fork's (same signature, same two steps), so the
closing is tested on either stack; on the fork lane the real module is checked as well.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from cvx2_backbone.utils import checkpoint_globals
from cvx2_backbone.utils.unsafe_pickle import UNSAFE_PICKLE_ENV
from tests.helpers.checkpoints import torch_defaults_only

ROOT = Path(__file__).resolve().parents[2]


class _RunsCommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _fork_like_module() -> types.ModuleType:
    """What onedl-mmengine 0.10.12's loader does, written from its behaviour: a safe load inside a per-load
    ``safe_globals`` block with the host's allow-list (which overlaps ours: HistoryBuffer, ndarray), then, on
    refusal, a full unpickling."""
    module = types.ModuleType("fork_like_checkpoint")

    def get_torch_safe_globals():
        return [HistoryBuffer, np.ndarray, np.dtype]

    def _safe_torch_load(file, map_location=None, weights_only=None):
        if weights_only is not None:
            return torch.load(file, map_location=map_location, weights_only=weights_only)
        try:
            with torch.serialization.safe_globals(get_torch_safe_globals()):
                return torch.load(file, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            return torch.load(file, map_location=map_location, weights_only=False)

    module.get_torch_safe_globals, module._safe_torch_load = get_torch_safe_globals, _safe_torch_load
    return module


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.delenv(UNSAFE_PICKLE_ENV, raising=False)
    buffer = HistoryBuffer()
    buffer.update(0.5)
    good, evil, marker = tmp_path / "good.pth", tmp_path / "evil.pth", tmp_path / "ran"
    torch.save({"hub": buffer, "w": torch.ones(2)}, good)
    torch.save({"w": torch.ones(2), "note": _RunsCommand(marker)}, evil)
    yield good, evil, marker
    checkpoint_globals.register()  # whatever a test's load took away from the process-wide allow-list


def test_the_stand_in_is_as_unsafe_as_the_fork(files):
    good, evil, marker = files
    fork = _fork_like_module()
    assert fork._safe_torch_load(str(evil))["w"].tolist() == [1.0, 1.0]
    assert marker.exists()  # the fallback ran the command
    with pytest.raises(pickle.UnpicklingError):  # and its block took HistoryBuffer off the process-wide list
        torch.load(good, weights_only=True)


def test_closing_refuses_commands_and_keeps_the_process_wide_allow_list(files):
    good, evil, marker = files
    fork = _fork_like_module()
    assert checkpoint_globals.close_unsafe_fallback(fork) is True
    assert fork._safe_torch_load.cvx2_closed and checkpoint_globals.close_unsafe_fallback(fork) is True  # once
    allowed = set(map(repr, torch.serialization.get_safe_globals()))

    assert fork._safe_torch_load(str(good))["hub"].mean() == 0.5
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed") as refused:
        fork._safe_torch_load(str(evil), map_location="cpu")
    assert UNSAFE_PICKLE_ENV in str(refused.value) and not marker.exists()

    assert set(map(repr, torch.serialization.get_safe_globals())) == allowed
    assert torch.load(good, weights_only=True)["hub"].mean() == 0.5  # HistoryBuffer still allowed
    with torch_defaults_only(), pytest.raises(pickle.UnpicklingError):
        fork._safe_torch_load(str(good))  # the host's own allow-list is used inside, nothing more
    assert fork._safe_torch_load(str(good), weights_only=True)["hub"].mean() == 0.5  # explicit choice passes through


def test_opting_in_loads_a_trusted_pickle_with_a_warning(files, monkeypatch):
    good, evil, marker = files
    fork = _fork_like_module()
    checkpoint_globals.close_unsafe_fallback(fork)
    monkeypatch.setenv(UNSAFE_PICKLE_ENV, "1")
    with pytest.warns(UserWarning, match="full unpickling"):
        assert fork._safe_torch_load(str(evil))["w"].tolist() == [1.0, 1.0]
    assert marker.exists()


def test_no_op_without_the_fork_loader():
    upstream_like = types.ModuleType("upstream_like_checkpoint")
    upstream_like.load_checkpoint = lambda *args: None
    assert checkpoint_globals.close_unsafe_fallback(upstream_like) is False
    assert sorted(vars(upstream_like)) == sorted(["__name__", "__doc__", "__package__", "__loader__", "__spec__",
                                                  "load_checkpoint"])


CHECK_REAL = """
import sys
import cvx2_backbone, torch
import mmengine.runner.checkpoint as checkpoint
load = getattr(checkpoint, '_safe_torch_load', None)
print('fork' if load is not None else 'upstream', getattr(load, 'cvx2_closed', False))
"""


def test_importing_the_package_closes_the_installed_mmengine_if_it_is_the_fork():
    """In a fresh process, importing cvx2_backbone before mmengine's runner closes the fork's loader; upstream
    mmengine has none."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHECK_REAL], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stack, closed = proc.stdout.split()
    from importlib.metadata import PackageNotFoundError, version
    try:
        version("onedl-mmengine")
        assert (stack, closed) == ("fork", "True")
    except PackageNotFoundError:
        assert (stack, closed) == ("upstream", "False")


class _SamplerSkippingIterator:
    """Like onedl-mmengine's ``_InfiniteDataloaderIterator``: ``skip_iter`` moves the sampler on without running
    the data pipeline; each fetched batch runs a random transform (one draw from numpy's global state)."""

    def __init__(self):
        self.position, self.draws = 0, []

    def __next__(self):
        self.position += 1
        self.draws.append(np.random.rand())
        return self.position

    def skip_iter(self, num_iters):
        self.position += num_iters


def _runner_with(iterator):
    """A runner with no hooks and no strategy (what the hook's other checks read) whose loop iterates ``iterator``."""
    return types.SimpleNamespace(train_loop=types.SimpleNamespace(dataloader_iterator=iterator), hooks=[], cfg={})


def test_resume_replays_the_skipped_batches_like_upstream():
    from cvx2_backbone.engine.hooks import PlainCheckpointHook

    np.random.seed(0)
    uninterrupted = [np.random.rand() for _ in range(3)]  # the transforms of batches 1-3

    for replay, expected_third in ((False, uninterrupted[0]), (True, uninterrupted[2])):
        np.random.seed(0)  # what the resumed run's randomness setting does
        iterator = _SamplerSkippingIterator()
        PlainCheckpointHook(replay_on_resume=replay).before_train(_runner_with(iterator))
        iterator.skip_iter(2)  # the loop resuming at iteration 2
        assert next(iterator) == 3  # the same batch either way ...
        assert iterator.draws[-1] == expected_third  # ... but only the replay gives it the uninterrupted transform

    upstream_like = types.SimpleNamespace(__next__=lambda: 1)  # no skip_iter: the loop replays by itself
    PlainCheckpointHook().before_train(_runner_with(upstream_like))
    assert not hasattr(upstream_like, "skip_iter")


def test_the_installed_mmengine_loader_refuses_commands_and_keeps_the_allow_list(files):
    """Through the installed mmengine's own loader (what init_detector, init_model and the Runner call), on either
    stack: a command-running pickle is refused without running, mmengine's format loads, and the process-wide
    allow-list is intact afterwards."""
    from mmengine.runner.checkpoint import _load_checkpoint

    good, evil, marker = files
    allowed = set(map(repr, torch.serialization.get_safe_globals()))
    assert _load_checkpoint(str(good), map_location="cpu")["hub"].mean() == 0.5
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        _load_checkpoint(str(evil), map_location="cpu")
    assert not marker.exists()
    assert set(map(repr, torch.serialization.get_safe_globals())) == allowed
    assert torch.load(good, weights_only=True)["hub"].mean() == 0.5
