# ConvNeXt V2 Mask R-CNN, short recipe for the small models: multi-scale 640..800, 1x,
# AdamW lr 1e-4, wd 0.05, layer-wise decay 0.95, soft-NMS at test, total batch 16 (8 GPUs x 2).
_base_ = [
    './models/mask-rcnn_convnext_fpn.py',
    './datasets/coco-instance_ms.py',
    './schedules/adamw-layer-decay_1x.py',
    'mmdet::_base_/default_runtime.py',
]
model = dict(
    backbone=dict(type='cvx2_backbone.ConvNeXtV2'),
    test_cfg=dict(rcnn=dict(nms=dict(type='soft_nms', iou_threshold=0.5))))
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
