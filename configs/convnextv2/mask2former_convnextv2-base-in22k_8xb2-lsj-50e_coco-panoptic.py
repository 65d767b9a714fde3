# Mask2Former, ConvNeXt V2-base (FCMAE + ImageNet-22K + 1K fine-tuned at 384), COCO panoptic, LSJ 1024, 50 epochs,
# batch 16 (8 GPUs x 2).
_base_ = '../_base_/mask2former_convnextv2_lsj-50e_coco-panoptic.py'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/im22k/convnextv2_base_22k_384_ema.pt')),
    panoptic_head=dict(in_channels=[128, 256, 512, 1024]))
