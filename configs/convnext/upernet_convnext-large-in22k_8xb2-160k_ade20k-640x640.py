# UperNet, ConvNeXt V1-large (ImageNet-22K), ADE20K 640x640, 160k iterations, batch 16 (official ConvNeXt config).
_base_ = '../_base_/upernet_convnext_160k_ade20k-640x640.py'
model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_large_22k_224.pth')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))
optim_wrapper = dict(type='OptimWrapper', paramwise_cfg=dict(num_layers=12))
