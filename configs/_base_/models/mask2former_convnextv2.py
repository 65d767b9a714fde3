# What the Mask2Former configs (COCO panoptic, COCO instance, ADE20K) change in mmdet's and mmseg's own
# Mask2Former configs, as two variables their bases read from `_base_` (a `model` or `optim_wrapper` key here
# would clash with those configs'): the ConvNeXt V2 backbone (all four stages, drop path 0.3 as mmdet's and
# mmseg's Swin versions) and the optimizer with block-wise lr decay 0.9 from the head's lr in place of the flat
# 0.1x backbone multiplier (see the DINO base), keeping no weight decay on norms and query/level embeddings.
mask2former_backbone = dict(
    _delete_=True,
    type='cvx2_backbone.ConvNeXtV2',
    arch='tiny',
    out_indices=[0, 1, 2, 3],
    drop_path_rate=0.3,
    with_cp=False)
mask2former_optim_wrapper = dict(
    constructor='ConvNeXtLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(
        _delete_=True,
        decay_rate=0.9,
        decay_type='block_wise',
        custom_keys={key: dict(lr_mult=1.0, decay_mult=0.0) for key in ('query_embed', 'query_feat', 'level_embed')},
        norm_decay_mult=0.0))
