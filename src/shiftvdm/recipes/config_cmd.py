"""`shiftvdm config list | show PRESET [overrides]`: the shipped presets and resolved configs."""

from __future__ import annotations

import argparse

import yaml

from shiftvdm.config import (
    PATH_KEYS,
    config_paths_folder,
    config_to_dict,
    list_presets,
    load_yaml_with_base,
    resolve_config_path,
)
from shiftvdm.recipes.args import parse_command_line
from shiftvdm.recipes.train import resolve_train_config

_TRAIN = "shiftvdm.train.config.TrainConfig"


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
    path = resolve_config_path(args.config)
    folder = config_paths_folder(path)
    where = f"{path}'s folder {folder}" if folder is not None else "the working directory (a shipped preset)"
    print(f"# paths ({', '.join(PATH_KEYS[_TRAIN])}) are shown absolute:\n"
          f"# relative ones in the config file resolve against {where};\n"
          "# those given on the command line against the working directory; `~` is expanded")
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
    return 0
