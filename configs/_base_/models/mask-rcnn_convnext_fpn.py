# Mask R-CNN + FPN (mmdet's base model) on a ConvNeXt backbone of this project.
# Model files set arch, drop_path_rate, init_cfg and the matching neck.in_channels.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
# checkpoints saved as plain tensors and numbers, which every torch.load(weights_only=True) reads
custom_hooks = [dict(type='cvx2_backbone.PlainCheckpointHook')]

model = dict(
    backbone=dict(
        _delete_=True,
        type='cvx2_backbone.ConvNeXtV2',
        arch='tiny',
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.2,
        with_cp=False),
    neck=dict(in_channels=[96, 192, 384, 768]))
