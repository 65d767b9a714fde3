# UperNet, ConvNeXt V2-nano (FCMAE pre-trained), ADE20K 512x512, 160k iterations, batch 16 (8 GPUs x 2).
_base_ = '../_base_/upernet_convnextv2_160k_ade20k-512x512.py'
model = dict(
    backbone=dict(
        arch='nano',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/pt_only/convnextv2_nano_1k_224_fcmae.pt')),
    decode_head=dict(in_channels=[80, 160, 320, 640]),
    auxiliary_head=dict(in_channels=320))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=6))
