# Unlabeled images for FCMAE: every jpg/png/bmp/tiff/webp under data_root (sub-folders included); unreadable
# files and images smaller than one 32-px patch are skipped and listed in the log. Official augmentation:
# RandomResizedCrop(224, scale=(0.2, 1.0), bicubic) and a horizontal flip; ImageNet mean/std in the model.
dataset_type = 'cvx2_backbone.ImageFolder'
data_root = 'data/images/'
train_pipeline = [
    dict(type='cvx2_backbone.LoadImage'),
    dict(type='cvx2_backbone.Torchvision', transform='RandomResizedCrop', size=224, scale=(0.2, 1.0),
         interpolation='bicubic'),
    dict(type='cvx2_backbone.Torchvision', transform='RandomHorizontalFlip'),
    dict(type='cvx2_backbone.PackImage'),
]
train_dataloader = dict(
    batch_size=512,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=train_pipeline))
