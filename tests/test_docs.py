"""Every command in README.md and docs/**/*.md runs as written, as far as a test can check it cheaply.

The shell commands are taken from the fenced code blocks (bash, sh, shell, console or no language) of
those files. For each simple command (split at `&&`, `||`, `;`, `|`):

- `shiftvdm SUB ...`, `.venv/bin/shiftvdm SUB ...` and `... -m shiftvdm SUB ...` (also after
  `accelerate launch`): SUB is a command of `shiftvdm` (and a nested one such as `data synth` where the
  command has them), and every `-x`/`--flag` it is given is defined in that command's `--help`;
- `accelerate launch --flag ...`: every flag before `-m` is one of accelerate's launch flags;
- `python benchmarks/X.py --flag ...`: the script exists and defines every flag it is given;
- `--config NAME` and `shiftvdm config show NAME`: NAME is a shipped preset (or a .yaml path);
- `shiftvdm pretrain|sft|shift --config NAME k=v ...`: every dotted override names a key of the config
  (through `shiftvdm config show`). The overrides of `demo`, `train-critic` and the benchmark scripts are
  not checked.
A code block whose commands cannot be checked (a cluster submission, say) opts out with the line
`<!-- docs-test: skip -->` right above its fence; keep that rare.

`--help` runs in this process through `shiftvdm.cli.main`, once per (sub)command. The README's test
command must stay identical to the one `.ci/run` runs, the README stays within 150 lines, its presets table
lists exactly the shipped presets, and every relative link names a file that exists.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_MARKER = "<!-- docs-test: skip -->"
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "zsh"}
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", "{", "}", ";;"}
README_MAX_LINES = 150


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@dataclass(frozen=True)
class Command:
    where: str  # "docs/training.md:12"
    tokens: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.tokens)}"


def fenced_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(line number of the first body line, language, body lines) of every fenced block not opted out."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        previous = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        if previous != SKIP_MARKER:
            blocks.append((i + 2, lang.lower(), body))
        i = j + 1
    return blocks


def logical_lines(lang: str, body: list[str], first: int) -> list[tuple[int, str]]:
    """Shell lines with backslash continuations joined; console blocks keep only `$ ` lines."""
    out, pending, start = [], "", first
    for n, line in enumerate(body, start=first):
        if lang == "console":
            if not line.startswith("$ ") and not pending:
                continue
            line = line[2:] if line.startswith("$ ") and not pending else line
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def simple_commands(line: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError as exc:  # unbalanced quotes
        raise AssertionError(f"cannot parse shell line {line!r}: {exc}") from exc
    commands, current = [], []
    for tok in tokens:
        if tok in SEPARATORS or (set(tok) <= set("<>&|;") and tok):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(tok)
    if current:
        commands.append(current)
    return commands


def extract_commands(path: Path) -> list[Command]:
    rel = path.relative_to(ROOT).as_posix()
    found = []
    for first, lang, body in fenced_blocks(path.read_text(encoding="utf-8")):
        if lang not in SHELL_LANGS:
            continue
        for lineno, line in logical_lines(lang, body, first):
            for tokens in simple_commands(line):
                found.append(Command(f"{rel}:{lineno}", tuple(tokens)))
    return found


def all_commands() -> list[Command]:
    return [c for path in doc_files() for c in extract_commands(path)]


# ---- what a command may use ------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def shiftvdm_help(path: tuple[str, ...]) -> str:
    """`shiftvdm PATH --help`, run in this process (argparse exits; its exit status must be 0)."""
    from shiftvdm import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([*path, "--help"])
        except SystemExit as exc:
            code = exc.code
    assert code in (0, None), f"`shiftvdm {' '.join(path)} --help` exited {code}: {err.getvalue()[-2000:]}"
    return out.getvalue()


def defined_flags(help_text: str) -> set[str]:
    """Flags from the usage paragraph and the option lines (not from prose or examples)."""
    usage, _, rest = help_text.partition("\n\n")
    flags = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", usage))
    for line in rest.splitlines():
        m = re.match(r"^ {1,4}(-[^ ].*)$", line)
        if m:
            head = re.split(r"\s{2,}", m.group(1))[0]  # "-h, --help" or "--out OUT" before the help column
            flags |= set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", head))
    return flags


def nested_commands(help_text: str) -> set[str]:
    """Sub-commands of a command with sub-parsers: the bare `{a,b}` line argparse prints for them."""
    m = re.search(r"^\s+\{([\w,-]+)\}\s*$", help_text, flags=re.M)
    return set(m.group(1).split(",")) if m else set()


@functools.lru_cache(maxsize=None)
def accelerate_launch_flags() -> frozenset[str]:
    from accelerate.commands.launch import launch_command_parser

    return frozenset(s for action in launch_command_parser()._actions for s in action.option_strings)


@functools.lru_cache(maxsize=None)
def script_flags(script: Path) -> frozenset[str]:
    source = script.read_text(encoding="utf-8")
    return frozenset(re.findall(r"add_argument\(\s*[\"'](--?[\w-]+)[\"']", source)) | {"-h", "--help"}


def flags_used(args: list[str] | tuple[str, ...]) -> list[str]:
    used = []
    for arg in args:
        if arg == "--":
            break
        if re.match(r"^--?[A-Za-z]", arg):
            used.append(arg.split("=", 1)[0])
    return used


# ---- the checks ------------------------------------------------------------------------------------


def check_shiftvdm(args: list[str]) -> list[str]:
    from shiftvdm.cli import COMMANDS

    if not args or args[0] in {"-h", "--help", "help", "-V", "--version"}:
        return []
    if args[0] not in COMMANDS:
        return [f"`shiftvdm {args[0]}` is not a command (commands: {', '.join(COMMANDS)})"]
    path, rest = (args[0],), list(args[1:])
    help_text = shiftvdm_help(path)
    nested = nested_commands(help_text)
    if nested:
        if not rest or rest[0] not in nested:
            got = rest[0] if rest else "nothing"
            return [f"`shiftvdm {args[0]}` takes one of {sorted(nested)}, got {got}"]
        path, rest = path + (rest[0],), rest[1:]
        help_text = shiftvdm_help(path)
    known = defined_flags(help_text)
    problems = [f"`shiftvdm {' '.join(path)}` has no option {flag}" for flag in flags_used(rest) if flag not in known]
    return problems + check_presets(path, rest) + check_overrides(path, rest)


TRAINING_COMMANDS = {"pretrain", "sft", "shift"}


def check_overrides(path: tuple[str, ...], rest: list[str]) -> list[str]:
    """The dotted overrides of `shiftvdm pretrain|sft|shift --config NAME k=v ...` name keys the config has:
    `shiftvdm config show --stage SUB NAME k=v ...` must not call one unknown. Errors about values (a folder
    that is required, say) are not this test's business."""
    if path[0] not in TRAINING_COMMANDS or "--config" not in rest[:-1]:
        return []
    name = rest[rest.index("--config") + 1]
    overrides = tuple(a for i, a in enumerate(rest) if "=" in a and not a.startswith("-")
                      and not (i and rest[i - 1].startswith("--") and "=" not in rest[i - 1])
                      and not a.startswith("dry_run."))
    error = shiftvdm_run(("config", "show", "--stage", path[0], name, *overrides))
    return [f"`shiftvdm {path[0]} --config {name}`: {error.strip()}"] if "unknown" in error else []


@functools.lru_cache(maxsize=None)
def shiftvdm_run(argv: tuple[str, ...]) -> str:
    """stderr of `shiftvdm ARGV`, run in this process (stdout dropped)."""
    from shiftvdm import cli

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            cli.main(list(argv))
        except SystemExit:
            pass
    return err.getvalue()


def check_presets(path: tuple[str, ...], rest: list[str]) -> list[str]:
    """A preset named by `--config NAME` (or `config show NAME`) is shipped; YAML paths are the user's."""
    from shiftvdm.config import list_presets

    names = [rest[i + 1] for i, a in enumerate(rest[:-1]) if a == "--config"]
    names += [a.split("=", 1)[1] for a in rest if a.startswith("--config=")]
    if path == ("config", "show"):
        names += [a for a in rest if not a.startswith("-") and "=" not in a][:1]
    return [f"`{name}` is not a shipped preset (shiftvdm config list)" for name in names
            if not name.endswith((".yaml", ".yml")) and name != "..." and name not in list_presets()]


def check_command(tokens: tuple[str, ...]) -> list[str]:
    """Problems with one simple command; [] when it is fine or not ours to check."""
    tokens = list(tokens)
    while tokens and re.match(r"^[A-Za-z_]\w*=", tokens[0]):  # leading VAR=value assignments
        tokens.pop(0)
    if not tokens:
        return []
    problems = []
    program = Path(tokens[0]).name
    if program == "shiftvdm":
        return check_shiftvdm(tokens[1:])
    if program == "accelerate" and tokens[1:2] == ["launch"]:
        launch_args = tokens[2:tokens.index("-m")] if "-m" in tokens else tokens[2:]
        known = accelerate_launch_flags()
        problems += [f"`accelerate launch` has no option {f}" for f in flags_used(launch_args) if f not in known]
    if "-m" in tokens:
        i = tokens.index("-m")
        if tokens[i + 1:i + 2] == ["shiftvdm"]:
            problems += check_shiftvdm(tokens[i + 2:])
        return problems
    if program.startswith("python"):
        scripts = [i for i, t in enumerate(tokens) if re.match(r"^(\./)?benchmarks/[\w.-]+\.py$", t)]
        if scripts:
            i = scripts[0]
            script = ROOT / tokens[i]
            if not script.is_file():
                return [f"{tokens[i]} does not exist"]
            known = script_flags(script)
            problems += [f"{tokens[i]} has no option {f}" for f in flags_used(tokens[i + 1:]) if f not in known]
    return problems


def is_checked(tokens: tuple[str, ...]) -> bool:
    """Commands this test has something to say about (the others, `cd` or `pip`, are left alone)."""
    names = [Path(t).name for t in tokens if not re.match(r"^[A-Za-z_]\w*=", t)]
    return bool(names) and (names[0] in {"shiftvdm", "accelerate"} or "shiftvdm" in names
                            or any(re.match(r"^(\./)?benchmarks/", t) for t in tokens))


COMMANDS_IN_DOCS = [c for c in all_commands() if is_checked(c.tokens)]


def _id(command: Command) -> str:
    words = [Path(t).name for t in command.tokens if not t.startswith("-") and "=" not in t][:3]
    return f"{command.where}:{'-'.join(words)}"


@pytest.mark.parametrize("command", COMMANDS_IN_DOCS, ids=_id)
def test_command_runs_as_written(command: Command) -> None:
    problems = check_command(command.tokens)
    assert not problems, f"{command}\n  " + "\n  ".join(problems)


def test_docs_have_commands_to_check() -> None:
    ours = [c for c in COMMANDS_IN_DOCS if "shiftvdm" in {Path(t).name for t in c.tokens}]
    assert len(ours) >= 20, "the extractor found almost no shiftvdm commands: is it still reading the fences?"


def test_checker_catches_a_renamed_flag_and_command() -> None:
    assert check_command(("shiftvdm", "generate", "--model", "M", "--per-clip", "5")) == []
    assert check_command(("shiftvdm", "generate", "--per-clips", "5")) != []
    assert check_command(("shiftvdm", "generat", "--out", "x")) != []
    assert check_command(("shiftvdm", "data", "synth", "--clip", "5")) != []
    assert check_command(("shiftvdm", "data", "synthesise")) != []
    assert check_command(("accelerate", "launch", "--num-gpus", "2", "-m", "shiftvdm", "shift")) != []
    assert check_command(("accelerate", "launch", "--num_processes", "2", "-m", "shiftvdm", "shift", "--resum")) != []
    assert check_command(("shiftvdm", "shift", "--config", "svd_shift_davi")) != []
    assert check_command(("shiftvdm", "config", "show", "baselines/rwr")) != []
    assert check_command(("shiftvdm", "shift", "--config", "my_run.yaml")) == []
    assert check_command(("shiftvdm", "sft", "--config", "svd_sft_davis", "optim.lr=1e-4", "--out", "r")) == []
    assert check_command(("shiftvdm", "sft", "--config", "svd_sft_davis", "optim.lrr=1e-4")) != []
    assert check_command(("python", "benchmarks/no_such_script.py")) != []
    assert check_command(("python", "benchmarks/efficacy.py", "--seed", "1")) != []


def test_extractor_reads_fences_continuations_and_skip_marker() -> None:
    text = "\n".join([
        "```bash",
        "shiftvdm eval a/ \\",
        "  --json m.json  # a comment --not-a-flag",
        "python3 -m venv .venv && .venv/bin/shiftvdm demo --quick",
        "```",
        SKIP_MARKER,
        "```bash",
        "sbatch job.sh --whatever",
        "```",
        "```yaml",
        "shiftvdm: not a command",
        "```",
    ])
    lines = [line for first, lang, body in fenced_blocks(text) if lang in SHELL_LANGS
             for _, line in logical_lines(lang, body, first)]
    commands = [c for line in lines for c in simple_commands(line)]
    assert commands == [["shiftvdm", "eval", "a/", "--json", "m.json"],
                        ["python3", "-m", "venv", ".venv"], [".venv/bin/shiftvdm", "demo", "--quick"]]


def test_readme_test_command_is_the_one_ci_runs() -> None:
    ci_lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines()
                if ln.strip() and not ln.startswith("#") and not ln.startswith(("set ", "cd "))]
    ci_command = ci_lines[-1]
    readme_block_lines = {ln for _, lang, body in fenced_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
                          for ln in body}
    assert ci_command in readme_block_lines, f"README.md has no code line identical to .ci/run's:\n{ci_command}"


def test_readme_is_short() -> None:
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it <= {README_MAX_LINES} and move the rest to docs/"


def test_relative_links_resolve() -> None:
    broken = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z][\w+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same file
            if not (path.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_readme_presets_table_lists_every_shipped_preset() -> None:
    from shiftvdm.config import list_presets

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Presets and baselines", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `")]
    listed = {name for cell in first_cells for name in re.findall(r"`([^`]+)`", cell)}
    assert listed == set(list_presets()), (f"README presets table: missing {sorted(set(list_presets()) - listed)}, "
                                           f"not shipped {sorted(listed - set(list_presets()))}")
