# RetinaNet + FPN, ConvNeXt V2-tiny (FCMAE + ImageNet-1K fine-tuned), multi-scale 640-800, 3x (36 epochs), batch 16 (8
# GPUs x 2).
_base_ = '../_base_/retinanet_convnextv2_fpn_ms-640-800-3x_coco.py'
model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/im1k/convnextv2_tiny_1k_224_ema.pt')),
    neck=dict(in_channels=[192, 384, 768]))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=6))
