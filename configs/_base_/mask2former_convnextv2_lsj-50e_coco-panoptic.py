# Mask2Former on COCO panoptic with ConvNeXt V2: mmdet's recipe (mask2former_r50_8xb2-lsj-50e_coco-panoptic:
# LSJ 1024, 368750 iterations = 50 epochs at batch 16, lr x0.1 at 327778 and 355092, AdamW lr 1e-4, wd 0.05,
# grad clip 0.01, no weight decay on norms and query/level embeddings) with mmdet's Swin adaptation (backbone swap,
# all four stages, drop path 0.3). The backbone's lr follows block-wise decay 0.9 from the head's lr instead of
# the flat 0.1x multiplier, as in the DINO configs (both set in ./models/mask2former_convnextv2.py). Model files
# set arch, drop path, with_cp, init_cfg and panoptic_head.in_channels (= backbone out_channels; the head passes
# them on to its pixel decoder).
_base_ = [
    'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py',
    './models/mask2former_convnextv2.py',
]
custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
# checkpoints saved as plain tensors and numbers, which every torch.load(weights_only=True) reads
custom_hooks = [dict(type='cvx2_backbone.PlainCheckpointHook')]

model = dict(
    backbone=dict(_base_.mask2former_backbone),
    panoptic_head=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = _base_.mask2former_optim_wrapper
