"""End to end on CPU for the query-based and single-stage heads: tools/train.py trains DINO, Mask2Former
(COCO panoptic, COCO instance, ADE20K) and RetinaNet with ConvNeXt V2-atto on the synthetic sets, and the
runs are scored with mmdet's and mmseg's own metrics (CocoPanopticMetric's PQ, CocoMetric's AP, IoUMetric).

Each run uses the real config, shrunk and written out as a config file for the tools (atto backbone without
pretrained weights, 96-pixel images, fewer queries and transformer layers, a short constant-lr schedule).
The default suite trains each head for two iterations and checks the evaluation; the ``heavy`` cases train
DINO and Mask2Former panoptic long enough that they must clear a learning threshold:
``python -m pytest -m heavy tests/engine/test_heads_e2e.py`` (8.5 minutes measured on the shared 2-core machine;
each run is single-threaded).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from cvx2_backbone.datasets import make_ade_shapes, make_coco_panoptic_shapes, make_coco_shapes
from cvx2_backbone.engine import load_config

from tests.helpers.training import metrics_of, run_tool

pytest.importorskip("mmdet")
pytest.importorskip("panopticapi", reason="COCO panoptic needs panopticapi: pip install --no-deps panopticapi-lite")

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs/convnextv2"
DINO = CONFIGS / "dino-4scale_convnextv2-tiny-in1k_8xb2-12e_coco.py"
M2F_PANOPTIC = CONFIGS / "mask2former_convnextv2-tiny-in1k_8xb2-lsj-50e_coco-panoptic.py"
M2F_INSTANCE = CONFIGS / "mask2former_convnextv2-tiny-in1k_8xb2-lsj-50e_coco.py"
M2F_ADE = CONFIGS / "mask2former_convnextv2-tiny-in1k_8xb2-160k_ade20k-512x512.py"
RETINANET = CONFIGS / "retinanet_convnextv2-atto-in1k_fpn_1x_coco.py"
SIZE = 96
ATTO = [40, 80, 160, 320]
TEST_META = ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")


# --- shrinking the real configs ------------------------------------------------------------------

def _atto(**extra: Any) -> dict[str, Any]:
    return dict(arch="atto", init_cfg=None, drop_path_rate=0.0, **extra)


def _loaders(info: dict[str, Any], batch_size: int, dataset) -> dict[str, Any]:
    """Train/val/test dataloaders on the synthetic set, in this process (no workers)."""
    loaders = {f"{split}_dataloader": dict(num_workers=0, persistent_workers=False,
                                           dataset=dict(data_root=info["data_root"], **dataset(part)))
               for split, part in (("train", "train"), ("val", "val"), ("test", "val"))}
    loaders["train_dataloader"]["batch_size"] = batch_size
    return loaders


def _detection_data(info: dict[str, Any], batch_size: int, annotations: dict, panoptic: bool = False) -> dict:
    """Dataloaders for a COCO (instance or panoptic) set: plain resize to SIZE, flips for training."""
    load = (dict(type="LoadPanopticAnnotations", with_bbox=True, with_mask=True, with_seg=True) if panoptic
            else dict(type="LoadAnnotations", **annotations))
    train = [dict(type="LoadImageFromFile"), load, dict(type="RandomFlip", prob=0.5),
             dict(type="Resize", scale=(SIZE, SIZE), keep_ratio=True), dict(type="PackDetInputs")]
    test = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(SIZE, SIZE), keep_ratio=True), load,
            dict(type="PackDetInputs", meta_keys=TEST_META)]
    meta = {key: list(info[key]) for key in ("classes", "thing_classes", "stuff_classes") if key in info}

    def dataset(part: str) -> dict:
        prefix = dict(img=info[f"{part}_img_prefix"])
        if panoptic:
            prefix["seg"] = info[f"{part}_seg_prefix"]
        return dict(ann_file=info[f"{part}_ann_file"], data_prefix=prefix, metainfo=meta,
                    pipeline=train if part == "train" else test)
    return _loaders(info, batch_size, dataset)


def _epochs(epochs: int) -> dict[str, Any]:
    return dict(train_cfg=dict(max_epochs=epochs, val_interval=epochs),
                default_hooks=dict(logger=dict(interval=1), checkpoint=dict(interval=epochs)))


def _iterations(iters: int) -> dict[str, Any]:
    return dict(train_cfg=dict(max_iters=iters, val_interval=iters, dynamic_intervals=None),
                default_hooks=dict(logger=dict(interval=1), checkpoint=dict(interval=iters)))


def dino_config(info: dict[str, Any], epochs: int, batch_size: int, lr: float) -> tuple[dict, dict]:
    """DINO 4-scale with 30 queries, one encoder and two decoder layers."""
    model = dict(backbone=_atto(), neck=dict(in_channels=ATTO[1:]), num_queries=30,
                 encoder=dict(num_layers=1, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=512))),
                 decoder=dict(num_layers=2, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=512))),
                 dn_cfg=dict(group_cfg=dict(num_dn_queries=20)), bbox_head=dict(num_classes=len(info["classes"])),
                 test_cfg=dict(max_per_img=30))
    metric = dict(type="CocoMetric", ann_file=info["val_ann_path"], metric="bbox")
    merged = dict(model=model, optim_wrapper=dict(optimizer=dict(lr=lr)), **_epochs(epochs),
                  **_detection_data(info, batch_size, dict(with_bbox=True)))
    return merged, dict(val_evaluator=metric, test_evaluator=metric)


def _mask2former_head(things: int, stuff: int) -> dict[str, Any]:
    return dict(in_channels=ATTO, num_things_classes=things, num_stuff_classes=stuff, num_queries=20,
                pixel_decoder=dict(encoder=dict(num_layers=1)), transformer_decoder=dict(num_layers=3),
                loss_cls=dict(class_weight=[1.0] * (things + stuff) + [0.1]))


def mask2former_coco_config(info: dict[str, Any], iters: int, batch_size: int, lr: float) -> tuple[dict, dict]:
    """Mask2Former (panoptic when ``info`` has stuff classes) with 20 queries, 3 decoder layers, 1024 points."""
    panoptic = "stuff_classes" in info
    things, stuff = len(info.get("thing_classes", info["classes"])), len(info.get("stuff_classes", ()))
    pad = dict(type="BatchFixedSizePad", size=(SIZE, SIZE), img_pad_value=0, pad_mask=True, mask_pad_value=0,
               pad_seg=panoptic, **(dict(seg_pad_value=255) if panoptic else {}))
    model = dict(data_preprocessor=dict(batch_augments=[pad]), backbone=_atto(),
                 panoptic_head=_mask2former_head(things, stuff),
                 panoptic_fusion_head=dict(num_things_classes=things, num_stuff_classes=stuff),
                 train_cfg=dict(num_points=1024), test_cfg=dict(max_per_image=20))
    metric = (dict(type="CocoPanopticMetric", ann_file=info["val_ann_path"], seg_prefix=info["val_seg_path"])
              if panoptic else dict(type="CocoMetric", ann_file=info["val_ann_path"], metric=["bbox", "segm"]))
    merged = dict(model=model, optim_wrapper=dict(optimizer=dict(lr=lr)), **_iterations(iters),
                  **_detection_data(info, batch_size, dict(with_bbox=True, with_mask=True), panoptic))
    return merged, dict(val_evaluator=metric, test_evaluator=metric,
                        param_scheduler=[dict(type="ConstantLR", factor=1.0, by_epoch=False)])


def mask2former_ade_config(info: dict[str, Any], iters: int, batch_size: int, lr: float) -> tuple[dict, dict]:
    """mmseg's Mask2Former on the synthetic ADE20K-format set, with the COCO runs' smaller head."""
    classes = len(info["classes"])
    head = _mask2former_head(0, 0)
    head.pop("num_things_classes"), head.pop("num_stuff_classes")
    head.update(num_classes=classes, loss_cls=dict(class_weight=[1.0] * classes + [0.1]),
                train_cfg=dict(num_points=1024))
    train = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
             dict(type="RandomFlip", prob=0.5), dict(type="PackSegInputs")]
    test = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
            dict(type="PackSegInputs")]

    def dataset(part: str) -> dict:
        return dict(type="BaseSegDataset", img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=True,
                    data_prefix=dict(img_path=info[f"{part}_img_prefix"], seg_map_path=info[f"{part}_seg_prefix"]),
                    metainfo=dict(classes=list(info["classes"])), pipeline=train if part == "train" else test)
    merged = dict(model=dict(data_preprocessor=dict(size=(SIZE, SIZE)), backbone=_atto(), decode_head=head),
                  optim_wrapper=dict(optimizer=dict(lr=lr)), **_iterations(iters),
                  **_loaders(info, batch_size, dataset))
    return merged, dict(param_scheduler=[dict(type="ConstantLR", factor=1.0, by_epoch=False)])


def retinanet_config(info: dict[str, Any], epochs: int, batch_size: int, lr: float) -> tuple[dict, dict]:
    """RetinaNet with the atto backbone as configured (stages 2-4 and two extra FPN levels)."""
    metric = dict(type="CocoMetric", ann_file=info["val_ann_path"], metric="bbox")
    model = dict(backbone=_atto(), bbox_head=dict(num_classes=len(info["classes"])),
                 test_cfg=dict(score_thr=0.0))  # an untrained RetinaNet scores below mmdet's 0.05 everywhere
    merged = dict(model=model,
                  optim_wrapper=dict(type="OptimWrapper", optimizer=dict(lr=lr)), **_epochs(epochs),
                  **_detection_data(info, batch_size, dict(with_bbox=True)))
    return merged, dict(val_evaluator=metric, test_evaluator=metric,
                        param_scheduler=[dict(type="ConstantLR", factor=1.0, by_epoch=True)])


def derived_config(config: Path, merged: dict, replaced: dict, folder: Path) -> Path:
    """Write ``config`` with ``merged`` merged in and top-level keys ``replaced``, as a file the tools run."""
    cfg = load_config(config)
    cfg.merge_from_dict(merged)
    for key, value in replaced.items():
        cfg[key] = value
    cfg.randomness = dict(seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{config.stem}_atto.py"
    cfg.dump(str(path))
    return path


def train_and_validate(config: Path, work: Path) -> tuple[dict[str, float], list[float]]:
    """Run tools/train.py on one thread; return the metrics of its final validation and the logged losses."""
    run_tool(sys.executable, "tools/train.py", str(config), "--work-dir", str(work), threads=1)
    (scalars,) = work.glob("*/vis_data/scalars.json")  # mmengine's LocalVisBackend: one JSON object per log
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    (metrics,) = [r for r in records if "loss" not in r and "lr" not in r]
    return metrics, losses


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> dict[str, Any]:
    return make_coco_shapes(tmp_path_factory.mktemp("coco"), num_train=4, num_val=2, image_size=SIZE)


@pytest.fixture(scope="module")
def panoptic(tmp_path_factory) -> dict[str, Any]:
    return make_coco_panoptic_shapes(tmp_path_factory.mktemp("panoptic"), num_train=4, num_val=2, image_size=SIZE)


def _checkpoint_iter(work: Path, name: str) -> int:
    return torch.load(work / name, map_location="cpu")["meta"]["iter"]


def test_synthetic_panoptic_set_matches_its_pngs(tmp_path):
    import numpy as np
    from mmdet.datasets import CocoPanopticDataset
    from panopticapi.utils import rgb2id
    from PIL import Image

    info = make_coco_panoptic_shapes(tmp_path / "pan", num_train=2, num_val=3, image_size=(80, 64), seed=1)
    ann = json.loads(Path(info["val_ann_path"]).read_text())
    assert [(c["name"], c["isthing"]) for c in ann["categories"]] == [
        ("circle", 1), ("rectangle", 1), ("triangle", 1), ("sky", 0), ("ground", 0)]
    for image in ann["annotations"]:
        ids = rgb2id(np.array(Image.open(Path(info["val_seg_path"]) / image["file_name"]).convert("RGB")))
        assert ids.shape == (64, 80) and (ids[:2] == 0).all() and (ids[:, -2:] == 0).all()  # the void frame
        assert sorted(np.unique(ids[ids > 0]).tolist()) == sorted(s["id"] for s in image["segments_info"])
        for segment in image["segments_info"]:
            rows, cols = np.nonzero(ids == segment["id"])
            assert segment["area"] == rows.size
            assert segment["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1]
        assert {s["category_id"] for s in image["segments_info"]} >= {4, 5}  # sky and ground in every image

    # mmdet reads it: things get labels 0..2, stuff 3..4, in the order of `classes`
    meta = {key: list(info[key]) for key in ("classes", "thing_classes", "stuff_classes")}
    dataset = CocoPanopticDataset(data_root=info["data_root"], ann_file=info["val_ann_file"], metainfo=meta,
                                  data_prefix=dict(img=info["val_img_prefix"], seg=info["val_seg_prefix"]),
                                  test_mode=True, pipeline=[])
    segments = [seg for i in range(len(dataset)) for seg in dataset.get_data_info(i)["segments_info"]]
    assert {seg["category"] for seg in segments if seg["is_thing"]} <= {0, 1, 2}
    assert {seg["category"] for seg in segments if not seg["is_thing"]} == {3, 4}
    again = make_coco_panoptic_shapes(tmp_path / "again", num_train=2, num_val=3, image_size=(80, 64), seed=1)
    assert Path(again["val_ann_path"]).read_text() == Path(info["val_ann_path"]).read_text()


# --- two iterations each, scored by the task's own metric ----------------------------------------

def test_dino_trains_and_reports_coco_box_ap(coco, tmp_path):
    config = derived_config(DINO, *dino_config(coco, epochs=1, batch_size=2, lr=1e-4), tmp_path)
    metrics, losses = train_and_validate(config, tmp_path / "work")
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert {"coco/bbox_mAP", "coco/bbox_mAP_50"} <= set(metrics)
    assert _checkpoint_iter(tmp_path / "work", "epoch_1.pth") == 2


def test_mask2former_panoptic_trains_and_reports_pq(panoptic, tmp_path):
    config = derived_config(M2F_PANOPTIC, *mask2former_coco_config(panoptic, iters=2, batch_size=2, lr=1e-4),
                            tmp_path)
    metrics, losses = train_and_validate(config, tmp_path / "work")
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert {"coco_panoptic/PQ", "coco_panoptic/PQ_th", "coco_panoptic/PQ_st"} <= set(metrics)


def test_mask2former_instance_trains_and_reports_mask_ap(coco, tmp_path):
    config = derived_config(M2F_INSTANCE, *mask2former_coco_config(coco, iters=2, batch_size=2, lr=1e-4), tmp_path)
    metrics, losses = train_and_validate(config, tmp_path / "work")
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert {"coco/bbox_mAP", "coco/segm_mAP"} <= set(metrics)


def test_mask2former_ade20k_trains_and_reports_miou(tmp_path):
    ade = make_ade_shapes(tmp_path / "ade", num_train=4, num_val=2, image_size=SIZE)
    config = derived_config(M2F_ADE, *mask2former_ade_config(ade, iters=2, batch_size=2, lr=1e-4), tmp_path)
    metrics, losses = train_and_validate(config, tmp_path / "work")
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)  # AMP on the CPU where it runs natively
    assert {"mIoU", "mAcc", "aAcc"} <= set(metrics)


def test_retinanet_trains_and_reports_coco_box_ap(coco, tmp_path):
    config = derived_config(RETINANET, *retinanet_config(coco, epochs=1, batch_size=2, lr=1e-4), tmp_path)
    metrics, losses = train_and_validate(config, tmp_path / "work")
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert {"coco/bbox_mAP", "coco/bbox_mAP_50"} <= set(metrics)


# --- long enough to learn (heavy) ----------------------------------------------------------------

@pytest.mark.heavy
def test_dino_learns_the_shapes(tmp_path):
    """160 iterations on 64 images: box AP50 reached 0.63 when this threshold was set."""
    data = make_coco_shapes(tmp_path / "coco", num_train=64, num_val=16, image_size=SIZE, seed=0)
    config = derived_config(DINO, *dino_config(data, epochs=10, batch_size=4, lr=4e-4), tmp_path)
    metrics, losses = train_and_validate(config, tmp_path / "work")
    assert metrics["coco/bbox_mAP_50"] > 0.3 and metrics["coco/bbox_mAP"] > 0.1, metrics
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])


@pytest.mark.heavy
def test_mask2former_panoptic_learns_things_and_stuff(tmp_path):
    """160 iterations on 64 images: PQ 75.6 (things 61.2, stuff 97.3) when these thresholds were set."""
    data = make_coco_panoptic_shapes(tmp_path / "panoptic", num_train=64, num_val=16, image_size=SIZE, seed=0)
    config = derived_config(M2F_PANOPTIC, *mask2former_coco_config(data, iters=160, batch_size=4, lr=4e-4), tmp_path)
    work = tmp_path / "work"
    metrics, losses = train_and_validate(config, work)
    assert metrics["coco_panoptic/PQ"] > 45 and metrics["coco_panoptic/PQ_th"] > 30, metrics
    assert metrics["coco_panoptic/PQ_st"] > 60, metrics
    # tools/test.py on the final checkpoint scores exactly what the run's last validation scored
    output = run_tool(sys.executable, "tools/test.py", str(config), str(work / "iter_160.pth"),
                      "--work-dir", str(tmp_path / "test"), threads=1)
    tested = metrics_of(output)
    assert {k: tested[k] for k in metrics if k.startswith("coco_panoptic/")} == {
        k: v for k, v in metrics.items() if k.startswith("coco_panoptic/")}
