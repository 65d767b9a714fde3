# ConvNeXt V2 UperNet on ADE20K, 512x512 crops: 160k iterations, AdamW lr 1e-4, wd 0.05,
# stage-wise lr decay 0.9, poly schedule, total batch 16 (8 GPUs x 2).
_base_ = [
    './models/upernet_convnext.py',
    'mmseg::_base_/datasets/ade20k.py',
    './schedules/adamw-stage-decay_poly-160k.py',
    'mmseg::_base_/default_runtime.py',
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(type='cvx2_backbone.ConvNeXtV2'),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)),
)
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
