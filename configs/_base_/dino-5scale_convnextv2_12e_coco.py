# DINO 5-scale on COCO with ConvNeXt V2 (the large models): the 4-scale recipe with all four stages and the
# neck's extra stride-64 level, as mmdet's dino-5scale_swin-l_8xb2-12e_coco.
_base_ = './dino-4scale_convnextv2_12e_coco.py'
num_levels = 5
model = dict(
    num_feature_levels=num_levels,
    backbone=dict(out_indices=[0, 1, 2, 3]),
    neck=dict(in_channels=[96, 192, 384, 768], num_outs=num_levels),
    encoder=dict(layer_cfg=dict(self_attn_cfg=dict(num_levels=num_levels))),
    decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(num_levels=num_levels))))
