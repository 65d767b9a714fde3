# ConvNeXt V2 RetinaNet, 1x: mmdet's retinanet_r50_fpn_1x_coco data (single scale 1333x800) and length
# (12 epochs, lr x0.1 after 8 and 11) with the V2 Mask R-CNN optimizer (AdamW lr 1e-4, wd 0.05, layer-wise
# decay 0.95, AMP) in place of mmdet's SGD, total batch 16 (8 GPUs x 2).
_base_ = [
    './models/retinanet_convnext_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    './schedules/adamw-layer-decay_1x.py',
    'mmdet::_base_/default_runtime.py',
]
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
