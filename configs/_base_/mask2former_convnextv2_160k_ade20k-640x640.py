# Mask2Former on ADE20K (640x640 crops) with ConvNeXt V2, for the large models: mmseg's 640 recipe
# (mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640, which mmseg's Swin-L config inherits) with the
# backbone swap and lr rule of ./mask2former_convnextv2_160k_ade20k-512x512.py.
_base_ = [
    'mmseg::mask2former/mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640.py',
    './models/mask2former_convnextv2.py',
]
custom_imports = dict(imports=['mmdet.models', 'cvx2_backbone'], allow_failed_imports=False)
# checkpoints saved as plain tensors and numbers, which every torch.load(weights_only=True) reads
custom_hooks = [dict(type='cvx2_backbone.PlainCheckpointHook')]

model = dict(
    backbone=dict(_base_.mask2former_backbone, arch='large'),
    decode_head=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = _base_.mask2former_optim_wrapper
