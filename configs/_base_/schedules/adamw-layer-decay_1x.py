# 12 epochs (lr x0.1 after 8 and 11), 1000-iteration linear warm-up, AdamW with layer-wise lr
# decay and mixed precision.
_base_ = './adamw-layer-decay_3x.py'
max_epochs = 12

train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
auto_scale_lr = dict(base_batch_size=16)
