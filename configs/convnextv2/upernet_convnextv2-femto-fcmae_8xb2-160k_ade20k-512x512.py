# UperNet, ConvNeXt V2-femto (FCMAE pre-trained), ADE20K 512x512, 160k iterations, batch 16 (8 GPUs x 2).
_base_ = '../_base_/upernet_convnextv2_160k_ade20k-512x512.py'
model = dict(
    backbone=dict(
        arch='femto',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/pt_only/convnextv2_femto_1k_224_fcmae.pt')),
    decode_head=dict(in_channels=[48, 96, 192, 384]),
    auxiliary_head=dict(in_channels=192))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=5))
