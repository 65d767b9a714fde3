# Cascade Mask R-CNN, ConvNeXt V1-base (ImageNet-22K), multi-scale + crop, 3x, batch 16 (official ConvNeXt config).
_base_ = '../_base_/cascade-mask-rcnn_convnext_fpn_4conv1fc-giou_ms-crop-3x_coco.py'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_224.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001),
    paramwise_cfg=dict(decay_rate=0.8, num_layers=12))
