# Cascade Mask R-CNN, ConvNeXt V1-large (ImageNet-22K), multi-scale + crop, 3x, batch 16 (official ConvNeXt config).
_base_ = '../_base_/cascade-mask-rcnn_convnext_fpn_4conv1fc-giou_ms-crop-3x_coco.py'
model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.7,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_large_22k_224.pth')),
    neck=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(lr=0.0001),
    paramwise_cfg=dict(decay_rate=0.7, num_layers=12))
