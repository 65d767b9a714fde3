# DINO 4-scale, ConvNeXt V2-base (FCMAE + ImageNet-22K + 1K fine-tuned at 384), 12 epochs, batch 16 (8 GPUs x 2).
_base_ = '../_base_/dino-4scale_convnextv2_12e_coco.py'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.2,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/im22k/convnextv2_base_22k_384_ema.pt')),
    neck=dict(in_channels=[256, 512, 1024]))
