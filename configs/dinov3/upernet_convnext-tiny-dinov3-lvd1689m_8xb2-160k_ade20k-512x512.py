# UperNet, DINOv3 ConvNeXt-tiny (LVD-1689M), fine-tuned, ADE20K 512x512, 160k iterations, batch 16.
# No mmseg recipe is published for DINOv3 ConvNeXt backbones: everything but the backbone's weights and its
# output norms follows the official ConvNeXt V1 UperNet recipe
# (configs/convnext/upernet_convnext-tiny-in1k_8xb2-160k_ade20k-512x512.py: AdamW lr 1e-4, wd 0.05,
# stage-wise lr decay 0.9, poly schedule, 160k iterations, 512x512 crops, batch 16 = 8 GPUs x 2, fp16).
# Weights: DINOv3 ConvNeXt-tiny distilled from the DINOv3 ViT-7B on LVD-1689M (timm's copy of Meta's release; the
# official dinov3_convnext_tiny_pretrain_lvd1689m-*.pth or a transformers dinov3_convnext folder load the same way).
# They come under the DINOv3 License (https://ai.meta.com/resources/models-and-libraries/dinov3-license/), not this
# project's: the load report states it. If the hub asks, accept the license there and log in (`hf auth login`).
_base_ = '../_base_/upernet_convnext_160k_ade20k-512x512.py'
model = dict(
    # DINOv3's input normalisation for its LVD-1689M weights: ImageNet mean/std on RGB (dinov3 README, make_transform),
    # the values mmseg's base model uses too; written out so that they cannot drift.
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.4,  # the V1-tiny recipe's
        # the V1 recipe's LayerNorm on every output; norm3 starts as DINOv3's final norm (its norms[3], which its dense
        # features apply to stage 4), norm0..2 as fresh LayerNorms (DINOv3 applies none to stages 1-3)
        out_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint='timm/convnext_tiny.dinov3_lvd1689m')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=6))  # the V1-tiny recipe's
