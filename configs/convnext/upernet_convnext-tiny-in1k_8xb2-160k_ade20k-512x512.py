# UperNet, ConvNeXt V1-tiny (ImageNet-1K), ADE20K 512x512, 160k iterations, batch 16 (official ConvNeXt config).
_base_ = '../_base_/upernet_convnext_160k_ade20k-512x512.py'
model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=6))
