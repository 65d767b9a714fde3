# Mask2Former on ADE20K (640x640 crops) with ConvNeXt V2, for the large models: mmseg's 640 recipe
# (mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640, which mmseg's Swin-L config inherits) with the
# backbone swap and lr rule of ./mask2former_convnextv2_160k_ade20k-512x512.py.
_base_ = 'mmseg::mask2former/mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640.py'
custom_imports = dict(imports=['mmdet.models', 'cvx2_backbone'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='cvx2_backbone.ConvNeXtV2',
        arch='large',
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.3,
        with_cp=False),
    decode_head=dict(in_channels=[192, 384, 768, 1536]))
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
optim_wrapper = dict(
    constructor='ConvNeXtLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(
        _delete_=True,
        decay_rate=0.9,
        decay_type='block_wise',
        custom_keys={'query_embed': embed_multi, 'query_feat': embed_multi, 'level_embed': embed_multi},
        norm_decay_mult=0.0))
