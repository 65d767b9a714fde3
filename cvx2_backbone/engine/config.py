"""Config loading for the tools: one entry for mmdet and mmseg, chosen by ``default_scope``.

What the command line changes (work dir, AMP, resume, auto-scale-lr, test outputs) is applied
here the way mmdet's and mmseg's own tools apply it, so their users find the same behaviour.
"""
from __future__ import annotations

import os.path as osp
from pathlib import Path
from typing import Any

from mmengine.config import Config
from mmengine.logging import print_log

from ..resources import config_path

TASKS = {"mmdet": "detection", "mmseg": "segmentation"}


def load_config(path: str | Path, cfg_options: dict[str, Any] | None = None) -> Config:
    """Read a config file (a path, or a name under the package's configs/), merge ``--cfg-options`` and check
    that it names mmdet or mmseg as scope."""
    cfg = Config.fromfile(str(config_path(path)))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope_of(cfg)
    return cfg


def scope_of(cfg: Config) -> str:
    """The config's ``default_scope`` ('mmdet' or 'mmseg'), which decides the task's conventions."""
    scope = cfg.get("default_scope")
    if scope not in TASKS:
        raise ValueError(f"config default_scope is {scope!r}; the tools run detection (default_scope='mmdet') "
                         "and segmentation (default_scope='mmseg') configs; inherit from an mmdet:: or mmseg:: "
                         "base config or set default_scope")
    return scope


def set_work_dir(cfg: Config, config_path: str | Path, work_dir: str | None) -> None:
    """``--work-dir`` wins, then the config's own ``work_dir``, then ``./work_dirs/<config name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", Path(config_path).stem)


def apply_train_args(cfg: Config, *, amp: bool = False, resume: str | None = None,
                     auto_scale_lr: bool = False) -> None:
    """``--amp``, ``--resume [auto|PATH]`` and ``--auto-scale-lr`` as mmdet's tools/train.py does them."""
    if amp:
        if cfg.optim_wrapper.get("type", "OptimWrapper") == "AmpOptimWrapper":
            print_log("AMP training is already enabled in the config.", logger="current")
        else:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
    if auto_scale_lr:
        settings = cfg.get("auto_scale_lr")
        if not settings or "base_batch_size" not in settings:
            raise RuntimeError("--auto-scale-lr needs auto_scale_lr=dict(enable=False, base_batch_size=N) in the "
                               "config, N being the total batch size its learning rate was tuned for")
        settings.enable = True
    if resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        if not Path(resume).is_file():
            raise FileNotFoundError(f"--resume checkpoint {resume!r} does not exist; pass a .pth from a work dir "
                                    "or plain --resume to continue from the work dir's latest checkpoint")
        cfg.resume, cfg.load_from = True, resume


def apply_test_args(cfg: Config, *, checkpoint: str, out: str | None = None, show: bool = False,
                    show_dir: str | None = None, wait_time: float = 2.0) -> None:
    """Checkpoint, ``--out`` (mmseg: prediction folder) and ``--show``/``--show-dir`` as the task's tools do."""
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint!r} does not exist; pass the .pth written by "
                                "tools/train.py (e.g. work_dirs/<config>/epoch_36.pth)")
    cfg.load_from = checkpoint
    scope = scope_of(cfg)
    if show or show_dir:
        hooks = cfg.get("default_hooks", {})
        if "visualization" not in hooks:
            raise RuntimeError("--show/--show-dir need default_hooks.visualization in the config "
                               "(the mmdet/mmseg default_runtime base configs define it)")
        hook = hooks["visualization"]
        hook["draw"] = True
        if show:
            hook["show"], hook["wait_time"] = True, wait_time
        if show_dir:
            if scope == "mmdet":
                hook["test_out_dir"] = show_dir
            else:
                cfg.visualizer["save_dir"] = show_dir
    if out is not None and scope == "mmseg":
        cfg.test_evaluator["output_dir"] = out
        cfg.test_evaluator["keep_results"] = True
    elif out is not None and not out.endswith((".pkl", ".pickle")):
        raise ValueError(f"--out for detection is a pickle file of raw results (.pkl or .pickle), got {out!r}")
