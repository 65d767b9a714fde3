# RetinaNet + FPN (mmdet's base model) on a ConvNeXt backbone of this project, as mmdet's Swin-T RetinaNet:
# stages 2-4 (strides 8-32) into the FPN, which adds levels 6 and 7 by stride-2 convs on its input.
# Model files set arch, drop_path_rate, init_cfg and the matching neck.in_channels.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
# checkpoints saved as plain tensors and numbers, which every torch.load(weights_only=True) reads
custom_hooks = [dict(type='cvx2_backbone.PlainCheckpointHook')]

model = dict(
    backbone=dict(
        _delete_=True,
        type='cvx2_backbone.ConvNeXtV2',
        arch='tiny',
        out_indices=[1, 2, 3],
        drop_path_rate=0.2,
        with_cp=False),
    neck=dict(in_channels=[192, 384, 768], start_level=0, num_outs=5))
