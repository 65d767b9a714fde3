"""The published recipes, one row per shipped config (see the package docstring for the format)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

# --- where the numbers come from -------------------------------------------------------------
CONVNEXT = "https://github.com/facebookresearch/ConvNeXt/blob/048efcea897d999aed302f2639b6270aedf8d4c8/"
# The official configs inherit these bases (the commits the ConvNeXt READMEs name).
SWIN_DET_BASES = ("https://github.com/SwinTransformer/Swin-Transformer-Object-Detection/blob/"
                  "6a979e2164e3fb0de0ca2546545013a4d71b2f7d/configs/_base_/")  # mmdet 2.11
BEIT_SEG_BASES = ("https://github.com/microsoft/unilm/blob/f8f3df80c65eb5e5fc6d6d3c9bd3137621795d1e/"
                  "beit/semantic_segmentation/configs/_base_/")  # mmseg 0.x
MMDET_CONVNEXT_V2 = ("https://github.com/open-mmlab/mmdetection/blob/19bceba56284d440278e80cfde1d95460330ccbb/"
                     "projects/ConvNeXt-V2/configs/mask-rcnn_convnext-v2-b_fpn_lsj-3x-fcmae_coco.py")
WEIGHTS = "https://dl.fbaipublicfiles.com/convnext/"


def _det(name: str) -> str:
    return f"{CONVNEXT}object_detection/configs/convnext/{name}.py"


def _seg(name: str) -> str:
    return f"{CONVNEXT}semantic_segmentation/configs/convnext/upernet_convnext_{name}_160k_ade20k_ss.py"


@dataclass(frozen=True)
class Deviation:
    """What a shipped config does instead of the published value, and why."""

    value: Any
    reason: str


@dataclass(frozen=True)
class Recipe:
    """One shipped config and the recipe it follows."""

    config: str  # path under configs/
    source: str  # the published config (URL with commit) the values come from
    published: Mapping[str, Any]  # every field of fields.FIELDS, as the source gives it for this model
    deviations: Mapping[str, Deviation] = field(default_factory=dict)
    note: str = ""  # e.g. that the source publishes this recipe for another size

    def expected(self, name: str) -> Any:
        """The value the shipped config must have: the deviation if there is one, else the published value."""
        return self.deviations[name].value if name in self.deviations else self.published[name]


# --- pipelines (mmdet 3 / mmseg 1 spelling of the published ones), by name --------------------
_DETR_SCALES = tuple((short, 1333) for short in range(480, 801, 32))
_COCO_LOAD = (dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True, with_mask=True))
_ADE_LOAD = (dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True))


def _ade_train(crop: int) -> tuple:
    return (*_ADE_LOAD,
            dict(type="RandomResize", scale=(4 * crop, crop), ratio_range=(0.5, 2.0), keep_ratio=True),
            dict(type="RandomCrop", crop_size=(crop, crop), cat_max_ratio=0.75),
            dict(type="RandomFlip", prob=0.5), dict(type="PhotoMetricDistortion"), dict(type="PackSegInputs"))


def _ade_test(crop: int) -> tuple:
    return (dict(type="LoadImageFromFile"), dict(type="Resize", scale=(4 * crop, crop), keep_ratio=True),
            _ADE_LOAD[1], dict(type="PackSegInputs"))


PIPELINES: dict[str, tuple] = {
    # The official V1 detection AutoAugment policy: multi-scale, or resize + crop + multi-scale (DETR style).
    "coco-detr-ms-crop": (*_COCO_LOAD, dict(type="RandomFlip", prob=0.5), dict(type="RandomChoice", transforms=(
        (dict(type="RandomChoiceResize", scales=_DETR_SCALES, keep_ratio=True),),
        (dict(type="RandomChoiceResize", scales=((400, 1333), (500, 1333), (600, 1333)), keep_ratio=True),
         dict(type="RandomCrop", crop_type="absolute_range", crop_size=(384, 600), allow_negative_crop=True),
         dict(type="RandomChoiceResize", scales=_DETR_SCALES, keep_ratio=True)))), dict(type="PackDetInputs")),
    # Large-scale jitter at 1024 (mmdet's ConvNeXt-V2 project).
    "coco-lsj-1024": (*_COCO_LOAD,
                      dict(type="RandomResize", scale=(1024, 1024), ratio_range=(0.1, 2.0), keep_ratio=True),
                      dict(type="RandomCrop", crop_type="absolute_range", crop_size=(1024, 1024),
                           recompute_bbox=True, allow_negative_crop=True),
                      dict(type="FilterAnnotations", min_gt_bbox_wh=(0.01, 0.01)),
                      dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")),
    # Short side 640..800 (mmdet's usual multi-scale 1x training).
    "coco-ms-640-800": (*_COCO_LOAD,
                        dict(type="RandomChoiceResize", scales=tuple((1333, s) for s in range(640, 801, 32)),
                             keep_ratio=True),
                        dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")),
    "coco-test-1333x800": (dict(type="LoadImageFromFile"), dict(type="Resize", scale=(1333, 800), keep_ratio=True),
                           _COCO_LOAD[1], dict(type="PackDetInputs", meta_keys=(
                               "img_id", "img_path", "ori_shape", "img_shape", "scale_factor"))),
    "ade20k-512": _ade_train(512),
    "ade20k-640": _ade_train(640),
    "ade20k-test-2048x512": _ade_test(512),
    "ade20k-test-2560x640": _ade_test(640),
}

# --- families: the values their rows share -------------------------------------------------------
_NMS = dict(rpn=dict(type="nms", iou_threshold=0.7), rcnn=dict(type="nms", iou_threshold=0.5), score_thr=0.05,
            max_per_img=100)
_ADAMW = dict(optimizer="AdamW", betas=(0.9, 0.999), weight_decay=0.05, grad_clip=None, frozen_stages=0)
_STEP_3X = dict(epochs=36, schedulers=(dict(type="step", begin=0, end=36, milestones=(27, 33), gamma=0.1),))

# Official ConvNeXt (V1) COCO configs; warm-up and per-GPU batch from their mmdet 2.11 bases
# (schedules/schedule_1x.py: linear, 500 iterations from 0.001; datasets/coco_instance.py: 2 images per GPU, 8 GPUs).
V1_DETECTION = dict(
    _ADAMW, decay_type="layer_wise", layer_scale=1.0, warmup=dict(iters=500, start_factor=0.001), schedule=_STEP_3X,
    batch_per_gpu=2, total_batch=16, amp=True, train_pipeline="coco-detr-ms-crop", test_pipeline="coco-test-1333x800",
    padding=("divisor", 32), test_mode=None, nms=_NMS)

# mmdet's ConvNeXt-V2 Mask R-CNN project config (V2-base; the only published V2 detection config).
V2_MASK_RCNN = dict(
    _ADAMW, model="MaskRCNN", backbone=("cvx2_backbone.ConvNeXtV2", "base"), lr=1e-4, decay_type="layer_wise",
    decay_rate=0.95, num_layers=12, drop_path_rate=0.4, layer_scale=0.0, warmup=dict(iters=1000, start_factor=0.001),
    schedule=_STEP_3X, batch_per_gpu=4, total_batch=32, amp=True, train_pipeline="coco-lsj-1024",
    test_pipeline="coco-test-1333x800", padding=("divisor", 32), test_mode=None,
    nms=dict(_NMS, rcnn=dict(type="soft_nms", iou_threshold=0.5)),
    weights="https://download.openmmlab.com/mmclassification/v0/convnext-v2/"
            "convnext-v2-base_3rdparty-fcmae_in1k_20230104-8a798eaf.pth")

# Official ConvNeXt (V1) ADE20K configs; pipelines from their mmseg 0.x bases (datasets/ade20k*.py).
# The poly schedule runs over all 160k iterations with the warm-up multiplied in (mmcv's LrUpdaterHook).
V1_UPERNET = dict(
    _ADAMW, model="EncoderDecoder", lr=1e-4, decay_type="stage_wise", decay_rate=0.9, layer_scale=1.0,
    warmup=dict(iters=1500, start_factor=1e-6),
    schedule=dict(iters=160000, schedulers=(dict(type="poly", power=1.0, eta_min=0.0, begin=0, end=160000),)),
    batch_per_gpu=2, total_batch=16, amp=True, nms=None)


def _crop(size: int, stride: int) -> dict:
    return dict(train_pipeline=f"ade20k-{size}", test_pipeline=f"ade20k-test-{4 * size}x{size}",
                padding=("size", (size, size)),
                test_mode=dict(mode="slide", crop_size=(size, size), stride=(stride, stride)))


UPERNET_512 = _crop(512, 341)
UPERNET_640 = _crop(640, 426)

# --- deviations shared by several rows ----------------------------------------------------------
_FCMAE_FILE = ("the authors' own FCMAE release (dl.fbaipublicfiles.com) instead of OpenMMLab's mmcls conversion "
               "of the same weights: the loader reads the original layout")
_DEPTH_LAYERS = "num_layers follows this size's depth, so that no backbone layer gets a larger lr than the heads"
_OUR_DROP_PATH = "stochastic depth for this size is our choice (rising with size); the source gives it for another"


def _v2_weights(size: str, fcmae: bool = True) -> str:
    kind = "pt_only" if fcmae else "im1k"
    return f"{WEIGHTS}convnextv2/{kind}/convnextv2_{size}_1k_224_{'fcmae.pt' if fcmae else 'ema.pt'}"


def _v1_weights(size: str, data: str) -> str:
    return f"{WEIGHTS}convnext_{size}_{data}_224.pth"


def _derived(published: Mapping[str, Any], ours: Mapping[str, Any], reasons: Mapping[str, str]) -> dict:
    """Deviations where ``ours`` differs from ``published``, each with its reason."""
    return {name: Deviation(value, reasons[name]) for name, value in ours.items() if value != published[name]}


# --- the rows ---------------------------------------------------------------------------------------
def _v1_detection_rows() -> list[Recipe]:
    rows = []
    # config name part, official file, model, size, pre-training, lr, decay rate, num_layers, drop path, amp
    for kind, official, model, size, data, lr, rate, layers, drop, amp in (
        ("mask-rcnn", "mask_rcnn_convnext_tiny_patch4_window7_mstrain_480-800_adamw_3x_coco_in1k",
         "MaskRCNN", "tiny", "1k", 1e-4, 0.95, 6, 0.4, True),
        *(("cascade-mask-rcnn", f"cascade_mask_rcnn_convnext_{size}_patch4_window7_mstrain_480-800_giou_4conv1f_"
           f"adamw_3x_coco_in{data}", "CascadeRCNN", size, data, lr, rate, layers, drop, amp)
          for size, data, lr, rate, layers, drop, amp in (
              ("tiny", "1k", 2e-4, 0.7, 6, 0.4, True), ("small", "1k", 2e-4, 0.7, 12, 0.6, True),
              ("base", "1k", 2e-4, 0.8, 12, 0.7, True), ("base", "22k", 1e-4, 0.8, 12, 0.6, True),
              ("large", "22k", 1e-4, 0.7, 12, 0.7, False), ("xlarge", "22k", 1e-4, 0.7, 12, 0.8, False))),
    ):
        head = "fpn_4conv1fc-giou" if kind.startswith("cascade") else "fpn"
        config = f"convnext/{kind}_convnext-{size}-in{data}_{head}_ms-crop-3x_coco.py"
        published = dict(V1_DETECTION, model=model, backbone=("cvx2_backbone.ConvNeXt", size),
                         weights=_v1_weights(size, data), lr=lr, decay_rate=rate, num_layers=layers,
                         drop_path_rate=drop, amp=amp)
        rows.append(Recipe(config, _det(official), published))
    return rows


def _v1_upernet_rows() -> list[Recipe]:
    rows = []
    for size, data, crop, lr, layers, drop, amp in (
        ("tiny", "1k", 512, 1e-4, 6, 0.4, True), ("small", "1k", 512, 1e-4, 12, 0.3, True),
        ("base", "1k", 512, 1e-4, 12, 0.4, True), ("base", "22k", 640, 1e-4, 12, 0.4, True),
        ("large", "22k", 640, 1e-4, 12, 0.4, False), ("xlarge", "22k", 640, 8e-5, 12, 0.4, False),
    ):
        config = f"convnext/upernet_convnext-{size}-in{data}_8xb2-160k_ade20k-{crop}x{crop}.py"
        published = dict(V1_UPERNET, **(UPERNET_512 if crop == 512 else UPERNET_640),
                         backbone=("cvx2_backbone.ConvNeXt", size), weights=_v1_weights(size, data), lr=lr,
                         num_layers=layers, drop_path_rate=drop, amp=amp)
        rows.append(Recipe(config, _seg(f"{size}_{crop}"), published))
    return rows


_V2_SIZES = {  # size: (num_layers, drop path for detection, drop path for segmentation) of our configs
    "atto": (5, 0.1, 0.1), "femto": (5, 0.1, 0.1), "pico": (5, 0.1, 0.1), "nano": (6, 0.2, 0.2), "tiny": (6, 0.3, 0.3),
    "base": (12, 0.4, 0.4), "large": (12, 0.5, 0.4), "huge": (12, 0.5, 0.5)}


def _v2_detection_rows() -> list[Recipe]:
    rows = []
    reasons = dict(weights=_FCMAE_FILE, num_layers=_DEPTH_LAYERS, drop_path_rate=_OUR_DROP_PATH)
    note = "mmdet publishes this recipe for V2-base only; the other sizes use it unchanged but for the fields below"
    for size, (layers, drop, _) in _V2_SIZES.items():
        published = dict(V2_MASK_RCNN, backbone=("cvx2_backbone.ConvNeXtV2", size))
        ours = dict(weights=_v2_weights(size), num_layers=layers, drop_path_rate=drop)
        rows.append(Recipe(f"convnextv2/mask-rcnn_convnextv2-{size}-fcmae_fpn_lsj-3x_coco.py", MMDET_CONVNEXT_V2,
                           published, _derived(published, ours, reasons), "" if size == "base" else note))
    cascade = dict(reasons, model="no V2 Cascade Mask R-CNN config is published: the V2 Mask R-CNN recipe with the "
                                  "official ConvNeXt cascade heads (three 4conv1fc heads, GIoU loss)")
    for size in ("tiny", "base", "large"):
        published = dict(V2_MASK_RCNN, backbone=("cvx2_backbone.ConvNeXtV2", size))
        layers, drop, _ = _V2_SIZES[size]
        ours = dict(model="CascadeRCNN", weights=_v2_weights(size), num_layers=layers, drop_path_rate=drop)
        rows.append(Recipe(f"convnextv2/cascade-mask-rcnn_convnextv2-{size}-fcmae_fpn_4conv1fc-giou_lsj-3x_coco.py",
                           MMDET_CONVNEXT_V2, published, _derived(published, ours, cascade), note))
    short = dict(reasons, weights="the IN-1K fine-tuned weights, which suit a short schedule better than the raw "
                                  "FCMAE encoder",
                 schedule="a 1x schedule (12 epochs, lr x0.1 after 8 and 11) for quick experiments with the small "
                          "models; nothing of this length is published",
                 train_pipeline="mmdet's multi-scale 1x augmentation (short side 640-800) to go with the 1x schedule",
                 batch_per_gpu="2 images per GPU, mmdet's 1x default", total_batch="8 GPUs x 2 images")
    for size in ("atto", "femto", "pico", "nano"):
        published = dict(V2_MASK_RCNN, backbone=("cvx2_backbone.ConvNeXtV2", size))
        ours = dict(weights=_v2_weights(size, fcmae=False), num_layers=_V2_SIZES[size][0],
                    drop_path_rate=_V2_SIZES[size][1], batch_per_gpu=2, total_batch=16,
                    train_pipeline="coco-ms-640-800", schedule=dict(epochs=12, schedulers=(
                        dict(type="step", begin=0, end=12, milestones=(8, 11), gamma=0.1),)))
        rows.append(Recipe(f"convnextv2/mask-rcnn_convnextv2-{size}-in1k_fpn_ms-1x_coco.py", MMDET_CONVNEXT_V2,
                           published, _derived(published, ours, short), note))
    return rows


def _v2_upernet_rows() -> list[Recipe]:
    """V2 publishes no segmentation config: each size follows the official V1 UperNet config nearest to it."""
    rows = []
    reasons = dict(num_layers=_DEPTH_LAYERS, drop_path_rate=_OUR_DROP_PATH, weights="the V2 FCMAE release",
                   lr="lr 1e-4 as for every other ConvNeXt UperNet; 8e-5 was tuned for V1-xlarge",
                   amp="mixed precision as for the other V2 configs (GRN computes its statistics in fp32 under "
                       "autocast); the V1 large/xlarge recipes trained in fp32")
    # V2 size: the V1 size and crop whose official config it follows
    nearest = {"atto": ("tiny", 512), "femto": ("tiny", 512), "pico": ("tiny", 512), "nano": ("tiny", 512),
               "tiny": ("tiny", 512), "base": ("base", 512), "large": ("large", 640), "huge": ("xlarge", 640)}
    v1 = {(row.published["backbone"][1], row.published["padding"][1][0]): row for row in _v1_upernet_rows()}
    for size, (v1_size, crop) in nearest.items():
        source_row = v1[v1_size, crop]
        published = dict(source_row.published, backbone=("cvx2_backbone.ConvNeXtV2", size), layer_scale=0.0,
                         weights=source_row.published["weights"])
        layers, _, drop = _V2_SIZES[size]
        ours = dict(weights=_v2_weights(size), lr=1e-4, num_layers=layers, drop_path_rate=drop, amp=True)
        note = f"follows the official V1-{v1_size} {crop}x{crop} config (V2 has no layer scale: GRN instead)"
        rows.append(Recipe(f"convnextv2/upernet_convnextv2-{size}-fcmae_8xb2-160k_ade20k-{crop}x{crop}.py",
                           source_row.source, published, _derived(published, ours, reasons), note))
    return rows


RECIPES: dict[str, Recipe] = {row.config: row for row in (
    *_v1_detection_rows(), *_v1_upernet_rows(), *_v2_detection_rows(), *_v2_upernet_rows())}
