"""What the end-to-end training tests share: the real configs shrunk through --cfg-options, running the tools in a
fresh interpreter, reading their metrics, and a free local port for process groups."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

from cvx2_backbone.engine import load_config
from cvx2_backbone.ops.linear import native_cpu_dtypes

ROOT = Path(__file__).resolve().parents[2]
DET_CONFIG = ROOT / "configs/convnextv2/mask-rcnn_convnextv2-atto-fcmae_fpn_lsj-3x_coco.py"
SEG_CONFIG = ROOT / "configs/convnextv2/upernet_convnextv2-atto-fcmae_8xb2-160k_ade20k-512x512.py"
IMAGE_SIZE = 128
CPU_BF16 = torch.bfloat16 in native_cpu_dtypes()  # without it, CPU "AMP" trains in fp32 (engine/device.py)


def _format(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, tuple):
        return "(" + ",".join(_format(v) for v in value) + ")"
    if isinstance(value, list):
        return "[" + ",".join(_format(v) for v in value) + "]"
    return str(value)


def as_cli(options: dict[str, Any]) -> list[str]:
    """``--cfg-options`` arguments for a dict of dotted keys."""
    return ["--cfg-options", *(f"{key}={_format(value)}" for key, value in options.items())]


def _index(pipeline: list[dict], name: str) -> int:
    return next(i for i, step in enumerate(pipeline) if step["type"] == name)


def _loaders(cfg, options: dict[str, Any], per_split) -> None:
    for split in ("train", "val", "test"):
        loader = f"{split}_dataloader"
        options[f"{loader}.num_workers"] = 0
        options[f"{loader}.persistent_workers"] = False
        for key, value in per_split("train" if split == "train" else "val").items():
            options[f"{loader}.dataset.{key}"] = value
    options["train_dataloader.batch_size"] = 2
    options["default_hooks.logger.interval"] = 1


def det_options(info: dict[str, Any], size: int = IMAGE_SIZE) -> dict[str, Any]:
    """Point the Mask R-CNN config at the synthetic COCO set, at ``size`` pixels."""
    cfg = load_config(DET_CONFIG)
    options: dict[str, Any] = {
        "model.backbone.init_cfg": None,
        "model.roi_head.bbox_head.num_classes": len(info["classes"]),
        "model.roi_head.mask_head.num_classes": len(info["classes"]),
        "val_evaluator.ann_file": info["val_ann_path"],
        "test_evaluator.ann_file": info["val_ann_path"],
    }
    _loaders(cfg, options, lambda split: {
        "data_root": info["data_root"], "ann_file": info[f"{split}_ann_file"],
        "data_prefix.img": info[f"{split}_img_prefix"], "metainfo.classes": list(info["classes"])})
    train = cfg.train_dataloader.dataset.pipeline
    options[f"train_dataloader.dataset.pipeline.{_index(train, 'RandomResize')}.scale"] = (size, size)
    options[f"train_dataloader.dataset.pipeline.{_index(train, 'RandomCrop')}.crop_size"] = (size, size)
    for loader in ("val_dataloader", "test_dataloader"):
        index = _index(cfg[loader].dataset.pipeline, "Resize")
        options[f"{loader}.dataset.pipeline.{index}.scale"] = (size, size)
    return options


def seg_options(info: dict[str, Any], size: int = IMAGE_SIZE) -> dict[str, Any]:
    """Point the UperNet config at the synthetic ADE20K set, at ``size`` pixels."""
    cfg = load_config(SEG_CONFIG)
    options: dict[str, Any] = {
        "model.backbone.init_cfg": None,
        "model.decode_head.num_classes": len(info["classes"]),
        "model.auxiliary_head.num_classes": len(info["classes"]),
        "model.data_preprocessor.size": (size, size),
    }
    _loaders(cfg, options, lambda split: {
        "type": "BaseSegDataset", "data_root": info["data_root"], "img_suffix": ".jpg", "seg_map_suffix": ".png",
        "reduce_zero_label": True, "data_prefix.img_path": info[f"{split}_img_prefix"],
        "data_prefix.seg_map_path": info[f"{split}_seg_prefix"], "metainfo.classes": list(info["classes"])})
    train = cfg.train_dataloader.dataset.pipeline
    options[f"train_dataloader.dataset.pipeline.{_index(train, 'RandomResize')}.scale"] = (2 * size, size)
    options[f"train_dataloader.dataset.pipeline.{_index(train, 'RandomCrop')}.crop_size"] = (size, size)
    for loader in ("val_dataloader", "test_dataloader"):
        index = _index(cfg[loader].dataset.pipeline, "Resize")
        options[f"{loader}.dataset.pipeline.{index}.scale"] = (2 * size, size)
    return options


def short_schedule(lr: float = 1e-3, warmup: int = 2) -> dict[str, Any]:
    """The config's schedule, shortened: its linear warm-up over ``warmup`` iterations, at base lr ``lr``."""
    return {"optim_wrapper.optimizer.lr": lr, "param_scheduler.0.end": warmup}


def small_det_heads(channels: int = 64) -> dict[str, Any]:
    """Mask R-CNN's neck and heads at ``channels`` wide, with fewer proposals (the demo's sizes): fast on a CPU."""
    roi = "model.roi_head"
    return {"model.neck.out_channels": channels, "model.rpn_head.in_channels": channels,
            "model.rpn_head.feat_channels": channels, f"{roi}.bbox_roi_extractor.out_channels": channels,
            f"{roi}.mask_roi_extractor.out_channels": channels, f"{roi}.bbox_head.in_channels": channels,
            f"{roi}.bbox_head.fc_out_channels": 4 * channels, f"{roi}.mask_head.in_channels": channels,
            f"{roi}.mask_head.conv_out_channels": channels, "model.train_cfg.rcnn.sampler.num": 64,
            "model.test_cfg.rpn.nms_pre": 300, "model.test_cfg.rpn.max_per_img": 100}


def run_tool(*args: str, timeout: float = 900, threads: int = 2) -> str:
    """Run a tools/ script (or any command) in a fresh interpreter; return its combined output.

    The checkout is on the path, so configs can import test helpers (``tests.helpers.rank_snapshots``).
    """
    # Threads set here, whatever earlier in-process runs left in os.environ (mmengine's Runner sets MKL_NUM_THREADS=1
    # for multi-worker loaders; with it the Mask R-CNN run below learned to AP50 0.13 instead of about 0.4).
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args[:3])} ... failed ({proc.returncode}):\n{output[-6000:]}"
    return output


def metrics_of(output: str) -> dict[str, float]:
    line = next(line for line in output.splitlines() if line.startswith("metrics: "))
    return json.loads(line[len("metrics: "):])




def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
