"""`shiftvdm config list | show PRESET [overrides]`: the shipped presets and resolved configs."""

from __future__ import annotations

import argparse

import yaml

from shiftvdm.config import config_to_dict, list_presets, load_yaml_with_base, resolve_config_path
from shiftvdm.recipes.train import resolve_train_config
from shiftvdm.recipes.args import parse_command_line


def main(argv: list[str], prog: str = "shiftvdm config") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list the shipped presets")
    show = sub.add_parser("show", help="print a training preset (or YAML file) fully resolved")
    show.add_argument("config", help="preset name or YAML path")
    show.add_argument("--stage", choices=["pretrain", "sft", "shift"], default=None,
                      help="the command the config is for (default: the file's `mode`, else shift)")
    show.add_argument("overrides", nargs="*", help="dotted overrides")
    args = parse_command_line(parser, argv)

    if args.action == "list":
        for name in list_presets():
            print(name)
        return 0

    stage = args.stage or load_yaml_with_base(resolve_config_path(args.config)).get("mode", "shift")
    cfg = resolve_train_config(stage, args.config, args.overrides)
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
    return 0
