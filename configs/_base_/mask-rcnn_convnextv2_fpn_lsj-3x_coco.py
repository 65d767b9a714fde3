# ConvNeXt V2 Mask R-CNN recipe: LSJ 1024, 3x, AdamW lr 1e-4, wd 0.05, layer-wise decay 0.95,
# soft-NMS at test, total batch 32 (8 GPUs x 4).
_base_ = [
    './models/mask-rcnn_convnext_fpn.py',
    './datasets/coco-instance_lsj-1024.py',
    './schedules/adamw-layer-decay_3x.py',
    'mmdet::_base_/default_runtime.py',
]
model = dict(
    backbone=dict(type='cvx2_backbone.ConvNeXtV2'),
    test_cfg=dict(rcnn=dict(nms=dict(type='soft_nms', iou_threshold=0.5))))
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
