# ConvNeXt V1 UperNet on ADE20K, 512x512 crops: the V2 recipe with the V1 backbone
# (160k iterations, AdamW lr 1e-4, wd 0.05, stage-wise lr decay 0.9, poly, total batch 16).
_base_ = './upernet_convnextv2_160k_ade20k-512x512.py'
# layer_scale_init_value as in the official configs (the pre-trained weights then overwrite it).
model = dict(backbone=dict(type='cvx2_backbone.ConvNeXt', layer_scale_init_value=1.0))
