"""Two-process DDP training on CPU (gloo) through tools/dist_train.sh, as on a laptop without GPU."""
from __future__ import annotations

import socket
import sys

import pytest

from test_train_e2e import SEG_CONFIG, as_cli, run_tool, seg_options

from cvx2_backbone.datasets import make_ade_shapes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_ddp_trains_upernet(tmp_path, monkeypatch):
    info = make_ade_shapes(tmp_path / "ade", num_train=4, num_val=2, image_size=128)
    work = tmp_path / "work"
    options = {**seg_options(info), "train_cfg.max_iters": 2, "train_cfg.val_interval": 2,
               "default_hooks.checkpoint.interval": 2}
    monkeypatch.setenv("PYTHON", sys.executable)
    monkeypatch.setenv("PORT", str(_free_port()))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the CPU (gloo) path even on a GPU machine
    output = run_tool("bash", "tools/dist_train.sh", str(SEG_CONFIG), "2", "--work-dir", str(work),
                      *as_cli(options))

    # mmengine's environment report: launched by torchrun, 2 processes in the (gloo) group
    assert "Distributed launcher: pytorch" in output and "Distributed training: True" in output
    assert "GPU number: 2" in output  # mmengine's name for the world size
    assert "dist_cfg: {'backend': 'gloo'}" in output and "type='cvx2_backbone.DeviceAwareDDP'" in output
    assert output.count("no CUDA: SyncBN layers run as BN") == 2  # once per rank
    assert "Iter(train) [2/2]" in output and "mIoU" in output  # trained, then validated
    assert (work / "iter_2.pth").is_file()
