"""`shiftvdm pretrain | sft | shift`: a training run (recipes/train.py) or, with ``--dry-run``, the full-size dry
run (recipes/dry_run/).

The choice is made here, above both recipes, so that recipes/train.py never imports the dry run: the dry run reads
the stage's config through recipes/train.py's ``merge_train_config``, and an import back would close a circle.
"""

from __future__ import annotations

from shiftvdm.recipes import dry_run, train


def main(argv: list[str], prog: str, mode: str) -> int:
    if "--dry-run" in argv:  # overrides are `key=value`, so the flag cannot be the value of another option
        return dry_run.main(argv, prog, mode)
    return train.main(argv, prog, mode)


def main_pretrain(argv: list[str], prog: str = "shiftvdm pretrain") -> int:
    return main(argv, prog, "pretrain")


def main_sft(argv: list[str], prog: str = "shiftvdm sft") -> int:
    return main(argv, prog, "sft")


def main_shift(argv: list[str], prog: str = "shiftvdm shift") -> int:
    return main(argv, prog, "shift")


__all__ = ["main", "main_pretrain", "main_sft", "main_shift"]
