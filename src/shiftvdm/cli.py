"""`shiftvdm` command line: one sub-command per stage, each implemented by a recipe module.

Recipes are imported lazily so that `shiftvdm --help` is instant and a broken optional stage never
stops the others. A recipe entry point has the signature ``main(argv: list[str], prog: str) -> int``.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import sys

from shiftvdm import __version__
from shiftvdm.errors import ShiftvdmError
from shiftvdm.utils import preemption

# command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("shiftvdm.recipes.demo", "main", "run the whole method end to end on CPU and write a report"),
    "data": ("shiftvdm.recipes.data", "main", "make a synthetic sprite dataset (synth), check a dataset (check), cut a raw one into clips (prepare)"),
    "pretrain": ("shiftvdm.recipes.launch", "main_pretrain", "train a base model's full weights from scratch"),
    "sft": ("shiftvdm.recipes.launch", "main_sft", "supervised fine-tuning (LoRA or full)"),
    "shift": ("shiftvdm.recipes.launch", "main_shift", "SHIFT fine-tuning (Algorithm 1) and its baselines"),
    "generate": ("shiftvdm.recipes.generate", "main", "generate K clips per real clip (the critic's fakes)"),
    "train-critic": ("shiftvdm.recipes.train_reward", "main", "pre-train the critic's IC and LC discriminators (Eq. 7)"),
    "sample": ("shiftvdm.recipes.sample", "main", "sample a clip from an image"),
    "export": ("shiftvdm.recipes.export", "main", "fuse a LoRA and write a diffusers-format model folder"),
    "eval": ("shiftvdm.recipes.evaluate", "main", "motion and appearance metrics on a folder of videos"),
    "report": ("shiftvdm.recipes.demo", "main_report", "rebuild report.html from a demo run folder"),
    "config": ("shiftvdm.recipes.config_cmd", "main", "show a shipped or resolved config"),
}

# renamed command -> its new name: still runs, with a one-line note, until the release named
RENAMED_COMMANDS: dict[str, tuple[str, str]] = {"train-reward": ("train-critic", "0.3")}
# the commands that stop at a checkpoint on SIGTERM/SIGUSR1 (utils/preemption.py)
TRAINING_COMMANDS = ("pretrain", "sft", "shift", "train-critic")


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = [f"usage: shiftvdm <command> [options]   (shiftvdm {__version__})", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run `shiftvdm <command> --help` for the options of a command."]
    return "\n".join(lines)


def _os_error_message(exc: OSError) -> str:
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    where = " -> ".join(names) if names else "a file"
    reason = exc.strerror or str(exc)
    return f"{where}: {reason} (the path could not be read or written; check it exists, its kind and permissions)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] in {"-V", "--version"}:
        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command in RENAMED_COMMANDS:
        new, until = RENAMED_COMMANDS[command]
        print(f"shiftvdm: `{command}` is renamed `{new}`; the old name works until {until}", file=sys.stderr)
        command = new
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        print(f"shiftvdm: unknown command `{command}`{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, never a crash
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    module_name, func_name, _ = COMMANDS[command]
    # a training command keeps a SIGTERM/SIGUSR1 that comes while it starts (utils/preemption.py)
    starting = preemption.early() if command in TRAINING_COMMANDS and "--dry-run" not in rest else \
        contextlib.nullcontext()
    with starting:
        return _run(command, module_name, func_name, rest)


def _run(command: str, module_name: str, func_name: str, rest: list[str]) -> int:
    entry = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(entry(rest, prog=f"shiftvdm {command}") or 0)
    except ShiftvdmError as exc:
        print(f"shiftvdm {command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # The file system refused something (permissions, a read-only or full disk, a file where a folder
        # is due): the user's environment, not a bug, so a message naming the path rather than a traceback.
        # Programming errors (TypeError, KeyError, ...) still get their traceback.
        from shiftvdm.utils.atomic import disk_error

        # a full disk, a quota or a read-only file system (only writes meet these): the free space too
        full = exc.filename is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
        disk = disk_error(exc.filename, exc) if full else None
        print(f"shiftvdm {command}: error: {disk or _os_error_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"shiftvdm {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
