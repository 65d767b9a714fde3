"""Train and test with mmengine's Runner for any mmdet or mmseg config of this project."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .checkpoint_globals import allow_mmengine_checkpoints
from .config import apply_test_args, apply_train_args, load_config, scope_of, set_work_dir
from .device import adapt_to_cpu
from .distributed import LAUNCHERS, init_cpu_process_group


def _load(config: str | Path, cfg_options: dict[str, Any] | None, work_dir: str | None, launcher: str) -> Config:
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    cfg = load_config(config, cfg_options)
    cfg.launcher = launcher
    set_work_dir(cfg, config, work_dir)
    return cfg


def _fit_to_machine(cfg: Config) -> None:
    """CPU fallbacks (after the command line has had its say), and the gloo group for CPU DDP."""
    adapt_to_cpu(cfg, cfg.launcher)
    if cfg.launcher != "none" and not torch.cuda.is_available():
        init_cpu_process_group(cfg.launcher, cfg.get("env_cfg", {}).get("dist_cfg", {}).get("timeout"))


def build_runner(cfg: Config) -> Runner:
    """The config's ``runner_type`` if it names one, else mmengine's Runner."""
    return RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)


def train(config: str | Path, *, work_dir: str | None = None, amp: bool = False, resume: str | None = None,
          auto_scale_lr: bool = False, cfg_options: dict[str, Any] | None = None,
          launcher: str = "none") -> Runner:
    """Train ``config``; ``resume`` is None, 'auto' (latest checkpoint of the work dir) or a path."""
    cfg = _load(config, cfg_options, work_dir, launcher)
    apply_train_args(cfg, amp=amp, resume=resume, auto_scale_lr=auto_scale_lr)
    _fit_to_machine(cfg)
    with allow_mmengine_checkpoints():
        runner = build_runner(cfg)
        runner.train()
    return runner


def test(config: str | Path, checkpoint: str, *, work_dir: str | None = None, out: str | None = None,
         show: bool = False, show_dir: str | None = None, wait_time: float = 2.0,
         cfg_options: dict[str, Any] | None = None, launcher: str = "none") -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the config's test set; return the metrics (COCO AP, mIoU, ...)."""
    cfg = _load(config, cfg_options, work_dir, launcher)
    apply_test_args(cfg, checkpoint=checkpoint, out=out, show=show, show_dir=show_dir, wait_time=wait_time)
    _fit_to_machine(cfg)
    with allow_mmengine_checkpoints():
        runner = build_runner(cfg)
        if out is not None and scope_of(cfg) == "mmdet":
            from mmdet.evaluation import DumpDetResults
            runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))
        return runner.test()
