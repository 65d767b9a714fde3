# FCMAE pre-training of ConvNeXt V2-large on your own images (every jpg/png under data_root), with the official
# ImageNet-1K recipe: 8 GPUs x 512 = 4096 images per step, lr 1.5e-4 x 4096 / 256, 40 + 1560 epochs.
# Other GPU counts: --auto-scale-lr, or optim_wrapper.accumulative_counts to keep 4096.
_base_ = '../_base_/fcmae_convnextv2_8xb512-1600e_image-folder.py'
model = dict(arch='large')
