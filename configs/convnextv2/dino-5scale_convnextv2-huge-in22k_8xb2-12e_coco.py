# DINO 5-scale, ConvNeXt V2-huge (FCMAE + ImageNet-22K + 1K fine-tuned at 384), 12 epochs, batch 16 (8 GPUs x 2).
_base_ = '../_base_/dino-5scale_convnextv2_12e_coco.py'
model = dict(
    backbone=dict(
        arch='huge',
        drop_path_rate=0.3,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/im22k/convnextv2_huge_22k_384_ema.pt')),
    neck=dict(in_channels=[352, 704, 1408, 2816]))
