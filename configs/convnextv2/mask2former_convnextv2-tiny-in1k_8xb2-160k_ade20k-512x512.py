# Mask2Former, ConvNeXt V2-tiny (FCMAE + ImageNet-1K fine-tuned), ADE20K 512x512, 160k iterations, batch 16 (8 GPUs x
# 2).
_base_ = '../_base_/mask2former_convnextv2_160k_ade20k-512x512.py'
model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.3,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/im1k/convnextv2_tiny_1k_224_ema.pt')),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
