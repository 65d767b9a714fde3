# DINO 4-scale, ConvNeXt V2-tiny (FCMAE + ImageNet-1K fine-tuned), 12 epochs, batch 16 (8 GPUs x 2).
_base_ = '../_base_/dino-4scale_convnextv2_12e_coco.py'
model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.2,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/im1k/convnextv2_tiny_1k_224_ema.pt')),
    neck=dict(in_channels=[192, 384, 768]))
