"""mmdet's own tools on what this project's tools/train.py writes (issue 28 items 1-3): the config in the work dir
works in browse_dataset.py and (as the README writes it) benchmark.py; a strategy that mmdet's train.py would ignore
stops the run with the fix; mmdet's test.py runs on an FSDP2 run's config with its consolidated checkpoint."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

mmdet = pytest.importorskip("mmdet")
pytestmark = pytest.mark.slow  # tools in fresh interpreters (tens of seconds each on 2 cores)

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(mmdet.__file__).parent / ".mim" / "tools"
ONE_ITER = ["--cfg-options", "train_cfg.max_iters=1", "default_hooks.checkpoint.interval=1"]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """tools/train.py, one iteration of the quick demo's config (its 12 validation images: 6 test batches)."""
    from cvx2_backbone.cli.demo_job import QUICK, build_config
    from cvx2_backbone.datasets import make_coco_shapes

    root = tmp_path_factory.mktemp("written")
    data = make_coco_shapes(root / "data", num_train=2, num_val=QUICK.num_val, image_size=64)
    build_config(data, QUICK, root / "unused").dump(str(root / "demo.py"))
    done = _run("tools/train.py", str(root / "demo.py"), "--work-dir", str(root / "work"), *ONE_ITER)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_browse_dataset_takes_the_written_config(trained, tmp_path):
    """Before: `TypeError: Visualizer.get_instance() missing 1 required positional argument: 'name'`."""
    written = trained / "work" / "demo.py"
    done = _run(str(TOOLS / "analysis_tools/browse_dataset.py"), str(written), "--output-dir", str(tmp_path / "b"),
                "--not-show", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "b").glob("*.jpg"))) == 2  # both training images drawn


def test_the_readme_benchmark_command_runs_on_the_demo(trained, tmp_path):
    """Before (mmdet's defaults on the 6-batch loader): ZeroDivisionError."""
    done = _run(str(TOOLS / "analysis_tools/benchmark.py"), str(trained / "work" / "demo.py"), "--task", "dataloader",
                "--max-iter", "5", "--num-warmup", "1", "--work-dir", str(tmp_path / "bench"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Overall fps:" in done.stdout + done.stderr


def test_mmdet_train_refuses_to_ignore_an_fsdp2_strategy(trained, tmp_path):
    """Before: mmdet's train.py built mmengine's Runner, which never reads `strategy`, and trained unsharded."""
    work = tmp_path / "work"
    done = _run(str(TOOLS / "train.py"), str(trained / "demo.py"), "--work-dir", str(work), "--cfg-options",
                "strategy.type=cvx2_backbone.FSDP2Strategy", "train_cfg.max_iters=1", cwd=tmp_path)
    assert done.returncode != 0
    assert "the config asks for strategy cvx2_backbone.FSDP2Strategy, but Runner ignores it (only mmengine's " \
           "FlexibleRunner runs strategies): add --cfg-options runner_type=FlexibleRunner" in done.stderr
    assert not list(work.glob("*.pth"))


def test_mmdet_test_runs_an_fsdp2_config_with_its_consolidated_checkpoint(trained, tmp_path):
    """Before: `FSDP2Strategy shards over a process group: start training with tools/dist_train.sh` in a test run."""
    config = tmp_path / "fsdp2.py"  # as this project's tools/train.py writes an FSDP2 run's config
    config.write_text((trained / "work" / "demo.py").read_text()
                      + "\nrunner_type = 'FlexibleRunner'\nstrategy = dict(type='cvx2_backbone.FSDP2Strategy')\n")
    consolidated = tmp_path / "iter_1.pth_consolidated.pth"  # what FSDP2Strategy writes: state_dict and meta
    saved = torch.load(trained / "work" / "iter_1.pth", map_location="cpu", weights_only=True)
    torch.save({"state_dict": saved["state_dict"], "meta": saved["meta"]}, consolidated)
    metrics, scores = {}, {}
    for name, tested in (("fsdp2", config), ("plain", trained / "work" / "demo.py")):
        out = tmp_path / f"{name}.pkl"
        done = _run(str(TOOLS / "test.py"), str(tested), str(consolidated), "--work-dir", str(tmp_path / name),
                    "--out", str(out), "--cfg-options", "model.test_cfg.rcnn.score_thr=0", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        (result,) = (tmp_path / name).glob("*/*.json")  # mmengine's scalars of the test run
        metrics[name] = json.loads(result.read_text().splitlines()[-1])
        with open(out, "rb") as handle:
            scores[name] = [sample["pred_instances"]["scores"] for sample in pickle.load(handle)]
    assert "coco/bbox_mAP" in metrics["fsdp2"] and "coco/segm_mAP" in metrics["fsdp2"]
    # the same weights evaluated (an unloaded, randomly initialised model would score otherwise): the consolidated
    # file loads in the FSDP2 run's config as in the plain one
    assert len(scores["fsdp2"]) == 12 and all(len(s) for s in scores["fsdp2"])
    assert all(torch.equal(a, b) for a, b in zip(scores["fsdp2"], scores["plain"]))
