"""OpenMMLab's package manager runs this package's tools: `mim train cvx2_backbone CONFIG` from the editable install
that tools/setup_env.sh makes (mim looks in <site-packages>/cvx2_backbone/.mim, as it does for a wheel)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from tests.helpers.fcmae import CPU_CONFIG, fcmae_images
from tests.helpers.training import as_cli


def test_mim_train_finds_the_config_and_tool_of_the_editable_install(tmp_path):
    images = fcmae_images(tmp_path / "images")
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the package as installed, not the checkout
    env["OMP_NUM_THREADS"] = "1"
    command = [str(Path(sys.executable).with_name("mim")), "train", "cvx2_backbone", CPU_CONFIG.name,  # by name
               "--work-dir", str(work), *as_cli({
                   "train_dataloader.dataset.data_root": str(images), "train_dataloader.batch_size": 2,
                   "train_dataloader.num_workers": 0, "train_dataloader.dataset.pipeline.1.size": 64,
                   "train_cfg.max_iters": 2, "default_hooks.checkpoint.interval": 2})]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    saved = torch.load(work / "iter_2.pth", map_location="cpu", weights_only=True)  # a plain checkpoint too
    assert saved["meta"]["iter"] == 2 and "mask_token" in saved["state_dict"]
