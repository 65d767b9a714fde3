"""Train and test with mmengine's Runner for any mmdet or mmseg config of this project.

Training saves checkpoints in plain types that every upstream tool loads safely (:mod:`.plain_checkpoints`).
Before any work, the checkpoint a run will load (``tools/test.py CONFIG CHECKPOINT``,
``--resume``, ``--load-from`` or the config's ``load_from``) is checked against the built model
(:func:`cvx2_backbone.weights.check_fit`): weights of another model are an error, not mmengine's
warning and a randomly initialised model. ``--resume`` without a path continues from the newest
checkpoint of the work dir that reads completely (:mod:`.resume`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..usage import UsageError
from ..weights import CheckpointError, check_fit
from .config import apply_test_args, apply_train_args, load_config, scope_of, set_work_dir
from .device import adapt_to_cpu
from .distributed import LAUNCHERS, init_cpu_process_group
from .plain_checkpoints import with_plain_checkpoints
from .resume import newest_loadable


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


def check_weights(runner: Runner, checkpoint: str | None, *, allow_partial: bool = False, contents: Any = None,
                  what: str = "checkpoint") -> None:
    """Fail before any work if ``checkpoint`` (a local file the runner will load) does not fit the runner's model."""
    if not checkpoint:
        return
    if contents is None and not Path(checkpoint).is_file():
        print_log(f"{what} {checkpoint} is not a local file: mmengine fetches it, unchecked", logger="current")
        return
    check_fit(runner.model, contents if contents is not None else checkpoint, allow_partial=allow_partial,
              label=checkpoint).log()


def _resume_point(cfg: Config, resume: str | None) -> tuple[Any, list[str]]:
    """For ``--resume`` without a path: point ``cfg.load_from`` at the newest loadable checkpoint."""
    if resume != "auto":
        return None, []
    point = newest_loadable(cfg.work_dir)
    if point.path is None:
        return None, []  # nothing to resume: mmengine starts afresh and says so
    cfg.resume, cfg.load_from = True, str(point.path)
    return point.contents, point.notes()


def train(config: str | Path, *, work_dir: str | None = None, amp: bool = False, resume: str | None = None,
          auto_scale_lr: bool = False, cfg_options: dict[str, Any] | None = None,
          launcher: str = "none", load_from: str | None = None, allow_partial: bool = False) -> Runner:
    """Train ``config``; ``resume`` is None, 'auto' (newest loadable checkpoint of the work dir) or a path;
    ``load_from`` initialises the model from a checkpoint without resuming its optimizer and schedule."""
    cfg = _load(config, cfg_options, work_dir, launcher)
    apply_train_args(cfg, amp=amp, resume=resume, auto_scale_lr=auto_scale_lr, load_from=load_from)
    with_plain_checkpoints(cfg)
    contents, notes = _resume_point(cfg, resume)
    _fit_to_machine(cfg)
    runner = build_runner(cfg)
    for note in notes:
        print_log(note, logger="current", level=logging.WARNING)
    what = "--resume checkpoint" if cfg.get("resume") else "load_from checkpoint"
    try:
        check_weights(runner, cfg.get("load_from"), allow_partial=allow_partial, contents=contents, what=what)
    except CheckpointError as err:
        if cfg.get("resume") and resume != "auto":
            raise UsageError(f"{err}{_other_checkpoint_hint(cfg.work_dir, cfg.load_from)}") from err
        raise
    runner.train()
    return runner


def _other_checkpoint_hint(work_dir: str, given: str) -> str:
    try:
        point = newest_loadable(work_dir)
    except UsageError:
        return ""
    if point.path is None or point.path.resolve() == Path(given).resolve():
        return ""
    return f"\nThe newest checkpoint in {work_dir} that loads is {point.path}: pass --resume {point.path}, or plain " \
           "--resume to pick it"


def test(config: str | Path, checkpoint: str, *, work_dir: str | None = None, out: str | None = None,
         show: bool = False, show_dir: str | None = None, wait_time: float = 2.0,
         cfg_options: dict[str, Any] | None = None, launcher: str = "none",
         allow_partial: bool = False) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the config's test set; return the metrics (COCO AP, mIoU, ...)."""
    cfg = _load(config, cfg_options, work_dir, launcher)
    apply_test_args(cfg, checkpoint=checkpoint, out=out, show=show, show_dir=show_dir, wait_time=wait_time)
    _fit_to_machine(cfg)
    runner = build_runner(cfg)
    check_weights(runner, checkpoint, allow_partial=allow_partial)
    if out is not None and scope_of(cfg) == "mmdet":
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))
    return runner.test()
