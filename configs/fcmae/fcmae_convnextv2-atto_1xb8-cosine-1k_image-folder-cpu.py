# FCMAE on a small folder of your own images on one CPU (minutes to hours; `cvx2 fcmae-show` runs it): ConvNeXt
# V2-atto, batch 8 at 224 px, 1000 iterations (100 warm-up, cosine to 0). Differs from the official recipe on
# purpose, for short runs on little data: lr 1e-3, far above the linear scaling rule's 1.5e-4 x 8 / 256 = 4.7e-6,
# which barely moves in 1000 steps; the loss regresses raw pixels (norm_pix_loss=False, so reconstructions are
# pictures of the image, not of per-patch statistics); the weights start from the backbone's std-0.02 init.
_base_ = [
    '../_base_/models/fcmae_convnextv2.py',
    '../_base_/datasets/image-folder_fcmae-224.py',
    '../_base_/fcmae_runtime.py',
]
max_iters = 1000
warmup_iters = 100
model = dict(arch='atto', norm_pix_loss=False, init='convnext')
train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=False, pin_memory=False,
    sampler=dict(type='InfiniteSampler', shuffle=True))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', T_max=max_iters - warmup_iters, eta_min=0.0, by_epoch=False, begin=warmup_iters,
         end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
auto_scale_lr = dict(enable=False, base_batch_size=8)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
