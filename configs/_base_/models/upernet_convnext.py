# UperNet (mmseg's base model) on a ConvNeXt backbone of this project, 150 ADE20K classes.
# Model files set arch, drop_path_rate, init_cfg and the heads' in_channels.
_base_ = 'mmseg::_base_/models/upernet_r50.py'
custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
# checkpoints saved as plain tensors and numbers, which every torch.load(weights_only=True) reads
custom_hooks = [dict(type='cvx2_backbone.PlainCheckpointHook')]

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='cvx2_backbone.ConvNeXtV2',
        arch='tiny',
        out_indices=[0, 1, 2, 3],
        drop_path_rate=0.2,
        with_cp=False),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
