# The 3x AdamW layer-decay schedule with the warm-up of the official ConvNeXt (V1) detection configs, which
# inherit mmdet 2.11's schedules/schedule_1x.py: linear, 500 iterations from 0.001.
_base_ = './adamw-layer-decay_3x.py'

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end={{_base_.max_epochs}}, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
