# Mask2Former on COCO instance segmentation with ConvNeXt V2: mmdet's recipe (mask2former_r50_8xb2-lsj-50e_coco:
# the panoptic recipe with 80 thing classes and no stuff) with the same backbone swap and lr rule as
# ./mask2former_convnextv2_lsj-50e_coco-panoptic.py.
_base_ = 'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py'
custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='cvx2_backbone.ConvNeXtV2',
        arch='tiny',
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.3,
        with_cp=False),
    panoptic_head=dict(in_channels=[96, 192, 384, 768]))
embed_multi = dict(lr_mult=1.0, decay_mult=0.0)
optim_wrapper = dict(
    constructor='ConvNeXtLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(
        _delete_=True,
        decay_rate=0.9,
        decay_type='block_wise',
        custom_keys={'query_embed': embed_multi, 'query_feat': embed_multi, 'level_embed': embed_multi},
        norm_decay_mult=0.0))
