# Cascade Mask R-CNN, ConvNeXt V1-xlarge (ImageNet-22K), multi-scale + crop, 3x, batch 16 (official ConvNeXt config).
_base_ = '../_base_/cascade-mask-rcnn_convnext_fpn_4conv1fc-giou_ms-crop-3x_coco.py'
model = dict(
    backbone=dict(
        arch='xlarge',
        drop_path_rate=0.8,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_xlarge_22k_224.pth')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(lr=0.0001),
    paramwise_cfg=dict(decay_rate=0.7, num_layers=12))
