# Mask2Former on COCO instance segmentation with ConvNeXt V2: mmdet's recipe (mask2former_r50_8xb2-lsj-50e_coco:
# the panoptic recipe with 80 thing classes and no stuff) with the same backbone swap and lr rule as
# ./mask2former_convnextv2_lsj-50e_coco-panoptic.py.
_base_ = [
    'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py',
    './models/mask2former_convnextv2.py',
]
custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
# checkpoints saved as plain tensors and numbers, which every torch.load(weights_only=True) reads
custom_hooks = [dict(type='cvx2_backbone.PlainCheckpointHook')]

model = dict(
    backbone=dict(_base_.mask2former_backbone),
    panoptic_head=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = _base_.mask2former_optim_wrapper
