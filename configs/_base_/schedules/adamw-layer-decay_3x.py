# 36 epochs (lr x0.1 after 27 and 33), 1000-iteration linear warm-up, AdamW with layer-wise lr
# decay and mixed precision. Model files set decay_rate/num_layers/lr where the recipe differs.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'
max_epochs = 36

train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='ConvNeXtLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise', num_layers=12),
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
# --auto-scale-lr scales lr by (GPUs x batch per GPU) / base_batch_size; recipe files set it.
auto_scale_lr = dict(enable=False, base_batch_size=32)
