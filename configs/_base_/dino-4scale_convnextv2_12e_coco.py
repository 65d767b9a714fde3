# DINO 4-scale on COCO with ConvNeXt V2: mmdet's DINO recipe (dino-4scale_r50_8xb2-12e_coco: 900 queries,
# two-stage, box refinement, DETR multi-scale + crop augmentation, 12 epochs, lr x0.1 after 11, AdamW lr 1e-4,
# wd 1e-4, grad clip 0.1, total batch 16) with mmdet's Swin-L DINO adaptation (backbone swap, drop path 0.2).
# The backbone's lr follows block-wise decay 0.9 from the head's lr instead of a flat 0.1x multiplier: InternImage
# trained DINO both ways at lr 1e-4 (57.5 vs 57.6 box AP for L) and ConvNeXt is fine-tuned with layer decay
# everywhere else. Model files set arch, drop path, init_cfg and neck.in_channels (= backbone out_channels).
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
# checkpoints saved as plain tensors and numbers, which every torch.load(weights_only=True) reads
custom_hooks = [dict(type='cvx2_backbone.PlainCheckpointHook')]

model = dict(
    backbone=dict(
        _delete_=True,
        type='cvx2_backbone.ConvNeXtV2',
        arch='tiny',
        out_indices=[1, 2, 3],  # 4-scale: strides 8, 16, 32 plus the neck's extra stride-64 level
        drop_path_rate=0.2,
        with_cp=False),
    neck=dict(in_channels=[192, 384, 768]))
optim_wrapper = dict(
    constructor='ConvNeXtLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(_delete_=True, decay_rate=0.9, decay_type='block_wise'))
