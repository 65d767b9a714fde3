"""Shared test set-up.

mmengine resolves every ``mmdet::``/``mmseg::`` base config by first reading all of the package's
metafiles (about 400 YAML files, 0.5-1 s) to look the name up as a model, and only then falls back
to the plain path; a config with four such bases spends seconds there. The tests parse many
configs, so the metafile reads are cached for the session (the files do not change while it runs).
"""
from __future__ import annotations

import os
import socket
from functools import lru_cache

import mmengine.config.utils as _config_utils
import pytest
import torch
import torch.distributed as dist

_read_metafile = lru_cache(maxsize=None)(_config_utils.load)


def _load(file, *args, **kwargs):
    if args or kwargs or not isinstance(file, str):
        return _config_utils.load.__wrapped__(file, *args, **kwargs)
    return _read_metafile(file)


_load.__wrapped__ = _config_utils.load
_config_utils.load = _load


@pytest.fixture(autouse=True, scope="session")
def _torch_runtime_and_private_cache(tmp_path_factory):
    """Extraction tests run PyTorch unless they choose a runtime (``auto`` would export and time every random
    model), and nothing writes to the user's cache (tests/extraction/test_engine_choice.py covers the other
    runtimes)."""
    saved = {name: os.environ.get(name) for name in ("CVX2_RUNTIME", "CVX2_CACHE_DIR")}
    os.environ["CVX2_RUNTIME"] = "torch"
    os.environ["CVX2_CACHE_DIR"] = str(tmp_path_factory.mktemp("cvx2-cache"))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(name="process_group")
def one_process_group(request, monkeypatch):
    """A one-process torch.distributed group for tests that shard in this process: world size 1 on
    ``request.param`` ('cpu': gloo, 'cuda': NCCL, TF32 off); yields the backend's name."""
    device = getattr(request, "param", "cpu")
    if dist.is_initialized():
        pytest.skip("a process group exists already in this process")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                           LOCAL_RANK="0").items():
        monkeypatch.setenv(key, value)
    if device == "cuda":
        torch.cuda.set_device(0)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://")
    yield backend
    dist.destroy_process_group()
