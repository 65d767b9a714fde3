"""`cvx2 demo`: the config it builds, and a shortened run that must learn."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("mmdet")
pytest.importorskip("pycocotools")

from cvx2_backbone.cli.main import main  # noqa: E402
from cvx2_backbone.cli.demo_job import QUICK, DemoSettings, build_config  # noqa: E402
from tests.helpers.checkpoints import load_with_torch_defaults  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> dict:
    """One `cvx2 demo --quick` run, shared by the tests of its outputs."""
    out = tmp_path_factory.mktemp("quick") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--quick", "-o", str(out)])
    val_images = sorted((out / "data" / "val2017").glob("*.jpg"))
    return {"out": out, "code": code, "printed": printed.getvalue(), "config": out / "config.py",
            "checkpoint": out / "detector.pth", "classes": ("circle", "rectangle", "triangle"),
            "image": val_images[0], "num_val": len(val_images)}


@pytest.mark.slow
def test_quick_demo_learns_and_writes_its_pictures(quick_demo):
    out, printed = quick_demo["out"], quick_demo["printed"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert quick_demo["code"] == 0, printed
    assert metrics["metrics"]["coco/bbox_mAP"] > 0.1 and metrics["metrics"]["coco/segm_mAP"] > 0.1
    assert metrics["settings"]["iters"] == QUICK.iters and f"{out}" in printed
    for name in ("predictions.png", "loss_curve.png", "feature_pyramid.png"):
        with Image.open(out / name) as picture:
            assert picture.width > 200 and picture.height > 100, name
    with Image.open(out / "feature_pyramid.png") as picture:
        assert picture.width > 5 * picture.height  # the image and five FPN levels side by side
    assert (out / "config.py").exists() and (out / "detector.pth").exists()


@pytest.mark.slow
def test_demo_outputs_work_in_mmdet_apis_with_the_demo_class_names(quick_demo, tmp_path):
    from mmdet.apis import DetInferencer, inference_detector, init_detector

    config, checkpoint, classes = str(quick_demo["config"]), str(quick_demo["checkpoint"]), quick_demo["classes"]
    assert load_with_torch_defaults(checkpoint)["meta"]["dataset_meta"]["classes"] == classes
    model = init_detector(config, checkpoint, device="cpu")
    assert model.dataset_meta["classes"] == classes  # not COCO's names
    result = inference_detector(model, str(quick_demo["image"]))
    assert (result.pred_instances.scores > 0.5).any()  # the trained detector finds the shapes

    inferencer = DetInferencer(model=config, weights=checkpoint, device="cpu", show_progress=False)
    assert inferencer.model.dataset_meta["classes"] == classes
    assert inferencer.visualizer.dataset_meta["classes"] == classes  # the names drawn on every picture
    output = inferencer(str(quick_demo["image"]), out_dir=str(tmp_path / "inferred"), return_vis=True)
    assert (tmp_path / "inferred" / "vis" / quick_demo["image"].name).is_file()
    assert output["visualization"][0].shape[:2] == Image.open(quick_demo["image"]).size[::-1]


def _mmdet_tool(*args: str, cwd: Path) -> str:
    """Run a script of mmdet's packaged tools (what `mim run mmdet` runs) unmodified, in a fresh interpreter."""
    import mmdet
    script = Path(mmdet.__file__).parent / ".mim" / "tools" / args[0]
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(script), *args[1:]], cwd=cwd, env=dict(env, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args[0]} failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_mmdet_own_tools_take_the_demo_outputs_unmodified(quick_demo, tmp_path):
    config, checkpoint = str(quick_demo["config"]), str(quick_demo["checkpoint"])
    shown = tmp_path / "shown"
    _mmdet_tool("test.py", config, checkpoint, "--work-dir", str(tmp_path / "test"), "--show-dir", str(shown),
                cwd=tmp_path)
    assert len(list(shown.glob("*.jpg"))) == quick_demo["num_val"]  # one drawn prediction per test image

    browsed = tmp_path / "browsed"
    _mmdet_tool("analysis_tools/browse_dataset.py", config, "--output-dir", str(browsed), "--not-show",
                cwd=tmp_path)
    annotations = json.loads((quick_demo["out"] / "data/annotations/instances_train2017.json").read_text())
    assert len(list(browsed.glob("*.jpg"))) == len({a["image_id"] for a in annotations["annotations"]})

    # further training, with checkpoints switched on from the command line
    work = tmp_path / "train"
    _mmdet_tool("train.py", config, "--work-dir", str(work), "--cfg-options", "default_hooks.checkpoint.interval=2",
                "train_cfg.max_iters=4", "train_cfg.val_interval=100", cwd=tmp_path)
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_2.pth", "iter_4.pth"]
    saved = load_with_torch_defaults(work / "iter_4.pth")  # plain types: no allowance needed
    assert saved["meta"]["dataset_meta"]["classes"] == quick_demo["classes"] and saved["meta"]["iter"] == 4


@pytest.mark.slow
def test_mmdet_dataloader_benchmark_takes_the_demo_config(quick_demo, tmp_path):
    pytest.importorskip("psutil")  # mmdet's benchmark needs it (the test extra installs it)
    _mmdet_tool("analysis_tools/benchmark.py", str(quick_demo["config"]), "--task", "dataloader", "--max-iter", "6",
                "--log-interval", "2", "--num-warmup", "1", "--work-dir", str(tmp_path / "bench"), cwd=tmp_path)
    log = (tmp_path / "bench" / "benchmark.log").read_text()
    assert "Overall fps" in log  # the benchmark's own result line: it loaded the demo's test set


@pytest.mark.heavy
def test_full_demo_learns_the_shapes(tmp_path):
    """The README's `make demo` run (about 2 minutes on 2 cores): it must learn the shapes well, not just a little."""
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["coco/bbox_mAP"] > 0.5 and metrics["coco/segm_mAP"] > 0.5


def _fake_run(folder, complete=True):
    """An earlier demo run's files (what run_demo writes, in miniature)."""
    from cvx2_backbone.cli.demo_job import MARKER

    (folder / "data" / "train2017").mkdir(parents=True)
    (folder / "data" / "train2017" / "000000.jpg").write_bytes(b"jpeg")
    (folder / MARKER).write_text("{}")
    (folder / "config.py").write_text("# config")
    (folder / "20261121_101010").mkdir()  # mmengine's log folder of that run
    if complete:
        (folder / "metrics.json").write_text(json.dumps({"metrics": {}, "settings": {"iters": 300}}))


def test_demo_keeps_earlier_runs_or_replaces_them_only_when_asked(tmp_path):
    from cvx2_backbone.cli.demo_job import prepare_output
    from cvx2_backbone.utils.usage import UsageError

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
    from cvx2_backbone.cli import demo_job as demo
    from cvx2_backbone.cli.demo_job import DEFAULT_OUTPUT, QUICK_OUTPUT, DemoResult

    chosen = []

    def record(output, settings, overwrite=False):
        chosen.append((output, settings.iters, overwrite))
        metrics = {"coco/bbox_mAP": 0.5, "coco/segm_mAP": 0.5, "coco/bbox_mAP_50": 0.9, "coco/segm_mAP_50": 0.9}
        return DemoResult(metrics, 1.0, 2.0)

    monkeypatch.setattr(demo, "run_demo", record)
    assert main(["demo", "--quick"]) == 0 and main(["demo", "--overwrite"]) == 0
    assert chosen == [(QUICK_OUTPUT, QUICK.iters, False), (DEFAULT_OUTPUT, DemoSettings().iters, True)]
    assert QUICK_OUTPUT != DEFAULT_OUTPUT
