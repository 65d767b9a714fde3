"""``--cfg-options KEY=VALUE ...`` as mmengine's ``DictAction`` parses it, with a usage error (exit 2, one line) for an
item without ``=`` where mmengine's action ends in ``ValueError: not enough values to unpack`` and a traceback."""
from __future__ import annotations

import argparse

from mmengine.config import DictAction

EXAMPLE = "train_dataloader.batch_size=2"


class CfgOptionsAction(DictAction):
    def __call__(self, parser, namespace, values, option_string=None):
        items = [values] if isinstance(values, str) else list(values or [])
        for item in items:
            key, equals, _ = item.partition("=")
            if not equals or not key:
                parser.error(f"{option_string or '--cfg-options'} {item!r}: each override is KEY=VALUE, e.g. "
                             f"{EXAMPLE} (a value with spaces or brackets in quotes: 'key=[a,b]')")
        super().__call__(parser, namespace, values, option_string)


def add_cfg_options(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, default=None, metavar="KEY=VALUE",
                        help=help)
