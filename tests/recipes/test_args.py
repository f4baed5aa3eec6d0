"""Every command reads its own arguments the same way (recipes/args.py)."""

from __future__ import annotations

import argparse

import pytest

from shiftvdm.cli import main as cli
from shiftvdm.recipes.args import parse_command_line, repeated_options


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shiftvdm sft")
    parser.add_argument("--config")
    parser.add_argument("--out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("overrides", nargs="*")
    return parser


def test_overrides_may_stand_on_both_sides_of_a_flag():
    args = parse_command_line(run_parser(), ["optim.lr=1e-4", "--out", "runs/a", "run.seed=3", "--resume", "x.y=1"])
    assert args.overrides == ["optim.lr=1e-4", "run.seed=3", "x.y=1"] and args.out == "runs/a" and args.resume


def test_an_option_given_twice_is_refused_by_name(capsys):
    assert repeated_options(run_parser(), ["--out", "a", "--out=b", "--resume"]) == ["--out"]
    assert repeated_options(run_parser(), ["--out", "a", "--", "--out", "b"]) == []  # after --: not options
    with pytest.raises(SystemExit) as exit_:
        parse_command_line(run_parser(), ["--resume", "--out", "a", "--resume"])
    assert exit_.value.code == 2 and "--resume given more than once" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the real command, before anything is read or written
        cli(["sft", "--out", "runs/a", "--out", "runs/b", "data.train=x"])
    assert "--out given more than once" in capsys.readouterr().err
