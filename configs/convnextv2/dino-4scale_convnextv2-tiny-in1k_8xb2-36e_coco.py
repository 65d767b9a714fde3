# DINO 4-scale, ConvNeXt V2-tiny, 36 epochs: the 12-epoch config with the schedule of mmdet's
# dino-4scale_r50_8xb2-36e_coco (lr x0.1 after epoch 30).
_base_ = './dino-4scale_convnextv2-tiny-in1k_8xb2-12e_coco.py'
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[30], gamma=0.1),
]
