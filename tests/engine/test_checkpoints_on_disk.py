"""tools/train.py and the checkpoints on disk (issue 28, items 5 and 6): a checkpoint appears whole or not at all,
also when the process is SIGKILLed while writing it; a run that does not resume never overwrites an earlier run's
checkpoints in the same work dir."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")
pytestmark = pytest.mark.slow  # whole training runs in fresh interpreters (about a minute each on 2 cores)

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--cfg-options", "train_cfg.max_iters=3", "train_cfg.val_interval=100", "default_hooks.checkpoint.interval=1",
        "default_hooks.checkpoint.max_keep_ckpts=-1", "train_dataloader.batch_size=1"]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    """The demo's config on a two-image synthetic set (a few seconds per iteration on a CPU)."""
    from cvx2_backbone.cli.demo_job import QUICK, build_config
    from cvx2_backbone.datasets import make_coco_shapes

    root = tmp_path_factory.mktemp("checkpoints")
    data = make_coco_shapes(root / "data", num_train=2, num_val=2, image_size=64)
    build_config(data, QUICK, root / "unused").dump(str(root / "config.py"))
    return root / "config.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _loads(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # as every upstream tool reads it


def test_sigkill_while_saving_leaves_no_half_checkpoint_and_resume_continues(config, tmp_path):
    work = tmp_path / "work"
    killed = _run("-m", "tests.helpers.kill_while_writing", "iter_2.pth", "tools/train.py", str(config),
                  "--work-dir", str(work), *FAST)
    assert killed.returncode == -9, killed.stderr[-3000:]  # died while iter_2.pth was half written
    assert not (work / "iter_2.pth").exists()  # before: a truncated iter_2.pth under its final name
    assert _loads(work / "iter_1.pth")["meta"]["iter"] == 1
    assert Path((work / "last_checkpoint").read_text().strip()).name == "iter_1.pth"
    staging = list(work.glob(".iter_2.pth.tmp*"))
    assert len(staging) == 1 and staging[0].stat().st_size > 0  # the half file, under a name no tool reads

    resumed = _run("tools/train.py", str(config), "--work-dir", str(work), "--resume", *FAST)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "holds no checkpoint" not in resumed.stdout + resumed.stderr
    assert _loads(work / "iter_3.pth")["meta"]["iter"] == 3 and _loads(work / "iter_2.pth")["meta"]["iter"] == 2
    assert not list(work.glob(".*.tmp*"))  # the killed run's staging file is gone


def test_a_second_run_in_the_same_work_dir_refuses_to_overwrite_the_first(config, tmp_path):
    work = tmp_path / "work"
    first = _run("tools/train.py", str(config), "--work-dir", str(work), *FAST[:2], "train_cfg.max_iters=1",
                 *FAST[3:])
    assert first.returncode == 0, first.stderr[-3000:]
    saved = (work / "iter_1.pth").read_bytes()
    before = sorted(p.name for p in work.iterdir())

    again = _run("tools/train.py", str(config), "--work-dir", str(work), *FAST)
    assert again.returncode == 2, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    assert f"tools/train.py: error: {work} holds the checkpoints of an earlier run (iter_1.pth, last_checkpoint) " \
           "that this run would overwrite; continue that run with --resume, or pass another --work-dir" in again.stderr
    assert (work / "iter_1.pth").read_bytes() == saved
    assert sorted(p.name for p in work.iterdir()) == before  # no timestamped folder, no config copy
