"""Training and testing logic behind tools/train.py and tools/test.py.

One entry for mmdet and mmseg configs (picked by ``default_scope``), mmdet's command-line flags,
safe resuming of mmengine checkpoints on torch >= 2.6, CPU fallbacks (gloo DDP, bfloat16 AMP), and fully
sharded training (FSDP2) through mmengine's FlexibleRunner.
"""
from ..checkpoint_globals import mmengine_checkpoint_globals
from .cli import test_main, train_main
from .config import load_config, scope_of
from .device import CPUAutocastOptimWrapper, adapt_to_cpu
from .distributed import DeviceAwareDDP, init_cpu_process_group
from .fsdp2 import FSDP2Strategy
from .runner import build_runner, test, train

__all__ = ["CPUAutocastOptimWrapper", "DeviceAwareDDP", "FSDP2Strategy", "adapt_to_cpu",
           "build_runner", "init_cpu_process_group", "load_config", "mmengine_checkpoint_globals", "scope_of",
           "test", "test_main", "train", "train_main"]
