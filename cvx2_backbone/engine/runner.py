"""Train and test with mmengine's Runner for any mmdet or mmseg config of this project.

Training saves checkpoints in plain types that every upstream tool loads safely (:mod:`.plain_checkpoints`).
Before any work, the checkpoint a run will load (``tools/test.py CONFIG CHECKPOINT``,
``--resume``, ``--load-from`` or the config's ``load_from``) is checked against the built model
(:func:`cvx2_backbone.weights.check_fit`): weights of another model are an error, not mmengine's
warning and a randomly initialised model. ``--resume`` without a path continues from the newest
checkpoint of the work dir that reads completely (:mod:`.resume`).

What mmengine rejects while it builds the run from the config (model, loops, optimizer) is the config's mistake,
reported in one line (exit 2); a refused run leaves no timestamped folder behind (:func:`refusal_cleanup`).
"""
from __future__ import annotations

import logging
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import MODELS, RUNNERS
from mmengine.runner import Runner
from torch import nn

from cvx2_backbone.utils.files import remove_stale_temporaries
from cvx2_backbone.utils.usage import UsageError, user_errors, user_input
from cvx2_backbone.weights import CheckpointError, check_fit
from cvx2_backbone.engine.config import apply_test_args, apply_train_args, load_config, scope_of, set_work_dir
from cvx2_backbone.engine.device import adapt_to_cpu
from cvx2_backbone.engine.distributed import LAUNCHERS, init_cpu_process_group
from cvx2_backbone.engine.hooks import with_plain_checkpoints
from cvx2_backbone.engine.resume import earlier_run_problem, newest_loadable
from cvx2_backbone.engine.sharded_checkpoint import (DCP_METADATA, RUNNER_STATE, is_sharded_checkpoint,
                                                     sharded_checkpoint_problem)


def _load(config: str | Path, cfg_options: dict[str, Any] | None, work_dir: str | None, launcher: str) -> Config:
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    cfg = load_config(config, cfg_options)
    cfg.launcher = launcher
    set_work_dir(cfg, config, work_dir)
    _own_visualizer(cfg)
    return cfg


_VISUALIZER_NAME = "_cvx2_visualizer_name"  # the config's own name, kept aside while the run builds


def _own_visualizer(cfg: Config) -> None:
    """Let mmengine name the visualizer after the run: with a fixed name (mmdet's and mmseg's runtimes say
    'visualizer') a second run in the same process reuses the first run's instance, which writes into that run's
    folder (gone, if the first run was refused). The config written into the work dir keeps the name
    (:func:`_write_config`): upstream tools such as browse_dataset.py need it."""
    visualizer = cfg.get("visualizer")
    if isinstance(visualizer, dict) and "name" in visualizer:
        cfg[_VISUALIZER_NAME] = visualizer.pop("name")


def _write_config(runner: Runner, cfg: Config) -> None:
    """Write the run's config into the work dir again, as mmengine's Runner did, with the visualizer's name back:
    the written config is one every upstream tool takes as it is."""
    name = cfg.get(_VISUALIZER_NAME)
    written = getattr(runner, "cfg", None)
    if name is None or written is None:
        return
    written.pop(_VISUALIZER_NAME, None)
    if isinstance(written.get("visualizer"), dict):
        written.visualizer["name"] = name
    runner.dump_config()


def _fit_to_machine(cfg: Config) -> None:
    """CPU fallbacks (after the command line has had its say), and the gloo group for CPU DDP."""
    adapt_to_cpu(cfg, cfg.launcher)
    if cfg.launcher != "none" and not torch.cuda.is_available():
        init_cpu_process_group(cfg.launcher, cfg.get("env_cfg", {}).get("dist_cfg", {}).get("timeout"))


def build_runner(cfg: Config) -> Runner:
    """The config's ``runner_type`` if it names one, else mmengine's ``FlexibleRunner`` for a config with a
    ``strategy`` (e.g. ``--cfg-options strategy.type=cvx2_backbone.FSDP2Strategy``), else mmengine's Runner."""
    if cfg.get("strategy") and "runner_type" not in cfg:
        cfg.runner_type = "FlexibleRunner"
    return RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)


_RUN_FOLDER = re.compile(r"^\d{8}_\d{6}$")  # mmengine's <work_dir>/<timestamp>/ of one run


@contextmanager
def refusal_cleanup(cfg: Config) -> Iterator[None]:
    """When the block ends in a user error, remove what mmengine's Runner writes before any check: the timestamped
    run folder, the config copy in the work dir (if it was not there before) and the work dir (if this run made it).
    A refused run leaves nothing behind."""
    work_dir = Path(cfg.work_dir)
    existed = work_dir.exists()
    before = set(work_dir.iterdir()) if existed else set()
    config_copy = Path(cfg.filename).name if cfg.filename else None
    try:
        yield
    except user_errors():
        try:  # the other ranks of a distributed run remove the same files at the same time
            for path in set(work_dir.iterdir()) - before:
                if path.is_dir() and _RUN_FOLDER.match(path.name):
                    shutil.rmtree(path, ignore_errors=True)
                elif path.is_file() and path.name == config_copy:
                    path.unlink(missing_ok=True)
            if not existed and not any(work_dir.iterdir()):
                work_dir.rmdir()
        except OSError:
            pass
        raise


@contextmanager
def config_mistakes() -> Iterator[None]:
    """What mmengine raises while building the run from the config (an invalid backbone argument, an unknown key,
    a loop argument it lacks) becomes a usage error naming it."""
    try:
        with user_input(KeyError):
            yield
    except UsageError as err:
        if isinstance(err.__cause__, (ValueError, TypeError, KeyError)) and type(err) is UsageError:
            raise UsageError(f"the config does not build: {err}; fix the config or its --cfg-options override "
                             "(--debug shows where it failed)") from err.__cause__
        raise
def _model_of(runner: Runner) -> nn.Module:
    """The runner's model; FlexibleRunner builds it only in ``train()``, so a stand-in is built on the meta device
    (names and shapes, no memory) for checking checkpoints."""
    if isinstance(runner.model, nn.Module):
        return runner.model
    with torch.device("meta"):
        return MODELS.build(runner.model)


def _levels_problem(model: nn.Module) -> str | None:
    """Whether the layer after this package's backbone (the neck, or mmseg's decode head) takes what the backbone
    gives: mmdet's FPN and mmseg's heads fail only in the first forward pass, with a shape error."""
    model = getattr(model, "module", model)  # DDP's wrapper
    backbone = getattr(model, "backbone", None)
    channels = getattr(backbone, "out_channels", None)
    if channels is None or not type(backbone).__module__.startswith("cvx2_backbone"):
        return None
    channels = [int(c) for c in channels]
    neck = getattr(model, "neck", None)
    if isinstance(neck, nn.Sequential) and len(neck):
        neck = neck[0]
    takes, setting, wanted = None, "", channels
    if neck is not None:
        takes, setting = getattr(neck, "in_channels", None), "model.neck.in_channels"
    else:
        head = getattr(model, "decode_head", None)
        takes, setting = getattr(head, "in_channels", None), "model.decode_head.in_channels"
        index = getattr(head, "in_index", None)
        if takes is not None and index is not None:
            indices = [index] if isinstance(index, int) else list(index)
            if any(not -len(channels) <= i < len(channels) for i in indices):
                return (f"model.decode_head.in_index={index} picks outputs the backbone does not have: it gives "
                        f"{len(channels)} ({channels} channels); set in_index within 0..{len(channels) - 1}")
            wanted = [channels[i] for i in indices]
    if takes is None:
        return None
    takes = [int(takes)] if isinstance(takes, int) else [int(c) for c in takes]
    if takes == wanted:
        return None
    return (f"{setting}={takes} does not match the backbone's outputs: model.backbone gives out_channels {channels} "
            f"({len(channels)} levels, out_indices={list(getattr(backbone, 'out_indices', [])) or '?'}); set "
            f"{setting}={wanted}, or change model.backbone.out_indices")


def check_weights(runner: Runner, checkpoint: str | None, *, allow_partial: bool = False, contents: Any = None,
                  what: str = "checkpoint") -> None:
    """Fail before any work if ``checkpoint`` (a local file the runner will load) does not fit the runner's model."""
    if not checkpoint:
        return
    if is_sharded_checkpoint(checkpoint):
        folder = Path(checkpoint)
        if not any((folder / name).exists() for name in (DCP_METADATA, RUNNER_STATE)):
            kind = " (a Hugging Face model folder)" if (folder / "config.json").is_file() else ""
            raise UsageError(f"{what} {checkpoint} is a folder{kind}, not a training checkpoint; pass the .pth file "
                             "tools/train.py wrote (an FSDP2 run: its *_consolidated.pth), or put backbone weights in "
                             f"the config: model.backbone.init_cfg=dict(type='Pretrained', checkpoint='{checkpoint}')")
        problem = sharded_checkpoint_problem(checkpoint)
        if problem:
            fix = "plain --resume to pick the newest complete one" if "resume" in what else \
                "the *_consolidated.pth file written beside it"
            raise UsageError(f"{what} {checkpoint} is {problem}; pass another one, or {fix}")
        return  # torch.distributed.checkpoint checks names and shapes as it loads
    if contents is None and not Path(checkpoint).is_file():
        print_log(f"{what} {checkpoint} is not a local file: mmengine fetches it, unchecked", logger="current")
        return
    check_fit(_model_of(runner), contents if contents is not None else checkpoint, allow_partial=allow_partial,
              label=checkpoint).log()


def _resume_point(cfg: Config, resume: str | None) -> tuple[Any, list[str]]:
    """For ``--resume`` without a path: point ``cfg.load_from`` at the newest loadable checkpoint."""
    if resume != "auto":
        return None, []
    point = newest_loadable(cfg.work_dir)
    if point.path is None:  # a first run of a job that is resubmitted with --resume: start, and say so plainly
        cfg.resume = False
        return None, [f"--resume: {cfg.work_dir} holds no checkpoint to resume from; training starts from scratch"]
    cfg.resume, cfg.load_from = True, str(point.path)
    return point.contents, point.notes()


def train(config: str | Path, *, work_dir: str | None = None, amp: bool = False, resume: str | None = None,
          auto_scale_lr: bool = False, cfg_options: dict[str, Any] | None = None,
          launcher: str = "none", load_from: str | None = None, allow_partial: bool = False) -> Runner:
    """Train ``config``; ``resume`` is None, 'auto' (newest loadable checkpoint of the work dir) or a path;
    ``load_from`` initialises the model from a checkpoint without resuming its optimizer and schedule."""
    cfg = _load(config, cfg_options, work_dir, launcher)
    apply_train_args(cfg, amp=amp, resume=resume, auto_scale_lr=auto_scale_lr, load_from=load_from)
    if not cfg.get("resume"):
        problem = earlier_run_problem(cfg.work_dir)
        if problem:
            raise UsageError(problem)
    remove_stale_temporaries(cfg.work_dir, recursive=False, suffixes=(".pth", "last_checkpoint"))
    with_plain_checkpoints(cfg)
    contents, notes = _resume_point(cfg, resume)
    _fit_to_machine(cfg)
    with refusal_cleanup(cfg):
        with config_mistakes():
            runner = build_runner(cfg)
            _write_config(runner, cfg)
            if isinstance(runner, Runner):  # built now, as Runner.train() would, so that mistakes stop here
                _ = runner.train_loop
                runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
        problem = _levels_problem(_model_of(runner))
        if problem:
            raise UsageError(problem)
        for note in notes:
            print_log(note, logger="current", level=logging.WARNING)
        what = "--resume checkpoint" if cfg.get("resume") else "load_from checkpoint"
        try:
            check_weights(runner, cfg.get("load_from"), allow_partial=allow_partial, contents=contents,
                          what=what)
        except CheckpointError as err:
            if cfg.get("resume") and resume != "auto":
                raise UsageError(f"{err}{_other_checkpoint_hint(cfg.work_dir, cfg.load_from)}") from err
            raise
    runner.train()
    return runner


def _without_sharding(cfg: Config) -> None:
    """Testing needs no sharded training state: an FSDP2 config is evaluated with mmengine's Runner (plain or DDP),
    from a single-file (consolidated) checkpoint."""
    if str(cfg.get("strategy", {}).get("type", "")).endswith("FSDP2Strategy"):
        cfg.pop("strategy")
        if cfg.get("runner_type") == "FlexibleRunner":
            cfg.pop("runner_type")


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
    _without_sharding(cfg)
    apply_test_args(cfg, checkpoint=checkpoint, out=out, show=show, show_dir=show_dir, wait_time=wait_time)
    _fit_to_machine(cfg)
    with refusal_cleanup(cfg):
        with config_mistakes():
            runner = build_runner(cfg)
            _write_config(runner, cfg)
            _ = runner.test_loop  # built now, as runner.test() would, so that its mistakes stop the run here
        problem = _levels_problem(_model_of(runner))
        if problem:
            raise UsageError(problem)
        check_weights(runner, checkpoint, allow_partial=allow_partial)
    if out is not None and scope_of(cfg) == "mmdet":
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))
    return runner.test()
