"""Reading a command's own arguments, the same way for every command.

- Dotted overrides may stand anywhere among the flags (``shiftvdm sft optim.lr=1e-4 --out runs/a run.seed=3``):
  argparse's intermixed parsing, for parsers without sub-commands.
- A single-valued option given twice is an error naming it, instead of argparse's silent "the last one wins"
  (``--out a --out b`` would write into b after the user checked a).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

# actions whose option takes one value (or none) and keeps only the last: giving one twice is a mistake
_SINGLE = (argparse._StoreAction, argparse._StoreConstAction, argparse._StoreTrueAction,  # noqa: SLF001
           argparse._StoreFalseAction, argparse.BooleanOptionalAction)  # noqa: SLF001


def repeated_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """The single-valued options of ``parser`` that ``argv`` gives more than once (before a ``--``)."""
    words = list(argv)
    if "--" in words:
        words = words[:words.index("--")]
    repeated = []
    for action in parser._actions:  # noqa: SLF001  (argparse keeps no public list of its actions)
        if not action.option_strings or not isinstance(action, _SINGLE):
            continue
        count = sum(1 for w in words for opt in action.option_strings if w == opt or w.startswith(f"{opt}="))
        if count > 1:
            repeated.append("/".join(action.option_strings))
    return repeated


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser``'s reading of ``argv``: overrides anywhere among the flags, a repeated option refused (exit 2)."""
    repeated = repeated_options(parser, argv)
    if repeated:
        parser.error(f"{', '.join(repeated)} given more than once; give each once")
    if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):  # noqa: SLF001
        return parser.parse_args(argv)  # argparse cannot intermix with sub-commands; they read their own
    return parser.parse_intermixed_args(argv)


__all__ = ["parse_command_line", "repeated_options"]
