# Fully sharded training (FSDP2, cvx2_backbone.FSDP2Strategy) for any detection or segmentation config of this
# project: list it after the config's own base,
#   _base_ = ['../convnextv2/mask-rcnn_convnextv2-huge-fcmae_fpn_lsj-3x_coco.py', '../_base_/fsdp2.py']
# or switch without a file (tools/train.py picks mmengine's FlexibleRunner when the config has a strategy):
#   tools/dist_train.sh CONFIG 8 --cfg-options strategy.type=cvx2_backbone.FSDP2Strategy
# Options: mixed_precision=None | 'bf16' | 'fp16' (sharded weights stay fp32, gradients are reduced in fp32),
# offload_to_cpu, consolidate='last' | 'every' | 'never' (single-file checkpoints for mmdet's/mmseg's tools).
runner_type = 'FlexibleRunner'
strategy = dict(type='cvx2_backbone.FSDP2Strategy', mixed_precision=None, offload_to_cpu=False, consolidate='last')
