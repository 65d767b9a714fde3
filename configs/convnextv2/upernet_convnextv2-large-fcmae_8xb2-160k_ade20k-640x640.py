# UperNet, ConvNeXt V2-large (FCMAE pre-trained), ADE20K 640x640, 160k iterations, batch 16 (8 GPUs x 2).
_base_ = '../_base_/upernet_convnextv2_160k_ade20k-640x640.py'
model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/pt_only/convnextv2_large_1k_224_fcmae.pt')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
