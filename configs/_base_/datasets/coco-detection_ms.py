# COCO detection with multi-scale training: short side 640..800 (max 1333), as mmdet's
# retinanet_r50_fpn_ms-640-800-3x_coco. 2 images per GPU (8 GPUs: 16).
_base_ = 'mmdet::_base_/datasets/coco_detection.py'

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=[(1333, 640), (1333, 800)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
