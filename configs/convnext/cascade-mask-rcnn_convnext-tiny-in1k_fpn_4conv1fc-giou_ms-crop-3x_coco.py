# Cascade Mask R-CNN, ConvNeXt V1-tiny (ImageNet-1K), multi-scale + crop, 3x, batch 16 (official ConvNeXt config).
_base_ = '../_base_/cascade-mask-rcnn_convnext_fpn_4conv1fc-giou_ms-crop-3x_coco.py'
model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(
    optimizer=dict(lr=0.0002),
    paramwise_cfg=dict(decay_rate=0.7, num_layers=6))
