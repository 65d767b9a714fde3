# ConvNeXt V1 Mask R-CNN as the official ConvNeXt repo trains it: multi-scale + crop, 3x,
# AdamW lr 1e-4, wd 0.05, layer-wise decay 0.95, total batch 16 (8 GPUs x 2).
_base_ = [
    './models/mask-rcnn_convnext_fpn.py',
    './datasets/coco-instance_ms-crop.py',
    './schedules/adamw-layer-decay_3x-warmup500.py',
    'mmdet::_base_/default_runtime.py',
]
# layer_scale_init_value as in the official configs (the pre-trained weights then overwrite it).
model = dict(backbone=dict(type='cvx2_backbone.ConvNeXt', layer_scale_init_value=1.0))
auto_scale_lr = dict(base_batch_size=16)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
