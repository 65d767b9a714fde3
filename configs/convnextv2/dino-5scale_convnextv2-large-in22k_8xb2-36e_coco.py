# DINO 5-scale, ConvNeXt V2-large, 36 epochs: the 12-epoch config with the schedule of mmdet's
# dino-5scale_swin-l_8xb2-36e_coco (lr x0.1 after epochs 27 and 33).
_base_ = './dino-5scale_convnextv2-large-in22k_8xb2-12e_coco.py'
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
