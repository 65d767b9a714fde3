"""Two-process DDP training on CPU (gloo) through tools/dist_train.sh, as on a laptop without GPU."""
from __future__ import annotations

import sys

import pytest
import torch

from tests.helpers.training import free_port, SEG_CONFIG, as_cli, run_tool, seg_options, short_schedule

from cvx2_backbone.datasets import make_ade_shapes



@pytest.mark.slow
def test_two_process_cpu_ddp_trains_upernet(tmp_path, monkeypatch):
    info = make_ade_shapes(tmp_path / "ade", num_train=4, num_val=2, image_size=128)
    work = tmp_path / "work"
    options = {**seg_options(info), **short_schedule(), "train_cfg.max_iters": 2, "train_cfg.val_interval": 2,
               "default_hooks.checkpoint.interval": 2, "model.backbone.drop_path_rate": 0.0}
    config = tmp_path / "upernet_with_snapshots.py"  # the real config, plus a hook that saves every rank's parameters
    config.write_text(f"_base_ = [{str(SEG_CONFIG)!r}]\n"
                      "custom_imports = dict(imports=['cvx2_backbone', 'tests.helpers.rank_snapshots'],\n"
                      "                      allow_failed_imports=False)\n"
                      "custom_hooks = [dict(type='RankParameterSnapshots')]\n")
    monkeypatch.setenv("PYTHON", sys.executable)
    monkeypatch.setenv("PORT", str(free_port()))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the CPU (gloo) path even on a GPU machine
    output = run_tool("bash", "tools/dist_train.sh", str(config), "2", "--work-dir", str(work),
                      *as_cli(options))

    # mmengine's environment report: launched by torchrun, 2 processes in the (gloo) group
    assert "Distributed launcher: pytorch" in output and "Distributed training: True" in output
    assert "GPU number: 2" in output  # mmengine's name for the world size
    assert "dist_cfg: {'backend': 'gloo'}" in output and "type='cvx2_backbone.DeviceAwareDDP'" in output
    assert output.count("no CUDA: SyncBN layers run as BN") == 2  # once per rank
    assert "Iter(train) [2/2]" in output and "mIoU" in output  # trained, then validated
    assert (work / "iter_2.pth").is_file()

    # The ranks saw different images, yet end with the same parameters: the gradients were all-reduced.
    start, end = ({rank: torch.load(work / f"params_{when}_rank{rank}.pth") for rank in (0, 1)}
                  for when in ("start", "end"))
    assert start[0].keys() == end[1].keys()
    for name in start[0]:
        assert torch.equal(start[0][name], start[1][name]), f"{name} differs across ranks before training"
        assert torch.equal(end[0][name], end[1][name]), f"{name} differs across ranks after training"
    changed = [name for name in start[0] if not torch.equal(start[0][name], end[0][name])]
    assert len(changed) == len(start[0]), sorted(set(start[0]) - set(changed))  # every parameter was trained
