# 160k iterations, poly (power 1) decay to 0 with a 1500-iteration linear warm-up multiplied in, AdamW
# with stage-wise lr decay and mixed precision, as the official ConvNeXt UperNet configs (mmcv's poly
# runs over all iterations, warm-up included; mmseg's port, starting the poly after the warm-up, gives
# up to 0.9% more lr).
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    constructor='ConvNeXtLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=12),
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=160000),
]
# 8 GPUs x 2 images; --auto-scale-lr scales lr by (GPUs x batch per GPU) / 16.
auto_scale_lr = dict(enable=False, base_batch_size=16)
