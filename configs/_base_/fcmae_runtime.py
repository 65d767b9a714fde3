# Runtime of FCMAE pre-training: this package's scope, a checkpoint per epoch (the last 3 kept, as the official
# save_ckpt_num), the loss curve in <work_dir>/<timestamp>/vis_data/scalars.json, a different seed per rank.
default_scope = 'cvx2_backbone'
custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
# checkpoints saved as plain tensors and numbers, which every torch.load(weights_only=True) reads
custom_hooks = [dict(type='cvx2_backbone.PlainCheckpointHook')]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
log_processor = dict(window_size=10, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, diff_rank_seed=True)
