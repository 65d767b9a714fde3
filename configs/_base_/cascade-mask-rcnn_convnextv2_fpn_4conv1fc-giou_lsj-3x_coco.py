# ConvNeXt V2 Cascade Mask R-CNN: the V2 Mask R-CNN recipe (LSJ 1024, 3x, AdamW lr 1e-4,
# layer-wise decay 0.95, soft-NMS at test, batch 32) with the official 4conv1fc GIoU heads.
_base_ = [
    './models/cascade-mask-rcnn_convnext_fpn_4conv1fc-giou.py',
    './datasets/coco-instance_lsj-1024.py',
    './schedules/adamw-layer-decay_3x.py',
    'mmdet::_base_/default_runtime.py',
]
model = dict(
    backbone=dict(type='cvx2_backbone.ConvNeXtV2'),
    test_cfg=dict(rcnn=dict(nms=dict(type='soft_nms', iou_threshold=0.5))))
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
