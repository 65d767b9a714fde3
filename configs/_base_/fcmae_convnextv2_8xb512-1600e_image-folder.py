# The official FCMAE ImageNet-1K recipe (total batch 4096, 1600 epochs) on a folder of your own images.
_base_ = [
    './models/fcmae_convnextv2.py',
    './datasets/image-folder_fcmae-224.py',
    './schedules/fcmae_adamw-coslr-1600e.py',
    './fcmae_runtime.py',
]
