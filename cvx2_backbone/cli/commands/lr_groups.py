"""``cvx2 lr-groups CONFIG``: build an mmdet/mmseg config's model and optimizer, print its lr groups, train nothing.

Prints the table that ``ConvNeXtLayerDecayOptimizerConstructor`` logs when a run starts (for any
other constructor, the plain table of its parameter groups). No weights are loaded and the
optimizer wrapper type is ignored, so AMP configs work on a CPU machine.
"""
from __future__ import annotations

import argparse
import copy
import logging

from cvx2_backbone.cli.cfg_options import CfgOptionsAction

HELP = "print the layer-wise lr decay groups of an mmdet/mmseg config without training"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="mmdet or mmseg config file (python, json or yaml)")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default=None, metavar="KEY=VALUE",
                        help="override config entries, e.g. optim_wrapper.paramwise_cfg.decay_type=stage_wise")


def run(args: argparse.Namespace) -> int:
    from mmengine.logging import MMLogger
    from mmengine.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS, DefaultScope

    from cvx2_backbone.engine.config import ConfigError, read_config
    from cvx2_backbone.engine.optimizers import ConvNeXtLayerDecayOptimizerConstructor, format_lr_groups
    from cvx2_backbone.utils.usage import user_input

    cfg = read_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    for key in ("model", "optim_wrapper"):
        if key not in cfg:
            raise ConfigError(f"config {args.config!r} has no '{key}'; lr-groups needs a training config "
                              "with model and optim_wrapper")
    wrapper_cfg = copy.deepcopy(cfg.optim_wrapper.to_dict())
    if "optimizer" not in wrapper_cfg:
        raise ConfigError(f"config {args.config!r}: optim_wrapper has no 'optimizer' entry")

    # The table is printed below: keep the constructor's log copy and mmengine's per-parameter
    # messages (one per frozen tensor) off the console.
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:  # what goes wrong while building the config's model and constructor is the config's mistake
        with user_input(KeyError), DefaultScope.overwrite_default_scope(cfg.get("default_scope")):
            model = MODELS.build(cfg.model)
            constructor_type = wrapper_cfg.pop("constructor", "DefaultOptimWrapperConstructor")
            constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
                type=constructor_type,
                optim_wrapper_cfg=dict(type="OptimWrapper", optimizer=wrapper_cfg["optimizer"]),
                paramwise_cfg=wrapper_cfg.get("paramwise_cfg")))
            optim_wrapper = constructor(model)
    finally:
        logger.setLevel(level)
    if isinstance(constructor, ConvNeXtLayerDecayOptimizerConstructor):
        print(constructor.lr_table)
    else:
        print(format_lr_groups(optim_wrapper.optimizer.param_groups, wrapper_cfg["optimizer"].get("lr"),
                               header=f"parameter groups built by {constructor_type} (no layer-wise lr decay)"))
    return 0
