# Mask2Former on ADE20K (512x512 crops) with ConvNeXt V2: mmseg's recipe (mask2former_r50_8xb2-160k_ade20k-512x512:
# 160k iterations, poly 0.9, AdamW lr 1e-4, wd 0.05, grad clip 0.01, no weight decay on norms and query/level
# embeddings, batch 16) with mmseg's Swin adaptation (backbone swap, drop path 0.3) and the lr rule of the COCO
# Mask2Former configs (block-wise decay 0.9 from the head's lr instead of a flat 0.1x backbone multiplier).
_base_ = [
    'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
    './models/mask2former_convnextv2.py',
]
custom_imports = dict(imports=['mmdet.models', 'cvx2_backbone'], allow_failed_imports=False)
# checkpoints saved as plain tensors and numbers, which every torch.load(weights_only=True) reads
custom_hooks = [dict(type='cvx2_backbone.PlainCheckpointHook')]

model = dict(
    backbone=dict(_base_.mask2former_backbone),
    decode_head=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = _base_.mask2former_optim_wrapper
