"""The DINOv3 ConvNeXt configs (configs/dinov3/): each builds with DINOv3 weights loaded through its init_cfg (random
weights saved in the official DINOv3 layout, never from a hub), normalises inputs as DINOv3 expects, runs a training
step, and the frozen variants train nothing of the backbone but its output norm; tools/train.py trains the Mask
R-CNN one for a few iterations on the synthetic COCO set. tests/test_configs.py checks them against their recipes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from mmengine.registry import DefaultScope

from cvx2_backbone import ConvNeXt
from cvx2_backbone.datasets import make_coco_shapes
from cvx2_backbone.engine import load_config
from tests.helpers.dinov3 import dinov3_dense, dinov3_state, timm_reader
from tests.helpers.training import as_cli, run_tool, small_det_heads
from tests.helpers.weights import image, outputs, relative_error

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs/dinov3").glob("*.py"))
IMAGENET = ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])  # the dinov3 README's mean/std, on 0-255 pixels


def _id(path: Path) -> str:
    return path.name


FINAL_NORMS: dict[str, torch.Tensor] = {}  # size -> the saved file's norms.3.weight


@pytest.fixture(scope="module")
def dinov3_weights(tmp_path_factory) -> dict[str, Path]:
    """Random DINOv3 ConvNeXt-tiny and -base weights in the official repository's layout and file name."""
    folder = tmp_path_factory.mktemp("dinov3")
    files = {}
    for size in ("tiny", "base"):
        files[size] = folder / f"dinov3_convnext_{size}_pretrain_lvd1689m-0123abcd.pth"
        state = dinov3_state(size, seed=1)
        FINAL_NORMS[size] = state["norms.3.weight"]
        torch.save(state, files[size])
    return files


def test_every_variant_is_shipped():
    names = {p.name for p in CONFIGS}
    for size in ("tiny", "base"):
        for frozen in ("", "-frozen"):
            assert f"mask-rcnn_convnext-{size}-dinov3-lvd1689m{frozen}_fpn_ms-crop-3x_coco.py" in names
            assert f"upernet_convnext-{size}-dinov3-lvd1689m{frozen}_8xb2-160k_ade20k-512x512.py" in names
    assert len(CONFIGS) == 8


def _det_batch(model):
    from mmdet.testing import demo_mm_inputs

    packed = demo_mm_inputs(2, [[3, 64, 64], [3, 64, 96]], num_items=[3, 2], num_classes=80, with_mask=True)
    return model.data_preprocessor(packed, True)


def _seg_batch(model):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 64)))
        samples.append(sample)
    inputs = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(2)]
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)


@pytest.mark.slow
@pytest.mark.parametrize("path", [pytest.param(path, marks=pytest.mark.heavy) if "-base-" in path.name else path
                                  for path in CONFIGS], ids=_id)
def test_config_loads_dinov3_weights_and_trains_a_step(path, dinov3_weights):
    cfg = load_config(path)
    backbone_cfg = cfg.model.backbone
    size, frozen = backbone_cfg.arch, "-frozen" in path.name
    preprocessor = cfg.model.data_preprocessor
    assert (list(preprocessor.mean), list(preprocessor.std)) == IMAGENET and preprocessor.bgr_to_rgb
    assert backbone_cfg.out_norm == (["stage4"] if frozen else True)
    backbone_cfg.init_cfg.checkpoint = str(dinov3_weights[size])
    if cfg.default_scope == "mmseg":
        cfg.model.data_preprocessor.size = (64, 64)
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.train()
        data = _seg_batch(model) if cfg.default_scope == "mmseg" else _det_batch(model)
        losses = model(**data, mode="loss")
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    backbone = model.backbone
    # DINOv3's final norm became stage4's output norm
    assert torch.equal(backbone.norm3.weight.detach(), FINAL_NORMS[size])
    stem_grad = backbone.downsample_layers[0][0].weight.grad
    if frozen:
        assert not any(p.requires_grad for n, p in backbone.named_parameters() if not n.startswith("norm"))
        assert stem_grad is None and backbone.norm3.weight.grad is not None
        assert not hasattr(backbone, "norm0") and not backbone.stages[0].training
    else:
        assert stem_grad is not None and stem_grad.abs().sum() > 0


@pytest.mark.slow
def test_tools_train_runs_the_mask_rcnn_config_with_dinov3_weights(tmp_path, dinov3_weights):
    """A few iterations of tools/train.py on the synthetic COCO set, the backbone from the DINOv3-layout file."""
    info = make_coco_shapes(tmp_path / "coco", num_train=8, num_val=2, image_size=96)
    config = ROOT / "configs/dinov3/mask-rcnn_convnext-tiny-dinov3-lvd1689m_fpn_ms-crop-3x_coco.py"
    # The V1 recipe's AutoAugment resizes to 480-800 pixels: a short pipeline at the synthetic images' size instead.
    wrapper = tmp_path / "cfg.py"
    wrapper.write_text(f"""_base_ = {str(config)!r}
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='Resize', scale=(96, 96), keep_ratio=True), dict(type='RandomFlip', prob=0.5),
                  dict(type='PackDetInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 96), keep_ratio=True),
                 dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
data = dict(data_root={info['data_root']!r}, metainfo=dict(classes={list(info['classes'])!r}))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(**data, ann_file={info['train_ann_file']!r},
                                     data_prefix=dict(img={info['train_img_prefix']!r}), pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(**data, ann_file={info['val_ann_file']!r},
                                   data_prefix=dict(img={info['val_img_prefix']!r}), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={info['val_ann_path']!r})
test_evaluator = val_evaluator
""")
    classes = len(info["classes"])
    options = {**small_det_heads(), "model.backbone.init_cfg.checkpoint": str(dinov3_weights["tiny"]),
               "model.roi_head.bbox_head.num_classes": classes, "model.roi_head.mask_head.num_classes": classes,
               "train_cfg.max_epochs": 1, "train_cfg.val_interval": 100, "param_scheduler.0.end": 2,
               "default_hooks.logger.interval": 1, "randomness.seed": 0}
    output = run_tool(sys.executable, "tools/train.py", str(wrapper), "--work-dir", str(tmp_path / "work"),
                      *as_cli(options))
    assert "[dinov3, ConvNeXt V1 tiny]" in output and "license: DINOv3 License" in output
    assert "Epoch(train) [1][4/4]" in output
    assert (tmp_path / "work" / "epoch_1.pth").is_file()


def test_frozen_variant_outputs_are_dinov3_dense_features(dinov3_weights):
    """The frozen config's backbone, as built from the config, returns DINOv3's dense features unchanged."""

    cfg = load_config(ROOT / "configs/dinov3/upernet_convnext-tiny-dinov3-lvd1689m-frozen_8xb2-160k_ade20k-512x512.py")
    kwargs = {k: v for k, v in cfg.model.backbone.items() if k not in ("type", "init_cfg")}
    model = ConvNeXt(**kwargs, init_cfg=dict(type="Pretrained", checkpoint=str(dinov3_weights["tiny"])))
    model.init_weights()
    state = dinov3_state("tiny", seed=1)
    expected = dinov3_dense(outputs(timm_reader(dinov3_weights["tiny"], "tiny"), image()), state["norm.weight"],
                            state["norm.bias"])
    assert relative_error(expected, outputs(model.eval(), image())) <= 1e-5
