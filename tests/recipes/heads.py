"""Recipes of the DINO, Mask2Former and RetinaNet configs, as rows of ``table.py`` (issue 14).

The sources are mmdet 3.3's and mmseg 1.2.2's own configs for the same head, with the Swin backbone where
they publish one (no ConvNeXt V2 config exists for these heads anywhere). ``HEAD_PIPELINES`` joins
``table.PIPELINES`` and ``head_rows()`` joins ``table.RECIPES``.
"""
from __future__ import annotations

from typing import Any, Mapping

from tests.recipes.table import Deviation, Recipe

MMDET = "https://github.com/open-mmlab/mmdetection/blob/v3.3.0/configs/"
MMSEG = "https://github.com/open-mmlab/mmsegmentation/blob/v1.2.2/configs/"
V2_WEIGHTS = "https://dl.fbaipublicfiles.com/convnext/convnextv2/"

# --- pipelines ------------------------------------------------------------------------------------
_DETR_SCALES = tuple((short, 1333) for short in range(480, 801, 32))
_BOX = dict(type="LoadAnnotations", with_bbox=True)
_MASK = dict(type="LoadAnnotations", with_bbox=True, with_mask=True)
_META = dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"))
_FLOAT = dict(type="LoadImageFromFile", to_float32=True)
_LOAD = dict(type="LoadImageFromFile")
_LSJ = (dict(type="RandomFlip", prob=0.5),
        dict(type="RandomResize", scale=(1024, 1024), ratio_range=(0.1, 2.0), keep_ratio=True),
        dict(type="RandomCrop", crop_size=(1024, 1024), crop_type="absolute", recompute_bbox=True,
             allow_negative_crop=True))


def _mask2former_ade(crop: int) -> tuple:
    return (_LOAD, dict(type="LoadAnnotations", reduce_zero_label=True),
            dict(type="RandomChoiceResize", scales=tuple(int(crop * x * 0.1) for x in range(5, 21)),
                 resize_type="ResizeShortestEdge", max_size=4 * crop),
            dict(type="RandomCrop", crop_size=(crop, crop), cat_max_ratio=0.75), dict(type="RandomFlip", prob=0.5),
            dict(type="PhotoMetricDistortion"), dict(type="PackSegInputs"))


HEAD_PIPELINES: dict[str, tuple] = {
    # mmdet's DINO augmentation: the DETR multi-scale + crop policy, boxes only.
    "coco-box-detr-ms-crop": (_LOAD, _BOX, dict(type="RandomFlip", prob=0.5), dict(type="RandomChoice", transforms=(
        (dict(type="RandomChoiceResize", scales=_DETR_SCALES, keep_ratio=True),),
        (dict(type="RandomChoiceResize", scales=((400, 4200), (500, 4200), (600, 4200)), keep_ratio=True),
         dict(type="RandomCrop", crop_type="absolute_range", crop_size=(384, 600), allow_negative_crop=True),
         dict(type="RandomChoiceResize", scales=_DETR_SCALES, keep_ratio=True)))), dict(type="PackDetInputs")),
    "coco-box-1333x800": (_LOAD, _BOX, dict(type="Resize", scale=(1333, 800), keep_ratio=True),
                          dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")),
    "coco-box-ms-640-800": (_LOAD, _BOX, dict(type="RandomResize", scale=((1333, 640), (1333, 800)), keep_ratio=True),
                            dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")),
    "coco-box-test-1333x800": (_LOAD, dict(type="Resize", scale=(1333, 800), keep_ratio=True), _BOX, _META),
    # mmdet's Mask2Former large-scale jitter at 1024 (panoptic and instance).
    "coco-panoptic-lsj-1024": (_FLOAT, dict(type="LoadPanopticAnnotations", with_bbox=True, with_mask=True,
                                            with_seg=True), *_LSJ, dict(type="PackDetInputs")),
    "coco-panoptic-test-1333x800": (_LOAD, dict(type="Resize", scale=(1333, 800), keep_ratio=True),
                                    dict(type="LoadPanopticAnnotations"), _META),
    "coco-instance-lsj-1024-m2f": (_FLOAT, _MASK, _LSJ[0], dict(_LSJ[1], resize_type="Resize"), _LSJ[2],
                                   dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
                                   dict(type="PackDetInputs")),
    "coco-instance-test-1333x800-m2f": (_FLOAT, dict(type="Resize", scale=(1333, 800), keep_ratio=True), _MASK, _META),
    # mmseg's Mask2Former ADE20K augmentation: shortest edge 0.5-2.0 x crop, then crop.
    "ade20k-mask2former-512": _mask2former_ade(512),
    "ade20k-mask2former-640": _mask2former_ade(640),
}

# --- families -------------------------------------------------------------------------------------
_V2 = dict(layer_scale=0.0, frozen_stages=0, nms=None, test_mode=None)
DINO = dict(_V2, model="DINO", optimizer="AdamW", lr=1e-4, betas=None, weight_decay=1e-4, decay_type=None,
            decay_rate=None, num_layers=None, warmup=None, batch_per_gpu=2, total_batch=16, amp=False,
            grad_clip=dict(max_norm=0.1, norm_type=2), train_pipeline="coco-box-detr-ms-crop",
            test_pipeline="coco-box-test-1333x800", padding=("divisor", 1))
_M2F_STEP = dict(iters=368750, schedulers=(dict(type="step", begin=0, end=368750, milestones=(327778, 355092),
                                                gamma=0.1),))
MASK2FORMER = dict(_V2, optimizer="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05, decay_type=None,
                   decay_rate=None, num_layers=None, drop_path_rate=0.3, warmup=None, batch_per_gpu=2,
                   total_batch=16, amp=False, grad_clip=dict(max_norm=0.01, norm_type=2))
RETINANET = dict(_V2, model="RetinaNet", optimizer="SGD", lr=0.01, betas=None, weight_decay=1e-4, decay_type=None,
                 decay_rate=None, num_layers=None, drop_path_rate=0.2, warmup=dict(iters=500, start_factor=0.001),
                 batch_per_gpu=2, total_batch=16, amp=False, grad_clip=None, test_pipeline="coco-box-test-1333x800",
                 padding=("divisor", 32))

# --- deviations -----------------------------------------------------------------------------------
_WEIGHTS = ("the ConvNeXt V2 counterpart of the source's pre-training: ImageNet-1K for tiny (as Swin-T), "
            "ImageNet-22K at 384 for base and up (as Swin-B/L)")
_BLOCK_DECAY = ("block-wise lr decay 0.9 from the head's lr instead of a flat 0.1x backbone multiplier: "
                "InternImage trained DINO both ways at lr 1e-4 (57.5 vs 57.6 box AP, InternImage-L) and ConvNeXt "
                "is fine-tuned with layer decay everywhere else")
_DECAY = dict(decay_type=Deviation("block_wise", _BLOCK_DECAY), decay_rate=Deviation(0.9, _BLOCK_DECAY))
_RETINANET_OPTIM = ("the V2 Mask R-CNN optimizer (AdamW lr 1e-4, wd 0.05, layer-wise decay 0.95, 1000-iteration "
                    "warm-up, AMP) instead of mmdet's SGD: ConvNeXt detectors are tuned with AdamW")
_DEPTH_LAYERS = "num_layers follows this size's depth, so that no backbone layer gets a larger lr than the heads"


def _v2_weights(size: str, pre: str) -> str:
    return (f"{V2_WEIGHTS}im1k/convnextv2_{size}_1k_224_ema.pt" if pre == "in1k"
            else f"{V2_WEIGHTS}im22k/convnextv2_{size}_22k_384_ema.pt")


def _row(config: str, source: str, family: Mapping[str, Any], size: str, pre: str, published: Mapping[str, Any],
         ours: Mapping[str, Deviation], note: str = "") -> Recipe:
    values = dict(family, backbone=("cvx2_backbone.ConvNeXtV2", size), **published)
    deviations = dict(weights=Deviation(_v2_weights(size, pre), _WEIGHTS), **ours)
    return Recipe(f"convnextv2/{config}.py", source, values, deviations, note)


def _dino_rows() -> list[Recipe]:
    rows = []
    for size, pre, scales in (("tiny", "in1k", 4), ("base", "in22k", 4), ("large", "in22k", 5), ("huge", "in22k", 5)):
        for epochs in (12, 36):
            milestones = (11,) if epochs == 12 else (30,) if scales == 4 else (27, 33)
            source = f"dino-{scales}scale_{'r50' if scales == 4 else 'swin-l'}_8xb2-{epochs}e_coco"
            published = dict(weights="torchvision://resnet50" if scales == 4 else
                             "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
                             "swin_large_patch4_window12_384_22k.pth",
                             drop_path_rate=0.0 if scales == 4 else 0.2,
                             schedule=dict(epochs=epochs, schedulers=(dict(type="step", begin=0, end=epochs,
                                                                           milestones=milestones, gamma=0.1),)))
            ours = dict(_DECAY)
            if scales == 4:
                ours["drop_path_rate"] = Deviation(0.2, "the stochastic depth of mmdet's Swin-L DINO (a ResNet "
                                                        "has none)")
                note = "mmdet's 4-scale DINO recipe, published for ResNet-50 (the Swin-L config extends it)"
            elif size == "huge":
                ours["drop_path_rate"] = Deviation(0.3, "stochastic depth raised for the 660M-parameter model "
                                                        "(our choice)")
                note = "mmdet publishes the 5-scale recipe for Swin-L"
            else:
                note = ""
            name = f"dino-{scales}scale_convnextv2-{size}-{pre}_8xb2-{epochs}e_coco"
            rows.append(_row(name, MMDET + f"dino/{source}.py", DINO, size, pre, published, ours, note))
    return rows


def _mask2former_coco_rows() -> list[Recipe]:
    rows = []
    swin = "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
    for size, pre in (("tiny", "in1k"), ("base", "in22k"), ("large", "in22k")):
        for task in ("coco-panoptic", "coco"):
            panoptic = task == "coco-panoptic"
            if size == "tiny" or not panoptic:
                source, weights = f"mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_{task}", "swin_tiny_patch4_window7_224"
            else:
                source, weights = f"mask2former_swin-b-p4-w12-384-in21k_8xb2-lsj-50e_{task}", \
                    "swin_base_patch4_window12_384_22k"
            published = dict(model="Mask2Former", weights=f"{swin}{weights}.pth", schedule=_M2F_STEP,
                             padding=("divisor", 32),
                             train_pipeline="coco-panoptic-lsj-1024" if panoptic else "coco-instance-lsj-1024-m2f",
                             test_pipeline=("coco-panoptic-test-1333x800" if panoptic
                                            else "coco-instance-test-1333x800-m2f"))
            if not panoptic and size != "tiny":
                note = "mmdet publishes Mask2Former instance segmentation for Swin-T/S only"
            elif panoptic and size == "large":
                note = ("mmdet's Swin-L panoptic config trains 100 epochs at 16 x 1; the 8 x 2, 50-epoch recipe of "
                        "Swin-B is kept")
            else:
                note = ""
            rows.append(_row(f"mask2former_convnextv2-{size}-{pre}_8xb2-lsj-50e_{task}",
                             MMDET + f"mask2former/{source}.py", MASK2FORMER, size, pre, published, dict(_DECAY), note))
    return rows


def _mask2former_ade_rows() -> list[Recipe]:
    rows = []
    pretrain = "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/"
    for size, pre, crop in (("tiny", "in1k", 512), ("base", "in22k", 512), ("large", "in22k", 640),
                            ("huge", "in22k", 640)):
        if crop == 512:
            source, weights = "mask2former_swin-t_8xb2-160k_ade20k-512x512", \
                "swin_tiny_patch4_window7_224_20220317-1cdeb081.pth"
        else:
            source, weights = "mask2former_swin-l-in22k-384x384-pre_8xb2-160k_ade20k-640x640", \
                "swin_large_patch4_window12_384_22k_20220412-6580f57d.pth"
        published = dict(model="EncoderDecoder", weights=pretrain + weights, padding=("size", (crop, crop)),
                         schedule=dict(iters=160000, schedulers=(dict(type="poly", power=0.9, eta_min=0, begin=0,
                                                                      end=160000),)),
                         train_pipeline=f"ade20k-mask2former-{crop}", test_pipeline=f"ade20k-test-{4 * crop}x{crop}",
                         test_mode=dict(mode="whole"))
        ours = dict(_DECAY)
        if size == "huge":
            ours["drop_path_rate"] = Deviation(0.4, "stochastic depth raised for the 660M-parameter model "
                                                    "(our choice)")
        note = {"base": "mmseg publishes Swin-B Mask2Former at 640 only; base is trained at 512 with the Swin-T recipe",
                "huge": "mmseg's largest Mask2Former is Swin-L"}.get(size, "")
        rows.append(_row(f"mask2former_convnextv2-{size}-{pre}_8xb2-160k_ade20k-{crop}x{crop}",
                         MMSEG + f"mask2former/{source}.py", MASK2FORMER, size, pre, published, ours, note))
    return rows


def _retinanet_rows() -> list[Recipe]:
    rows = []
    sizes = {"atto": (5, 0.1), "femto": (5, 0.1), "pico": (5, 0.1), "nano": (6, 0.2), "tiny": (6, 0.2)}
    optim = dict(optimizer=Deviation("AdamW", _RETINANET_OPTIM), lr=Deviation(1e-4, _RETINANET_OPTIM),
                 betas=Deviation((0.9, 0.999), _RETINANET_OPTIM), weight_decay=Deviation(0.05, _RETINANET_OPTIM),
                 decay_type=Deviation("layer_wise", _RETINANET_OPTIM), decay_rate=Deviation(0.95, _RETINANET_OPTIM),
                 warmup=Deviation(dict(iters=1000, start_factor=0.001), _RETINANET_OPTIM),
                 amp=Deviation(True, _RETINANET_OPTIM))
    for size, (layers, drop) in sizes.items():
        for schedule in ("1x", "ms-640-800-3x"):
            ours = dict(optim, num_layers=Deviation(layers, _DEPTH_LAYERS))
            if drop != 0.2:
                ours["drop_path_rate"] = Deviation(drop, "less stochastic depth for the smallest models (our choice, "
                                                         "as their Mask R-CNN configs)")
            if schedule == "1x":
                source = MMDET + "swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py"
                published = dict(weights="https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
                                         "swin_tiny_patch4_window7_224.pth", train_pipeline="coco-box-1333x800",
                                 schedule=dict(epochs=12, schedulers=(dict(type="step", begin=0, end=12,
                                                                           milestones=(8, 11), gamma=0.1),)))
                note = "mmdet publishes this RetinaNet recipe for Swin-T"
            else:
                source = MMDET + "retinanet/retinanet_r50_fpn_ms-640-800-3x_coco.py"
                published = dict(weights="torchvision://resnet50", train_pipeline="coco-box-ms-640-800",
                                 drop_path_rate=0.0,
                                 schedule=dict(epochs=12, schedulers=(dict(type="step", begin=0, end=12,
                                                                           milestones=(9, 11), gamma=0.1),)))
                ours["schedule"] = Deviation(dict(epochs=36, schedulers=(dict(
                    type="step", begin=0, end=36, milestones=(27, 33), gamma=0.1),)),
                    "36 epochs with steps at 27 and 33 instead of 12 epochs of a 3x RepeatDataset: the same passes "
                    "over COCO, as the V2 Mask R-CNN 3x schedule")
                ours["drop_path_rate"] = Deviation(drop, "the Swin-T RetinaNet's stochastic depth (0.1 for the "
                                                         "smallest models; a ResNet has none)")
                note = "mmdet publishes the multi-scale 3x RetinaNet recipe for ResNet-50"
            rows.append(_row(f"retinanet_convnextv2-{size}-in1k_fpn_{schedule}_coco", source, RETINANET, size, "in1k",
                             published, ours, note))
    return rows


def head_rows() -> list[Recipe]:
    """One row per DINO, Mask2Former and RetinaNet config."""
    return [*_dino_rows(), *_mask2former_coco_rows(), *_mask2former_ade_rows(), *_retinanet_rows()]
