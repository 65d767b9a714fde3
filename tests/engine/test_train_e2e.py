"""End to end on CPU: tools/train.py trains Mask R-CNN and UperNet with ConvNeXt V2-atto on the
synthetic COCO/ADE20K sets, --resume continues the run, tools/test.py reports COCO AP and mIoU, and
both must have learned the shapes (thresholds far above what an untrained model scores).

The real configs are used, shrunk through --cfg-options (small images and heads, a short schedule of
the same form, no pretrained download).
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from cvx2_backbone.datasets import make_ade_shapes, make_coco_shapes
from cvx2_backbone.engine import load_config
from tests.helpers.training import (CPU_BF16, DET_CONFIG, SEG_CONFIG, as_cli, det_options, free_port, metrics_of,
                                    run_tool, seg_options, short_schedule, small_det_heads)

def _meta(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["meta"]  # the tools save plain types


DET_SIZE, SEG_SIZE = 96, 48


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> dict[str, Any]:
    return make_coco_shapes(tmp_path_factory.mktemp("coco"), num_train=32, num_val=8, image_size=DET_SIZE)


@pytest.fixture(scope="module")
def ade(tmp_path_factory) -> dict[str, Any]:
    return make_ade_shapes(tmp_path_factory.mktemp("ade"), num_train=32, num_val=16, image_size=SEG_SIZE,
                           max_shapes=6)


@pytest.mark.slow
def test_mask_rcnn_trains_resumes_past_a_truncated_checkpoint_and_learns_the_shapes(coco, tmp_path):
    work = tmp_path / "work"
    options = {**det_options(coco, DET_SIZE), **small_det_heads(), **short_schedule(2e-3, warmup=10),
               "train_dataloader.batch_size": 4, "train_cfg.val_interval": 100, "randomness.seed": 0,
               "param_scheduler.1.milestones": [6]}  # the 3x schedule's lr step, at epoch 6 of 8
    train = [sys.executable, "tools/train.py", str(DET_CONFIG), "--work-dir", str(work)]
    run_tool(*train, *as_cli({**options, "train_cfg.max_epochs": 2}))
    first, latest = work / "epoch_1.pth", work / "epoch_2.pth"
    assert _meta(first)["epoch"] == 1 and _meta(first)["iter"] == 8  # 32 images, batch 4
    assert (work / "last_checkpoint").read_text().strip() == str(latest)
    first_bytes = first.read_bytes()
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # killed while saving epoch 2

    output = run_tool(*train, "--resume", *as_cli({**options, "train_cfg.max_epochs": 8,
                                                    "default_hooks.checkpoint.interval": 4}))
    assert f"the checkpoint {latest} cannot be used (truncated or corrupt" in output
    assert f"resuming from {first}, the newest one that loads" in output
    assert "resumed epoch: 1, iter: 8" in output
    assert "Epoch(train) [1]" not in output and "Epoch(train) [2]" in output
    assert _meta(work / "epoch_8.pth")["iter"] == 64
    assert first.read_bytes() == first_bytes  # continued, not restarted

    out_file = tmp_path / "results.pkl"
    output = run_tool(sys.executable, "tools/test.py", str(DET_CONFIG), str(work / "epoch_8.pth"),
                      "--work-dir", str(tmp_path / "test"), "--out", str(out_file), *as_cli(options))
    metrics = metrics_of(output)
    # An untrained detector scores 0; 64 iterations give about 0.4 AP50 and 0.15 AP (box and mask).
    assert metrics["coco/bbox_mAP_50"] > 0.2 and metrics["coco/segm_mAP_50"] > 0.2, metrics
    assert metrics["coco/bbox_mAP"] > 0.05 and metrics["coco/segm_mAP"] > 0.05, metrics
    assert out_file.stat().st_size > 0


@pytest.mark.slow
def test_upernet_trains_resumes_and_learns_the_shapes(ade, tmp_path):
    work = tmp_path / "work"
    crop, stride = 2 * SEG_SIZE // 3, SEG_SIZE // 3  # slide inference over 2 x 2 windows
    options = {**seg_options(ade, SEG_SIZE), **short_schedule(2e-3, warmup=10), "param_scheduler.1.end": 100,
               "model.decode_head.channels": 128, "model.auxiliary_head.channels": 64,
               "model.test_cfg.crop_size": (crop, crop), "model.test_cfg.stride": (stride, stride),
               "train_dataloader.batch_size": 4, "train_cfg.val_interval": 1000, "randomness.seed": 0}
    train = [sys.executable, "tools/train.py", str(SEG_CONFIG), "--work-dir", str(work)]
    output = run_tool(*train, *as_cli({**options, "train_cfg.max_iters": 2, "default_hooks.checkpoint.interval": 2}))
    # the config's AMP on the CPU: bfloat16 autocast where the CPU runs it natively, else fp32
    assert ("bfloat16 autocast" if CPU_BF16 else "AMP is off, training in fp32") in output
    losses = [float(v) for v in re.findall(r"Iter\(train\) \[\s*\d+/2\].*? loss: (\S+)", output)]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)  # GRN under bfloat16: no NaN
    assert _meta(work / "iter_2.pth")["iter"] == 2

    # The rest in fp32 on every CPU, so that the learning threshold below means the same everywhere.
    resumed = {**options, "optim_wrapper.type": "OptimWrapper", "train_cfg.max_iters": 100}
    output = run_tool(*train, "--resume", str(work / "iter_2.pth"), *as_cli(resumed))
    assert "resumed epoch: 0, iter: 2" in output
    assert _meta(work / "iter_100.pth")["iter"] == 100

    predictions = tmp_path / "predictions"
    output = run_tool(sys.executable, "tools/test.py", str(SEG_CONFIG), str(work / "iter_100.pth"),
                      "--work-dir", str(tmp_path / "test"), "--out", str(predictions), *as_cli(options))
    metrics = metrics_of(output)
    # One class everywhere scores mAcc 25 (4 classes) and mIoU below 25; 100 iterations give about 45 and 35.
    assert metrics["mAcc"] > 33 and metrics["mIoU"] > 27, metrics
    assert len(list(predictions.glob("*.png"))) == 16  # one predicted mask per validation image


def test_synthetic_sets_match_their_annotations(tmp_path):
    import numpy as np
    from PIL import Image
    from pycocotools.coco import COCO

    coco = make_coco_shapes(tmp_path / "coco", num_train=3, num_val=2, image_size=(96, 64), seed=3)
    api = COCO(coco["val_ann_path"])
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == list(coco["classes"])
    assert api.getAnnIds()
    for ann in api.loadAnns(api.getAnnIds()):
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 64 and w > 0 and h > 0
        assert abs(api.annToMask(ann).sum() - ann["area"]) <= 0.15 * ann["area"] + 8  # polygon vs pixels
    again = make_coco_shapes(tmp_path / "again", num_train=3, num_val=2, image_size=(96, 64), seed=3)
    assert Path(again["val_ann_path"]).read_text() == Path(coco["val_ann_path"]).read_text()

    ade = make_ade_shapes(tmp_path / "ade", num_train=2, num_val=1, image_size=64, seed=0)
    masks = sorted((Path(ade["data_root"]) / ade["train_seg_prefix"]).glob("*.png"))
    images = sorted((Path(ade["data_root"]) / ade["train_img_prefix"]).glob("*.jpg"))
    assert [m.stem for m in masks] == [i.stem for i in images] and len(masks) == 2
    for path in masks:
        labels = np.array(Image.open(path))
        assert set(np.unique(labels)) <= set(range(len(ade["classes"]) + 1))  # 0 = unlabelled, k + 1 = class k
        assert labels[0].max() == 0 and labels[:, -1].max() == 0 and (labels == 1).any()

    with pytest.raises(ValueError, match="image_size"):
        make_coco_shapes(tmp_path / "tiny", image_size=16)
    with pytest.raises(ValueError, match="num_train"):
        make_ade_shapes(tmp_path / "empty", num_train=0)


# --- the engine's pieces, without subprocesses ----------------------------------------------------

@pytest.mark.parametrize("native_bf16", [True, False], ids=["bf16-cpu", "avx2-cpu"])
def test_cpu_adaptation_of_configs(monkeypatch, native_bf16):
    from cvx2_backbone.engine import adapt_to_cpu, device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "native_cpu_dtypes",
                        lambda: (torch.float32, torch.bfloat16) if native_bf16 else (torch.float32,))

    seg = load_config(SEG_CONFIG)
    assert seg.optim_wrapper.type == "AmpOptimWrapper" and seg.model.decode_head.norm_cfg.type == "SyncBN"
    adapt_to_cpu(seg, "pytorch")
    assert seg.optim_wrapper.type == ("cvx2_backbone.CPUAutocastOptimWrapper" if native_bf16 else "OptimWrapper")
    assert "dtype" not in seg.optim_wrapper and "loss_scale" not in seg.optim_wrapper
    assert "SyncBN" not in str(seg.model.to_dict()) and seg.model.decode_head.norm_cfg.type == "BN"
    assert seg.env_cfg.dist_cfg.backend == "gloo" and seg.model_wrapper_cfg.type == "cvx2_backbone.DeviceAwareDDP"

    det = load_config(DET_CONFIG)
    adapt_to_cpu(det, "none")
    assert det.optim_wrapper.type == "OptimWrapper"  # mmcv's CPU nms/roi_align take no bfloat16
    assert det.get("model_wrapper_cfg") is None and det.env_cfg.dist_cfg.backend == "nccl"

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    untouched = load_config(SEG_CONFIG)
    adapt_to_cpu(untouched, "pytorch")
    assert untouched.optim_wrapper.type == "AmpOptimWrapper" and untouched.get("model_wrapper_cfg") is None


def test_bfloat16_autocast_wrapper_runs_convnext_v2_without_nan():
    from mmengine.optim import build_optim_wrapper

    from cvx2_backbone import ConvNeXtV2
    model = ConvNeXtV2(arch=dict(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64]))
    wrapper = build_optim_wrapper(model, dict(type="cvx2_backbone.CPUAutocastOptimWrapper",
                                              optimizer=dict(type="AdamW", lr=1e-3)))
    with wrapper.optim_context(model):
        outputs = model(torch.randn(2, 3, 64, 64) * 1e3)  # large activations stress GRN's norm
        loss = sum(o.float().pow(2).mean() for o in outputs)
    assert outputs[0].dtype == torch.bfloat16 and torch.isfinite(loss)
    wrapper.update_params(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_train_arguments(tmp_path):
    from cvx2_backbone.engine.config import ConfigError, apply_train_args

    cfg = load_config(DET_CONFIG, {"optim_wrapper.type": "OptimWrapper"})
    apply_train_args(cfg, amp=True, auto_scale_lr=True, resume="auto")
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.loss_scale == "dynamic"
    assert cfg.auto_scale_lr.enable and cfg.auto_scale_lr.base_batch_size == 32
    assert cfg.resume is True and cfg.load_from is None
    checkpoint = tmp_path / "epoch_3.pth"
    checkpoint.write_bytes(b"")
    apply_train_args(cfg, resume=str(checkpoint))
    assert cfg.load_from == str(checkpoint)
    with pytest.raises(FileNotFoundError, match="--resume"):
        apply_train_args(cfg, resume=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="auto_scale_lr"):
        apply_train_args(load_config(DET_CONFIG, {"auto_scale_lr": None}), auto_scale_lr=True)
    apply_train_args(cfg, load_from=str(checkpoint))
    assert cfg.load_from == str(checkpoint) and cfg.resume is False
    with pytest.raises(ConfigError, match="exclude each other"):
        apply_train_args(cfg, resume="auto", load_from=str(checkpoint))


def test_config_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="configs/"):
        load_config(tmp_path / "nope.py")
    plain = tmp_path / "plain.py"
    plain.write_text("model = dict(type='Foo')\n")
    with pytest.raises(ValueError, match="default_scope"):
        load_config(plain)


def test_device_aware_ddp_drops_device_ids_on_cpu(monkeypatch):
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel

    from cvx2_backbone.engine import DeviceAwareDDP
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="device_ids"):
            MMDistributedDataParallel(module=torch.nn.Linear(2, 2), device_ids=[0])
        wrapped = DeviceAwareDDP(module=torch.nn.Linear(2, 2), device_ids=[0], broadcast_buffers=False)
        wrapped(torch.ones(1, 2)).sum().backward()
        assert wrapped.device_ids is None
    finally:
        dist.destroy_process_group()
