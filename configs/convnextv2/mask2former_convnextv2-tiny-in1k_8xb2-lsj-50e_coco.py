# Mask2Former, ConvNeXt V2-tiny (FCMAE + ImageNet-1K fine-tuned), COCO instance, LSJ 1024, 50 epochs, batch 16 (8 GPUs
# x 2).
_base_ = '../_base_/mask2former_convnextv2_lsj-50e_coco.py'
model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.3,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/im1k/convnextv2_tiny_1k_224_ema.pt')),
    panoptic_head=dict(in_channels=[96, 192, 384, 768]))
