# Mask R-CNN on a frozen DINOv3 ConvNeXt-tiny (LVD-1689M): only the output norm, FPN and heads train.
# The DINOv3 paper evaluates its backbones frozen (dense tasks on top of fixed features); this is that protocol with
# the fine-tuned config's recipe (mask-rcnn_convnext-tiny-dinov3-lvd1689m_fpn_ms-crop-3x_coco.py) for everything
# else. The backbone gives DINOv3's
# own dense features, get_intermediate_layers(norm=True): raw stages 1-3, stage 4 through DINOv3's final norm
# (out_norm=['stage4']). frozen_stages=4 freezes the stem, downsampling layers and every block (in eval mode, so
# drop path is off: drop_path_rate=0); norm3 stays trainable (it sits outside the stages).
# Weights: the DINOv3 License applies (https://ai.meta.com/resources/models-and-libraries/dinov3-license/).
_base_ = './mask-rcnn_convnext-tiny-dinov3-lvd1689m_fpn_ms-crop-3x_coco.py'
model = dict(backbone=dict(frozen_stages=4, drop_path_rate=0.0, out_norm=['stage4']))
