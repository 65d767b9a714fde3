# Mask R-CNN, DINOv3 ConvNeXt-base (LVD-1689M), fine-tuned, multi-scale + crop, 3x, batch 16.
# No mmdet recipe is published for DINOv3 ConvNeXt backbones: everything but the backbone's weights and its
# output norms follows the official ConvNeXt V1 Mask R-CNN recipe
# (configs/convnext/mask-rcnn_convnext-tiny-in1k_fpn_ms-crop-3x_coco.py: AdamW lr 1e-4, wd 0.05,
# layer-wise lr decay 0.95, AutoAugment multi-scale + crop, 36 epochs, batch 16 = 8 GPUs x 2, fp16);
# the V1 recipe is published for ConvNeXt-tiny only: num_layers=12 follows base's depth (as the V1
# base configs), drop path 0.4 as for tiny.
# Weights: DINOv3 ConvNeXt-base distilled from the DINOv3 ViT-7B on LVD-1689M (timm's copy of Meta's release; the
# official dinov3_convnext_base_pretrain_lvd1689m-*.pth or a transformers dinov3_convnext folder load the same way).
# They come under the DINOv3 License (https://ai.meta.com/resources/models-and-libraries/dinov3-license/), not this
# project's: the load report states it. If the hub asks, accept the license there and log in (`hf auth login`).
_base_ = '../_base_/mask-rcnn_convnext_fpn_ms-crop-3x_coco.py'
model = dict(
    # DINOv3's input normalisation for its LVD-1689M weights: ImageNet mean/std on RGB (dinov3 README, make_transform),
    # the values mmdet's base model uses too; written out so that they cannot drift.
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,  # the V1-tiny recipe's
        # the V1 recipe's LayerNorm on every output; norm3 starts as DINOv3's final norm (its norms[3], which its dense
        # features apply to stage 4), norm0..2 as fresh LayerNorms (DINOv3 applies none to stages 1-3)
        out_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint='timm/convnext_base.dinov3_lvd1689m')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))  # base's depth
