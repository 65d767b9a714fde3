# ConvNeXt V2 RetinaNet, 3x: multi-scale 640-800 as mmdet's retinanet_r50_fpn_ms-640-800-3x_coco, 36 epochs
# (lr x0.1 after 27 and 33) with the V2 Mask R-CNN optimizer (AdamW lr 1e-4, wd 0.05, layer-wise decay 0.95,
# AMP), total batch 16 (8 GPUs x 2).
_base_ = [
    './models/retinanet_convnext_fpn.py',
    './datasets/coco-detection_ms.py',
    './schedules/adamw-layer-decay_3x.py',
    'mmdet::_base_/default_runtime.py',
]
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
auto_scale_lr = dict(base_batch_size=16)
