# FCMAE (ConvNeXt V2 masked autoencoder) as in the official code: mask ratio 0.6 on the 32-px patch grid, decoder
# 1x1 conv to 512, one ConvNeXt V2 block, 1x1 conv to 32*32*3 pixels, MSE on hidden patches against per-patch
# normalised pixels, the official initialisation. GRN statistics per image over visible sites (what the dense model
# computes when fine-tuned); grn_stats='batch' reproduces the official MinkowskiGRN (whole-batch statistics).
model = dict(
    type='cvx2_backbone.FCMAE',
    arch='base',
    mask_ratio=0.6,
    decoder_dim=512,
    decoder_depth=1,
    norm_pix_loss=True,
    grn_stats='image',
    masked_impl='gather',
    init='official',
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]))
