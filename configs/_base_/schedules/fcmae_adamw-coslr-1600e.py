# The official FCMAE schedule (ConvNeXt-V2 main_pretrain.py / TRAINING.md): AdamW, betas (0.9, 0.95), weight decay
# 0.05 on everything but biases and norms (as timm's add_weight_decay there: GRN and the mask token are decayed),
# base lr 1.5e-4 per 256 images, i.e. lr = 1.5e-4 * total batch / 256 (2.4e-3 at the recipe's 4096), 40 warm-up
# epochs then a half cosine to 0, both stepped per iteration; 1600 epochs (the paper's ablations use 800).
# --auto-scale-lr rescales lr linearly to your total batch (GPUs x batch per GPU x accumulative_counts).
# mmengine's LinearLR cannot start at exactly 0: it starts at 1e-4 of the lr (mmpretrain's MAE recipes do the same).
max_epochs = 1600
warmup_epochs = 40
total_batch = 4096
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1.5e-4 * total_batch / 256, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0.0, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
auto_scale_lr = dict(enable=False, base_batch_size=total_batch)
