"""A one-process torch.distributed group for tests that shard in this process (gloo on CPU, NCCL on a GPU)."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist


@pytest.fixture(name="process_group")
def one_process_group(request, monkeypatch):
    """World size 1 on ``request.param`` ('cpu': gloo, 'cuda': NCCL, TF32 off); yields the backend's name."""
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
