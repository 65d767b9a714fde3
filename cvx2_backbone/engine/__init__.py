"""Training and testing logic behind tools/train.py and tools/test.py (their command line:
:mod:`cvx2_backbone.cli.train_test`).

One entry for mmdet and mmseg configs (picked by ``default_scope``), mmdet's command-line flags,
safe resuming of mmengine checkpoints on torch >= 2.6, CPU fallbacks (gloo DDP, bfloat16 AMP), and fully
sharded training (FSDP2) through mmengine's FlexibleRunner.
"""
from cvx2_backbone.utils.checkpoint_globals import mmengine_checkpoint_globals
from cvx2_backbone.engine.config import load_config, scope_of
from cvx2_backbone.engine.device import CPUAutocastOptimWrapper, adapt_to_cpu
from cvx2_backbone.engine.distributed import DeviceAwareDDP, init_cpu_process_group
from cvx2_backbone.engine.fsdp2 import FSDP2Strategy
from cvx2_backbone.engine.runner import build_runner, test, train

__all__ = ["CPUAutocastOptimWrapper", "DeviceAwareDDP", "FSDP2Strategy", "adapt_to_cpu",
           "build_runner", "init_cpu_process_group", "load_config", "mmengine_checkpoint_globals", "scope_of",
           "test", "train"]
