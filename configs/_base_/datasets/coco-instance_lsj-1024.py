# COCO instance segmentation with large-scale jitter (LSJ): resize by 0.1..2.0 around 1024x1024,
# then crop 1024x1024 (as in the ConvNeXt V2 detection recipe). 4 images per GPU (8 GPUs: 32).
_base_ = 'mmdet::_base_/datasets/coco_instance.py'
image_size = (1024, 1024)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=4, num_workers=4, dataset=dict(pipeline=train_pipeline))
