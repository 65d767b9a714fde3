# ConvNeXt V1 UperNet on ADE20K, 640x640 crops: the V2 recipe with the V1 backbone
# (160k iterations, AdamW lr 1e-4, wd 0.05, stage-wise lr decay 0.9, poly, total batch 16).
_base_ = './upernet_convnextv2_160k_ade20k-640x640.py'
model = dict(backbone=dict(type='cvx2_backbone.ConvNeXt'))
