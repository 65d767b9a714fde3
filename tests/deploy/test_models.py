"""Whole models through mmdeploy to ONNX Runtime: the demo's Mask R-CNN and an atto UperNet, exported with
mmdeploy's own deploy configs, must predict what PyTorch predicts on the demo's synthetic images.

Tolerances (per image): every PyTorch detection scoring >= 0.05 has a deployed partner with the same label, every
box coordinate within 1 px, every mask IoU > 0.99, no extra deployed detection, scores within 1e-4; COCO box and
mask AP identical. Segmentation: identical label maps (no pixel differs) and identical mIoU.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")
pytest.importorskip("onnxruntime")
pytest.importorskip("mmdeploy")

from cvx2_backbone.datasets import make_ade_shapes, make_coco_shapes  # noqa: E402
from cvx2_backbone.deploy import (DETECTION_DEPLOY_CONFIG, SEGMENTATION_DEPLOY_CONFIG, DetectionParity,  # noqa: E402
                                  build_deployed_model, build_pytorch_model, compare_instances, deploy_config,
                                  export_onnx, label_map_difference, load_configs, run_both, task_processor)

ROOT = Path(__file__).resolve().parents[2]
SEG_CONFIG = ROOT / "configs/convnextv2/upernet_convnextv2-atto-fcmae_8xb2-160k_ade20k-512x512.py"
SCORE_THR, BOX_PX, MASK_IOU, SCORE_TOL = 0.05, 1.0, 0.99, 1e-4


def _randomise_grn(model: torch.nn.Module, seed: int) -> None:
    """GRN starts as the identity (gamma = beta = 0); random values make the exported GRN graph do work."""
    from cvx2_backbone.models.convnext import GRN

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for grn in (m for m in model.modules() if isinstance(m, GRN)):
            grn.gamma.copy_(torch.randn(grn.gamma.shape, generator=generator) * 0.5)
            grn.beta.copy_(torch.randn(grn.beta.shape, generator=generator) * 0.1)


def _save_random_model(cfg, scope: str, path: Path, seed: int = 0) -> Path:
    from mmengine.registry import MODELS, init_default_scope

    import cvx2_backbone  # noqa: F401  (registers the backbone)

    init_default_scope(scope)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    _randomise_grn(model, seed)
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def assert_same_detections(run, score_thr: float = SCORE_THR) -> DetectionParity:
    total = DetectionParity()
    for reference, deployed in zip(run.reference, run.deployed):
        parity = compare_instances(reference.pred_instances, deployed.pred_instances, score_thr)
        assert parity.within(BOX_PX, MASK_IOU), (reference.img_path, parity)
        assert parity.max_score_error <= SCORE_TOL, (reference.img_path, parity)
        total = total.merge(parity)
    for key in ("coco/bbox_mAP", "coco/segm_mAP", "coco/bbox_mAP_50", "coco/segm_mAP_50"):
        assert run.deployed_metrics[key] == run.reference_metrics[key], key
    return total


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """The demo's Mask R-CNN (random weights) on two synthetic images, exported once at batch 1."""
    from mmengine.config import Config

    from cvx2_backbone.cli.demo_job import QUICK, build_config

    work = tmp_path_factory.mktemp("deploy_det")
    data = make_coco_shapes(work / "data", num_train=1, num_val=2, image_size=128, seed=0, max_shapes=4)
    cfg = build_config(data, QUICK, work)
    if "test_pipeline" not in cfg:  # mmdeploy's own tools read it; the demo's config may not have one
        cfg.test_pipeline = cfg.test_dataloader.dataset.pipeline
    cfg.dump(str(work / "config.py"))
    cfg = Config.fromfile(str(work / "config.py"))
    checkpoint = _save_random_model(cfg, "mmdet", work / "model.pth")
    image = Path(data["data_root"]) / data["val_img_prefix"] / "000000.jpg"
    deploy = deploy_config(DETECTION_DEPLOY_CONFIG)
    onnx_file = export_onnx(deploy, work / "config.py", checkpoint, image, work / "onnx")
    return {"config": work / "config.py", "checkpoint": checkpoint, "onnx": onnx_file, "deploy": deploy,
            "image": image}


def test_mask_rcnn_through_mmdeploy_matches_pytorch(detector):
    import onnx

    graph = onnx.load(str(detector["onnx"]), load_external_data=False).graph
    ops = {node.op_type for node in graph.node}
    assert {"RoiAlign", "NonMaxSuppression", "ReduceL2"} <= ops  # mmdeploy's post-processing; GRN's norm
    assert [o.name for o in graph.output] == ["dets", "labels", "masks"]

    processor = task_processor(detector["deploy"], detector["config"])
    reference = build_pytorch_model(processor, detector["checkpoint"])
    deployed = build_deployed_model(processor, detector["onnx"])
    run = run_both(processor.model_cfg, reference, deployed)  # the demo's val loader: batch 2, exported at 1
    assert len(run.reference) == 2
    total = assert_same_detections(run)
    assert total.matched >= 50  # random weights: many overlapping detections of every class, a hard case for NMS


def torch2onnx_spawned(image: Path, work_dir: Path, deploy: Path, config: Path, checkpoint: Path) -> Path:
    """mmdeploy's ``torch2onnx`` in a process started with the spawn method, as its ``tools/deploy.py`` runs it
    (nothing of this package is imported there but what the model config's ``custom_imports`` imports)."""
    from mmdeploy.apis import torch2onnx

    process = torch.multiprocessing.get_context("spawn").Process(
        target=torch2onnx, args=(str(image), str(work_dir), "end2end.onnx", str(deploy), str(config), str(checkpoint)),
        kwargs=dict(device="cpu"))
    process.start()
    process.join()
    assert process.exitcode == 0, f"torch2onnx failed in the spawned process (exit code {process.exitcode})"
    return work_dir / "end2end.onnx"


def upstream_processor(deploy: Path, config: Path):
    """mmdeploy's own task processor, from mmdeploy's own config loading (no help from this package)."""
    from mmdeploy.apis.utils import build_task_processor
    from mmdeploy.utils import load_config

    deploy_cfg, model_cfg = load_config(str(deploy), str(config))
    return build_task_processor(model_cfg, deploy_cfg, "cpu")


def test_mask_rcnn_through_mmdeploys_own_calls_equals_pytorch(detector, tmp_path):
    """deploy.py's route: torch2onnx in a spawned process, then mmdeploy's task processor runs the ONNX Runtime
    model; it equals PyTorch as exactly as the package's own export (the same graph)."""
    import collections

    import onnx

    onnx_file = torch2onnx_spawned(detector["image"], tmp_path, detector["deploy"], detector["config"],
                                   detector["checkpoint"])

    def op_counts(path: Path) -> collections.Counter:
        return collections.Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)

    assert op_counts(onnx_file) == op_counts(detector["onnx"])
    processor = upstream_processor(detector["deploy"], detector["config"])
    reference = processor.build_pytorch_model(str(detector["checkpoint"]))
    deployed = processor.build_backend_model([str(onnx_file)])
    run = run_both(processor.model_cfg, reference, deployed)
    assert len(run.reference) == 2
    assert assert_exact_detections(run).matched >= 50


def assert_exact_detections(run) -> DetectionParity:
    """The upstream route's bar: same detections and labels, boxes within 1e-3 px, every mask IoU 1.0, same AP."""
    total = DetectionParity()
    for ref, dep in zip(run.reference, run.deployed):
        parity = compare_instances(ref.pred_instances, dep.pred_instances, SCORE_THR)
        assert parity.missing == parity.extra == 0, (ref.img_path, parity)  # same detections, same labels
        assert parity.max_box_error <= 1e-3 and parity.min_mask_iou == 1.0, (ref.img_path, parity)
        assert parity.max_score_error <= SCORE_TOL, (ref.img_path, parity)
        total = total.merge(parity)
    for key in ("coco/bbox_mAP", "coco/segm_mAP"):
        assert run.deployed_metrics[key] == run.reference_metrics[key], key
    return total


@pytest.fixture(scope="module")
def segmentor(tmp_path_factory):
    """The atto UperNet config (random weights, 4 classes; heads slimmed from 512 to 64 channels, which cuts the
    test's compute tenfold) on synthetic ADE20K images, exported once at 128."""
    from cvx2_backbone.engine import load_config

    work = tmp_path_factory.mktemp("deploy_seg")
    info = make_ade_shapes(work / "data", num_train=1, num_val=3, image_size=128, seed=0)
    cfg = load_config(SEG_CONFIG)
    cfg.model.backbone.init_cfg = None
    for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
        head.update(num_classes=len(info["classes"]), channels=64)
    cfg.model.data_preprocessor.size = (128, 128)
    cfg.model.test_cfg = dict(mode="whole")  # what mmdeploy exports (check_deployable refuses 'slide')
    loader = cfg.test_dataloader
    loader.update(num_workers=0, persistent_workers=False)
    loader.dataset = dict(type="BaseSegDataset", data_root=info["data_root"], img_suffix=".jpg", seg_map_suffix=".png",
                          reduce_zero_label=True, metainfo=dict(classes=list(info["classes"])),
                          data_prefix=dict(img_path=info["val_img_prefix"], seg_map_path=info["val_seg_prefix"]),
                          pipeline=cfg.test_pipeline)
    _resize_to(cfg, 128)
    cfg.dump(str(work / "config.py"))
    checkpoint = _save_random_model(cfg, "mmseg", work / "model.pth")
    image = Path(info["data_root"]) / info["val_img_prefix"] / "ADE_val_00000000.jpg"
    deploy = deploy_config(SEGMENTATION_DEPLOY_CONFIG)
    onnx_file = export_onnx(deploy, work / "config.py", checkpoint, image, work / "onnx")
    return {"config": work / "config.py", "checkpoint": checkpoint, "onnx": onnx_file, "deploy": deploy,
            "image": image}


def _resize_to(cfg, side: int) -> None:
    """Test images (square) resized to ``side`` x ``side`` by the config's own keep-ratio Resize."""
    for step in cfg.test_pipeline:
        if step["type"] == "Resize":
            step["scale"] = (2 * side, side)
    cfg.test_dataloader.dataset.pipeline = cfg.test_pipeline


def test_upernet_through_mmdeploy_matches_pytorch(segmentor):
    _, model_cfg = load_configs(segmentor["deploy"], segmentor["config"])
    processor = task_processor(segmentor["deploy"], model_cfg)
    reference = build_pytorch_model(processor, segmentor["checkpoint"])
    deployed = build_deployed_model(processor, segmentor["onnx"])
    for side in (128, 176):  # the export size, and one that is not a multiple of 32 (resized back to 128 after)
        sized = copy.deepcopy(processor.model_cfg)
        _resize_to(sized, side)
        run = run_both(sized, reference, deployed)
        assert len(run.reference) == 3
        for ref, dep in zip(run.reference, run.deployed):
            assert ref.img_shape == (side, side) and ref.pred_sem_seg.data.shape[-2:] == (128, 128)
            assert label_map_difference(ref.pred_sem_seg, dep.pred_sem_seg) == 0.0, (side, ref.img_path)
        assert run.deployed_metrics["mIoU"] == run.reference_metrics["mIoU"], side
        assert len(run.reference[0].pred_sem_seg.data.unique()) > 1  # not a constant map that anything would match


def test_upernet_through_mmdeploys_own_calls_equals_pytorch(segmentor, tmp_path):
    """deploy.py's route with mmdeploy's own deploy config (label map out): exported at 128x128, where mmdeploy's
    own pyramid-pooling rewrite cannot export (4x4 map, 6 bins), and equal to PyTorch pixel for pixel."""
    deploy = deploy_config("mmseg/segmentation_onnxruntime_dynamic.py")
    onnx_file = torch2onnx_spawned(segmentor["image"], tmp_path, deploy, segmentor["config"], segmentor["checkpoint"])
    processor = upstream_processor(deploy, segmentor["config"])
    run = run_both(processor.model_cfg, processor.build_pytorch_model(str(segmentor["checkpoint"])),
                   processor.build_backend_model([str(onnx_file)]))
    assert len(run.reference) == 3
    for ref, dep in zip(run.reference, run.deployed):
        assert label_map_difference(ref.pred_sem_seg, dep.pred_sem_seg) == 0.0, ref.img_path
    assert run.deployed_metrics["mIoU"] == run.reference_metrics["mIoU"]
    assert len(run.reference[0].pred_sem_seg.data.unique()) > 1


def test_pyramid_pooling_rewrite_is_exact_where_mmdeploys_is_not():
    """UperNet's pooling pyramid on the 16x16 map of a 512x512 image, the 4x4 map of a 128x128 one, an odd shape."""
    import torch.nn.functional as F
    from mmdeploy.core import RewriterContext

    from cvx2_backbone.deploy.mmdeploy_compat import rewriting_fixes
    from cvx2_backbone.deploy.mmdeploy_exact import adaptive_pool_weights

    cases = [((16, 16), (6, 6)), ((16, 16), (3, 3)), ((4, 4), (6, 6)), ((13, 7), (3, 6)), ((16, 16), (2, 2))]
    inputs = [torch.randn(2, 5, *size) for size, _ in cases]
    expected = [F.adaptive_avg_pool2d(x, bins) for x, (_, bins) in zip(inputs, cases)]
    for x, want, (size, (bins_h, bins_w)) in zip(inputs, expected, cases):
        rows = adaptive_pool_weights(torch.tensor(size[0]), bins_h, x.dtype)
        cols = adaptive_pool_weights(torch.tensor(size[1]), bins_w, x.dtype)
        torch.testing.assert_close(rows @ x @ cols.T, want, rtol=0, atol=1e-6)

    deploy_cfg, _ = load_configs(deploy_config(SEGMENTATION_DEPLOY_CONFIG), SEG_CONFIG)
    theirs = []  # mmdeploy's own rewrite (backend "default"): avg_pool2d with kernel = stride = in // out
    with rewriting_fixes(), RewriterContext(cfg=deploy_cfg, backend="default"):
        for x, (_, bins) in zip(inputs, cases):
            try:
                theirs.append(F.adaptive_avg_pool2d(x, bins))
            except RuntimeError as error:  # a 4x4 map and 6 bins: kernel 0
                theirs.append(str(error))
    assert theirs[0].shape[-2:] == (8, 8) and theirs[3].shape[-2:] == (3, 7)  # 6x6 and 3x6 bins asked
    assert theirs[1].shape == expected[1].shape and not torch.allclose(theirs[1], expected[1], atol=1e-3)
    assert theirs[2] == "stride should not be zero"
    torch.testing.assert_close(theirs[4], expected[4])  # right only where the size divides: 16 / 2


def test_rewriting_fixes_hold_only_inside_their_block():
    import torch.onnx.symbolic_opset9 as opset9
    from mmdeploy.core.rewriters import function_rewriter

    from cvx2_backbone.deploy.mmdeploy_compat import rewriting_fixes

    had_cast_long, frame_func = hasattr(opset9, "_cast_Long"), function_rewriter.get_frame_func
    with rewriting_fixes():
        assert hasattr(opset9, "_cast_Long")
        this_test = test_rewriting_fixes_hold_only_inside_their_block  # the function of the calling frame:
        assert function_rewriter.get_frame_func is not frame_func  # found without inspect.stack(), and the same
        assert function_rewriter.get_frame_func(1) is this_test and frame_func(1) is this_test
    assert hasattr(opset9, "_cast_Long") == had_cast_long and function_rewriter.get_frame_func is frame_func


# Run in a fresh interpreter (the import order is the point): which torch.onnx.export is seen, and which exporter a
# plain call runs (the dynamo exporter returns an ONNXProgram, the TorchScript exporter None), before, inside and
# after mmdeploy's ONNX export context.
EXPORT_PROBE = """
import json, sys
import torch
torch_export = (torch.onnx.export,)  # in a tuple: mmdeploy swaps a rewritten function in every dict and list
for name in sys.argv[1].split(","):
    __import__(name)
import onnx
import torch.onnx.symbolic_opset9 as opset9
from mmdeploy.core import RewriterContext
from mmdeploy.utils import IR

def exporter(path):
    program = torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.zeros(1, 3, 8, 8),), path, opset_version=11)
    assert onnx.load(path).graph.node
    return type(program).__name__

seen = {"untouched_after_import": torch.onnx.export is torch_export[0], "cast_long": hasattr(opset9, "_cast_Long")}
with RewriterContext(cfg={}, backend="onnxruntime", ir=IR.ONNX, opset=11):
    seen["replaced_inside"] = torch.onnx.export is not torch_export[0]
    seen["inside_exporter"] = exporter(sys.argv[2] + "/inside.onnx")
seen["untouched_after_context"] = torch.onnx.export is torch_export[0]
seen["cast_long_after_context"] = hasattr(opset9, "_cast_Long")  # torch 2.15 has none
if sys.argv[3] == "1":
    seen["exporter_after_context"] = exporter(sys.argv[2] + "/plain.onnx")
print(json.dumps(seen))
"""


@pytest.mark.parametrize("order, plain_export", [("mmdeploy,cvx2_backbone", True), ("cvx2_backbone,mmdeploy", False)])
def test_torch_onnx_export_is_replaced_only_inside_mmdeploys_export(tmp_path, order, plain_export):
    """``import cvx2_backbone`` registers the rewriters whichever of the two comes first (the second order through
    the import hook); outside mmdeploy's context torch.onnx.export stays torch's own function, dynamo default."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", EXPORT_PROBE, order, str(tmp_path), str(int(plain_export))],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["untouched_after_import"] and seen["untouched_after_context"]
    assert seen["replaced_inside"] and seen["inside_exporter"] == "NoneType"  # TorchScript
    assert seen["cast_long_after_context"] == seen["cast_long"]  # supplied only while mmdeploy exports
    if plain_export:
        assert seen["exporter_after_context"] == "ONNXProgram"  # torch's default, the dynamo exporter


def test_unknown_deploy_config_and_config_without_pipeline_fail_clearly(tmp_path):
    from mmengine.config import Config

    from cvx2_backbone.deploy import check_deployable

    with pytest.raises(FileNotFoundError, match="instance-seg_onnxruntime_dynamic.py"):
        deploy_config("mmdet/detection/detection_tensorrt_dynamic-320x320-1344x1344.py")
    soft_nms = Config(dict(model=dict(test_cfg=dict(rcnn=dict(nms=dict(type="soft_nms", iou_threshold=0.5))))))
    with pytest.raises(ValueError, match=r"model\.test_cfg\.rcnn\.nms\.type='nms'"):
        check_deployable(soft_nms)
    with pytest.raises(ValueError, match="mode='whole'"):
        check_deployable(Config(dict(model=dict(test_cfg=dict(mode="slide", crop_size=(512, 512))))))
    cascade = dict(type="CascadeRoIHead", bbox_head=[dict(reg_class_agnostic=True), dict(reg_class_agnostic=False)])
    with pytest.raises(ValueError, match="#1896"):
        check_deployable(Config(dict(model=dict(roi_head=cascade))))
    bare = tmp_path / "bare.py"
    bare.write_text("default_scope = 'mmdet'\nmodel = dict(type='MaskRCNN')\n")
    with pytest.raises(ValueError, match="test_pipeline"):
        load_configs(deploy_config(DETECTION_DEPLOY_CONFIG), bare)


@pytest.mark.heavy
def test_trained_demo_detector_deploys_exactly(tmp_path):
    """The quick demo's trained Mask R-CNN (confident, well-separated detections) on all its validation images,
    through the package's export and through deploy.py's own calls."""
    from mmengine.config import Config

    from cvx2_backbone.cli.demo_job import QUICK, run_demo

    out = tmp_path / "demo"
    result = run_demo(out, QUICK, echo=lambda line: None)
    assert result.bbox_ap > 0.1
    deploy = deploy_config(DETECTION_DEPLOY_CONFIG)
    image = next((out / "data" / "val2017").glob("*.jpg"))
    onnx_file = export_onnx(deploy, out / "config.py", out / "detector.pth", image, out / "onnx")
    processor = task_processor(deploy, out / "config.py")
    run = run_both(processor.model_cfg, build_pytorch_model(processor, out / "detector.pth"),
                   build_deployed_model(processor, onnx_file))
    assert len(run.reference) == QUICK.num_val
    assert run.reference_metrics["coco/bbox_mAP"] == pytest.approx(result.bbox_ap, abs=1e-3)
    total = assert_same_detections(run)
    assert total.matched >= QUICK.num_val

    config = out / "config.py"  # deploy.py's route on the same model
    cfg = Config.fromfile(str(config))
    if "test_pipeline" not in cfg:  # mmdeploy's own tools read it; the demo's config may not have one
        cfg.test_pipeline = cfg.test_dataloader.dataset.pipeline
        config = out / "config_upstream.py"
        cfg.dump(str(config))
    onnx_file = torch2onnx_spawned(image, out / "upstream", deploy, config, out / "detector.pth")
    processor = upstream_processor(deploy, config)
    run = run_both(processor.model_cfg, processor.build_pytorch_model(str(out / "detector.pth")),
                   processor.build_backend_model([str(onnx_file)]))
    assert assert_exact_detections(run).matched == total.matched
