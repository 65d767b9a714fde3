# Mask R-CNN, ConvNeXt V2-atto (FCMAE pre-trained), LSJ 1024, 3x, batch 32 (8 GPUs x 4).
_base_ = '../_base_/mask-rcnn_convnextv2_fpn_lsj-3x_coco.py'
model = dict(
    backbone=dict(
        arch='atto',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/pt_only/convnextv2_atto_1k_224_fcmae.pt')),
    neck=dict(in_channels=[40, 80, 160, 320]))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=5))
