"""Config loading for the tools: one entry for mmdet and mmseg, chosen by ``default_scope``.

What the command line changes (work dir, AMP, resume, auto-scale-lr, test outputs) is applied
here the way mmdet's and mmseg's own tools apply it, so their users find the same behaviour.
"""
from __future__ import annotations

import importlib.util
import os.path as osp
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from mmengine.config import Config
from mmengine.logging import print_log

from cvx2_backbone.utils.resources import config_path
from cvx2_backbone.utils.usage import UsageError

TASKS = {"mmdet": "detection", "mmseg": "segmentation", "cvx2_backbone": "FCMAE pre-training"}
EXAMPLE_CONFIG = "configs/convnextv2/mask-rcnn_convnextv2-atto-fcmae_fpn_lsj-3x_coco.py"


class ConfigError(UsageError, ValueError):
    """A config file that cannot be read, or one the tools cannot run, or command-line flags it lacks support for."""


@contextmanager
def host_packages_by_import_name() -> Iterator[dict[str, str]]:
    """Within the block, ``mmdet::``/``mmseg::`` (any ``package::``) base configs resolve whatever distribution
    provides the package: yields what was changed, ``{import name: distribution name}``.

    mmengine (upstream 0.10.7 and onedl-mmengine alike) turns the scope of ``mmseg::x.py`` into a *distribution* name
    through ``mmengine.config.utils.MODULE2PACKAGE`` (``'mmseg': 'mmsegmentation'``), asks
    ``mmengine.utils.is_installed`` / ``get_installed_path`` about that distribution, and falls back to
    ``find_spec`` of the same name, which is no module. With the maintained fork the distribution is
    ``onedl-mmsegmentation``, so neither finds it: ``ModuleNotFoundError: mmsegmentation is not installed``.
    (``mmdet`` maps to itself, so its fallback finds the module.) For every name in that table whose mapped
    distribution is missing, mmengine's fallback finds nothing and the module is importable, the table names the
    distribution that really provides the module (``importlib.metadata.packages_distributions``) until the block
    ends; on upstream's own distributions nothing changes.
    """
    from mmengine.config import utils as config_utils

    table: dict[str, str] = config_utils.MODULE2PACKAGE
    changed: dict[str, str] = {}
    for module, distribution in table.items():
        try:
            metadata.distribution(distribution)
            continue
        except metadata.PackageNotFoundError:
            pass
        if importlib.util.find_spec(distribution) is not None or importlib.util.find_spec(module) is None:
            continue  # mmengine's fallback finds it (``mmdet``), or the package is not here at all
        providers = metadata.packages_distributions().get(module, [])
        if providers:
            changed[module] = providers[0]
    original = {module: table[module] for module in changed}
    table.update(changed)
    try:
        yield changed
    finally:
        table.update(original)


def read_config(path: str | Path) -> Config:
    """``Config.fromfile`` of a path or a name under the package's configs/, with one clear error for a missing
    file or one that is no mmengine config."""
    path = config_path(path)
    try:
        with warnings.catch_warnings():
            # mmengine resolves `mmdet::`/`mmseg::` base configs through setuptools' pkg_resources, reloading it
            # for every one, and each reload warns that the module is deprecated: nothing the user can act on.
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            with host_packages_by_import_name():
                return Config.fromfile(str(path))
    except Exception as err:  # mmengine raises assorted errors (some without text) for files it cannot run
        detail = str(err).strip().splitlines()[0] if str(err).strip() else "no details"
        raise ConfigError(f"cannot read {path} as an mmengine config ({type(err).__name__}: {detail}); pass a "
                          f"config file such as {EXAMPLE_CONFIG}") from err


def load_config(path: str | Path, cfg_options: dict[str, Any] | None = None) -> Config:
    """Read a config file (a path, or a name under the package's configs/), merge ``--cfg-options`` and check
    that it names one of the scopes in ``TASKS``."""
    cfg = read_config(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope_of(cfg)
    return cfg


def scope_of(cfg: Config) -> str:
    """The config's ``default_scope`` ('mmdet' or 'mmseg'), which decides the task's conventions."""
    scope = cfg.get("default_scope")
    if scope not in TASKS:
        raise ConfigError(f"config default_scope is {scope!r}; the tools run detection (default_scope='mmdet'), "
                         "segmentation (default_scope='mmseg') and FCMAE pre-training (default_scope="
                         "'cvx2_backbone') configs; inherit from an mmdet:: or mmseg:: base config or set "
                         "default_scope")
    return scope


def set_work_dir(cfg: Config, config_path: str | Path, work_dir: str | None) -> None:
    """``--work-dir`` wins, then the config's own ``work_dir``, then ``./work_dirs/<config name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", Path(config_path).stem)


def apply_train_args(cfg: Config, *, amp: bool = False, resume: str | None = None,
                     auto_scale_lr: bool = False, load_from: str | None = None) -> None:
    """``--amp``, ``--resume [auto|PATH]``, ``--load-from`` and ``--auto-scale-lr`` as mmdet's tools/train.py
    does them."""
    if resume is not None and load_from is not None:
        raise ConfigError("--resume and --load-from exclude each other: --resume continues a run (weights, optimizer, "
                          "schedule), --load-from starts a new one from a checkpoint's weights")
    if load_from is not None:
        if not Path(load_from).is_file():
            raise FileNotFoundError(f"--load-from checkpoint {load_from!r} does not exist")
        cfg.load_from, cfg.resume = load_from, False
    if amp:
        if cfg.optim_wrapper.get("type", "OptimWrapper") == "AmpOptimWrapper":
            print_log("AMP training is already enabled in the config.", logger="current")
        else:
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
    if auto_scale_lr:
        settings = cfg.get("auto_scale_lr")
        if not settings or "base_batch_size" not in settings:
            raise ConfigError("--auto-scale-lr needs auto_scale_lr=dict(enable=False, base_batch_size=N) in the "
                               "config, N being the total batch size its learning rate was tuned for")
        settings.enable = True
        # mmengine scales by GPUs x batch per GPU; with gradient accumulation a step sees that many times more.
        accumulation = cfg.optim_wrapper.get("accumulative_counts", 1)
        if accumulation > 1:
            settings.base_batch_size = settings.base_batch_size / accumulation
            print_log(f"--auto-scale-lr: {accumulation} accumulated batches per step count in the total batch",
                      logger="current")
    if resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        if not Path(resume).exists():  # a file, or a sharded (FSDP2) checkpoint folder
            raise FileNotFoundError(f"--resume checkpoint {resume!r} does not exist; pass a .pth from a work dir "
                                    "or plain --resume to continue from the work dir's latest checkpoint")
        cfg.resume, cfg.load_from = True, resume


_SHARDED_FILES = (".metadata", "runner_state.pth")  # .sharded_checkpoint's DCP_METADATA and RUNNER_STATE (torch-free)


def apply_test_args(cfg: Config, *, checkpoint: str, out: str | None = None, show: bool = False,
                    show_dir: str | None = None, wait_time: float = 2.0) -> None:
    """Checkpoint, ``--out`` (mmseg: prediction folder) and ``--show``/``--show-dir`` as the task's tools do."""
    folder = Path(checkpoint)
    if folder.is_dir() and not any((folder / name).exists() for name in _SHARDED_FILES):
        kind = " (a Hugging Face model folder)" if (folder / "config.json").is_file() else ""
        raise ConfigError(f"checkpoint {checkpoint} is a folder{kind}, not a training checkpoint; pass the .pth "
                          "file tools/train.py wrote, or put backbone weights in the config: "
                          f"model.backbone.init_cfg=dict(type='Pretrained', checkpoint='{checkpoint}')")
    if folder.is_dir():
        raise ConfigError(f"checkpoint {checkpoint!r} is a sharded (FSDP2) training checkpoint; test its "
                          "consolidated file (<name>_consolidated.pth next to it, or make one with "
                          f"python tools/consolidate_checkpoint.py {checkpoint})")
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint!r} does not exist; pass the .pth written by "
                                "tools/train.py (e.g. work_dirs/<config>/epoch_36.pth)")
    missing = [key for key in ("test_dataloader", "test_evaluator", "test_cfg") if not cfg.get(key)]
    if missing:
        raise ConfigError(f"the config has no {', '.join(missing)}, which testing needs; add them (usually "
                          "test_dataloader = val_dataloader, test_evaluator = val_evaluator, "
                          "test_cfg = dict(type='TestLoop'))")
    cfg.load_from = checkpoint
    scope = scope_of(cfg)
    if show or show_dir:
        hooks = cfg.get("default_hooks", {})
        if "visualization" not in hooks:
            raise ConfigError("--show/--show-dir need default_hooks.visualization in the config "
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
        raise ConfigError(f"--out for detection is a pickle file of raw results (.pkl or .pickle), got {out!r}")
