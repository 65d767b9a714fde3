"""`cvx2 demo`: the config it builds, and a shortened run that must learn."""
from __future__ import annotations

import json

import pytest
from PIL import Image

pytest.importorskip("mmdet")
pytest.importorskip("pycocotools")

from cvx2_backbone.cli import main  # noqa: E402
from cvx2_backbone.demo import QUICK, DemoSettings, build_config  # noqa: E402


def test_demo_config_is_mmdet_mask_rcnn_with_convnextv2_atto(tmp_path):
    import cvx2_backbone
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    data = {"data_root": str(tmp_path), "classes": ("circle", "rectangle", "triangle"),
            "train_ann_file": "a.json", "val_ann_file": "b.json", "train_img_prefix": "t/",
            "val_img_prefix": "v/", "val_ann_path": str(tmp_path / "b.json")}
    cfg = build_config(data, DemoSettings(), tmp_path)
    assert cfg.model.type == "MaskRCNN" and cfg.model.backbone.type == "cvx2_backbone.ConvNeXtV2"
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, cvx2_backbone.ConvNeXtV2) and model.backbone.dims == [40, 80, 160, 320]
    assert model.roi_head.bbox_head.num_classes == 3 and model.roi_head.mask_head.num_classes == 3
    assert cfg.val_evaluator.type == "CocoMetric" and cfg.val_evaluator.metric == ["bbox", "segm"]


def test_demo_detector_features_read_right_by_mmcv_roi_align(tmp_path):
    """mmcv's RoIAlign reads its input as contiguous NCHW: features in another memory layout give garbage
    RoI features, and the RoI heads cannot learn (the RPN, which uses no RoIAlign, still does)."""
    import torch
    from mmcv.ops import roi_align
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    data = {"data_root": str(tmp_path), "classes": ("a", "b", "c"), "train_ann_file": "a.json",
            "val_ann_file": "b.json", "train_img_prefix": "t/", "val_img_prefix": "v/", "val_ann_path": "b.json"}
    model = MODELS.build(build_config(data, QUICK, tmp_path).model).eval()
    rois = torch.tensor([[0.0, 4.0, 6.0, 60.0, 50.0], [0.0, 30.0, 20.0, 120.0, 100.0]])
    with torch.no_grad():
        features = model.extract_feat(torch.randn(1, 3, 128, 128))
        for fmap, stride in zip(features, (4, 8, 16, 32)):
            as_given = roi_align(fmap, rois, (7, 7), 1.0 / stride, 0, "avg", True)
            as_nchw = roi_align(fmap.contiguous(), rois, (7, 7), 1.0 / stride, 0, "avg", True)
            torch.testing.assert_close(as_given, as_nchw)


@pytest.mark.slow
def test_quick_demo_learns_and_writes_its_pictures(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--quick", "-o", str(out)])
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert code == 0, printed
    assert metrics["metrics"]["coco/bbox_mAP"] > 0.1 and metrics["metrics"]["coco/segm_mAP"] > 0.1
    assert metrics["settings"]["iters"] == QUICK.iters and f"{out}" in printed
    for name in ("predictions.png", "loss_curve.png", "feature_pyramid.png"):
        with Image.open(out / name) as picture:
            assert picture.width > 200 and picture.height > 100, name
    with Image.open(out / "feature_pyramid.png") as picture:
        assert picture.width > 5 * picture.height  # the image and five FPN levels side by side
    assert (out / "config.py").exists() and (out / "detector.pth").exists()


@pytest.mark.heavy
def test_full_demo_learns_the_shapes(tmp_path):
    """The README's `make demo` run (about 2 minutes on 2 cores): it must learn the shapes well, not just a little."""
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["coco/bbox_mAP"] > 0.5 and metrics["coco/segm_mAP"] > 0.5
