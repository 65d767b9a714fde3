# Mask2Former on ADE20K (512x512 crops) with ConvNeXt V2: mmseg's recipe (mask2former_r50_8xb2-160k_ade20k-512x512:
# 160k iterations, poly 0.9, AdamW lr 1e-4, wd 0.05, grad clip 0.01, no weight decay on norms and query/level
# embeddings, batch 16) with mmseg's Swin adaptation (backbone swap, drop path 0.3) and the lr rule of the COCO
# Mask2Former configs (block-wise decay 0.9 from the head's lr instead of a flat 0.1x backbone multiplier).
_base_ = 'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmdet.models', 'cvx2_backbone'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='cvx2_backbone.ConvNeXtV2',
        arch='tiny',
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.3,
        with_cp=False),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
optim_wrapper = dict(
    constructor='ConvNeXtLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(
        _delete_=True,
        decay_rate=0.9,
        decay_type='block_wise',
        custom_keys={'query_embed': embed_multi, 'query_feat': embed_multi, 'level_embed': embed_multi},
        norm_decay_mult=0.0))
