# Mask R-CNN, ConvNeXt V2-huge (FCMAE pre-trained), LSJ 1024, 3x, batch 32 (8 GPUs x 4).
_base_ = '../_base_/mask-rcnn_convnextv2_fpn_lsj-3x_coco.py'
model = dict(
    backbone=dict(
        arch='huge',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/pt_only/convnextv2_huge_1k_224_fcmae.pt')),
    neck=dict(in_channels=[352, 704, 1408, 2816]))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
