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


def _fake_run(folder, complete=True):
    """An earlier demo run's files (what run_demo writes, in miniature)."""
    from cvx2_backbone.demo import MARKER

    (folder / "data" / "train2017").mkdir(parents=True)
    (folder / "data" / "train2017" / "000000.jpg").write_bytes(b"jpeg")
    (folder / MARKER).write_text("{}")
    (folder / "config.py").write_text("# config")
    (folder / "20261121_101010").mkdir()  # mmengine's log folder of that run
    if complete:
        (folder / "metrics.json").write_text(json.dumps({"metrics": {}, "settings": {"iters": 300}}))


def test_demo_keeps_earlier_runs_or_replaces_them_only_when_asked(tmp_path):
    from cvx2_backbone.demo import prepare_output
    from cvx2_backbone.usage import UsageError

    out = tmp_path / "demo"
    assert prepare_output(out) == (out, None)  # nothing there yet
    _fake_run(out)
    folder, note = prepare_output(out)
    assert folder == tmp_path / "demo-2" and "holds a complete earlier demo run, kept" in note
    assert (out / "metrics.json").exists() and (out / "data" / "train2017" / "000000.jpg").exists()
    _fake_run(tmp_path / "demo-2", complete=False)
    folder, note = prepare_output(out)
    assert folder == tmp_path / "demo-3"
    assert "an unfinished earlier demo run" in prepare_output(tmp_path / "demo-2")[1]

    (out / "mine.txt").write_text("not the demo's")
    folder, note = prepare_output(out, overwrite=True)
    assert folder == out and "replacing a complete earlier demo run" in note
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]  # only the demo's own files went

    other = tmp_path / "project"
    other.mkdir()
    (other / "config.py").write_text("# someone's config")
    with pytest.raises(UsageError, match="not from a demo run"):
        prepare_output(other, overwrite=True)
    assert (other / "config.py").exists()


def test_quick_demo_writes_to_its_own_folder(monkeypatch, tmp_path):
    from cvx2_backbone import demo
    from cvx2_backbone.demo import DEFAULT_OUTPUT, QUICK_OUTPUT, DemoResult

    chosen = []

    def record(output, settings, overwrite=False):
        chosen.append((output, settings.iters, overwrite))
        metrics = {"coco/bbox_mAP": 0.5, "coco/segm_mAP": 0.5, "coco/bbox_mAP_50": 0.9, "coco/segm_mAP_50": 0.9}
        return DemoResult(metrics, 1.0, 2.0)

    monkeypatch.setattr(demo, "run_demo", record)
    assert main(["demo", "--quick"]) == 0 and main(["demo", "--overwrite"]) == 0
    assert chosen == [(QUICK_OUTPUT, QUICK.iters, False), (DEFAULT_OUTPUT, DemoSettings().iters, True)]
    assert QUICK_OUTPUT != DEFAULT_OUTPUT
