# RetinaNet + FPN, ConvNeXt V2-atto (FCMAE + ImageNet-1K fine-tuned), 1x (12 epochs), batch 16 (8 GPUs x 2).
_base_ = '../_base_/retinanet_convnextv2_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        arch='atto',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/im1k/convnextv2_atto_1k_224_ema.pt')),
    neck=dict(in_channels=[80, 160, 320]))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=5))
