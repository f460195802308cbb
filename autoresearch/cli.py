"""The `autoresearch` console script, the same command as `python -m autoresearch`: a campaign, its
dry run (`autoresearch check +campaign=NAME ...`), or `autoresearch status DIR` / `autoresearch
report DIR` for a campaign folder (`run_tool`)."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import runpy
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

TOOLS = {"status": "autoresearch.status", "report": "autoresearch.report"}  # never a Hydra override
CHECK = "check"  # the dry run: a campaign's own command line after it, so Hydra's to compose


@contextlib.contextmanager
def reader_may_stop_early() -> Iterator[None]:
    """Output piped into `head` or the like: a reader that has had enough closes the pipe, and the
    rest goes nowhere instead of ending in a BrokenPipeError traceback (the exit's own flush too)."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def tool_name(tool: str) -> str:
    """What a tool's --help and errors call it: the command the user typed (`run_tool` names it),
    else `python -m autoresearch.TOOL`, the one way left to run it."""
    return sys.argv[0] if sys.argv[0].endswith(f"autoresearch {tool}") else f"python -m autoresearch.{tool}"


def python_command() -> str:
    """How the user can run this interpreter: `python` (or `python3`, where there is no `python`)
    where the shell's is this one (an activated environment), else its path. `make demo` runs
    .venv/bin/python from a shell whose `python` lacks the project's packages: a hint to run
    `python -m autoresearch.status` failed there. The shell's is this one only where it is the
    same file in the same folder: a `python` beside it may be another version (python3.11 run,
    `python` a 3.9 or a 2.7), and a base interpreter is the same file as its venv's."""
    here = Path(os.path.abspath(sys.executable))  # (not resolved: a venv's python links to its base)
    for name in ("python", "python3"):
        found = shutil.which(name)
        if found and Path(os.path.abspath(found)).parent == here.parent and _same_file(found, here):
            return name
    with contextlib.suppress(ValueError):
        return str(here.relative_to(Path.cwd()))
    return str(here)


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # (one gone meanwhile)
        return False


def program_name(argv0: str) -> str:
    """The command that ran us: `python -m autoresearch` runs the package's __main__.py, the
    console script is `autoresearch`."""
    return "python -m autoresearch" if Path(argv0).name == "__main__.py" else "autoresearch"


def unknown_command(word: str) -> str | None:
    """Why a campaign command's first word is neither a tool nor a Hydra argument (an override
    has '=', a flag '-', a deletion '~'), in one line; None when it may be one."""
    if "=" in word or word.startswith(("-", "+", "~")):
        return None
    close = difflib.get_close_matches(word, [*TOOLS, CHECK], n=1)
    hint = f"did you mean `autoresearch {close[0]} ...`? " if close else ""
    return (
        f"unknown command {word!r}: {hint}autoresearch status DIR, autoresearch report DIR, "
        "or a campaign: autoresearch [check] +campaign=NAME [key=value ...]"
    )


CHECK_USAGE = """\
usage: {prog} check +campaign=NAME [group=option ...] [key=value ...]

A dry run of a campaign's start: the checks the start makes, then its plan. The plan says whether
it is new or resumed, the settings that change, each tier's slots and time limits, the rate and
cost, and when each budget binds. Nothing is written or launched: no folder, log, lock or study.

It takes the same overrides as a run: put `check` before the command you would run.
`{prog} --help` lists the groups and settings.

exit codes:
  0  the start would go ahead: the plan is printed
  2  the start would be refused: why, in one line on stderr"""


def print_check_usage() -> bool:
    """Print the dry run's usage where `sys.argv` asks for it (`check ... --help`, or `-h`), and
    say so: Hydra would print the run's."""
    if len(sys.argv) < 2 or sys.argv[1] != CHECK or not {"-h", "--help"} & set(sys.argv[2:]):
        return False
    print(CHECK_USAGE.format(prog=program_name(sys.argv[0])))
    return True


# Hydra's flags that print and exit: nothing runs, so a pipe closed early ends them quietly.
PRINTING_FLAGS = {"-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info"}


def hydra_only_prints() -> bool:
    """Whether Hydra is asked only to print (`--help`, `--cfg job`): piped into `head`, it ends
    quietly. A campaign does not: a broken pipe must not end a run as if it had finished."""
    return bool(PRINTING_FLAGS & set(sys.argv[1:]))


def takes_check_command() -> bool:
    """Whether `sys.argv` asks for the dry run (`autoresearch check +campaign=NAME ...`); its
    word is taken out, leaving the campaign's command line for Hydra."""
    if len(sys.argv) < 2 or sys.argv[1] != CHECK:
        return False
    del sys.argv[1]
    return True


# Hydra's flags that take the next word as their value (unless given as --flag=value), and those
# that take it only where it is one of their choices.
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn"}
FLAGS_WITH_VALUE |= {"--config-dir", "-cd", "--experimental-rerun"}
FLAGS_WITH_CHOICE = {"--info": {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}}
FLAGS_WITH_CHOICE["-i"] = FLAGS_WITH_CHOICE["--info"]


MULTIRUN_FLAGS = {"-m", "--multirun"}
MODE_KEY = "hydra.mode"  # Hydra's run mode, which an override sets as --multirun does


def multirun_refusal(words: list[str]) -> str | None:
    """Why Hydra's multirun is refused, or None where `words` (a command's) do not ask for it, by
    flag or by `hydra.mode=MULTIRUN`: a campaign is one long controller holding its folder, so a
    sweep of them in one process would run one after the other, and Hydra makes its sweep folder
    (multirun/DATE/TIME, in the working directory) before any check, so even a refused `check`
    wrote it."""
    overrides, flags = split_flags(words)
    if not (MULTIRUN_FLAGS & set(flags) or any(_sets_multirun(word) for word in overrides)):
        return None
    return (
        "autoresearch runs one campaign a command, and takes no --multirun (-m) or hydra.mode=MULTIRUN: "
        "run a command for each campaign"
    )


OVERRIDE_FORM = (
    "an override is one word, key=value, with no space around the =; a value with spaces or other "
    "characters is quoted, \"key='a b'\""
)


def unreadable_override(words: list[str]) -> str | None:
    """Why the first of `words` (a command's) that Hydra cannot read as an override is refused, or
    None: Hydra said only 'Error parsing override', and ended in a ValueError traceback for one
    with nothing before its = (`max_experiments =10`, a space typed before the =)."""
    overrides, _flags = split_flags(words)
    for word in overrides:
        override = parsed_override(word)
        if override is None or not override.key_or_group:
            return f"bad config: cannot read the override {word!r}: {OVERRIDE_FORM}"
    return None


def campaigns_refusal(words: list[str]) -> str | None:
    """Why a command naming more than one campaign is refused, or None: Hydra's own words for
    `+campaign=a +campaign=b` advise an `override` line of a defaults list, and for
    `+campaign=a,b` say only that the value is ambiguous."""
    overrides, _flags = split_flags(words)
    parsed = [(word, parsed_override(word)) for word in overrides]
    named = [
        (word, override)
        for word, override in parsed
        if override and override.key_or_group == "campaign" and not override.is_delete()
    ]
    if len(named) < 2 and not any(override.is_sweep_override() for _word, override in named):
        return None
    return (
        f"autoresearch runs one campaign a command, not {' '.join(word for word, _ in named)}: give "
        "+campaign=NAME once, and run a command for each campaign"
    )


# Hydra's output folder: it makes hydra.run.dir, writes output_subdir's files there and moves into
# it (job.chdir) before any check, so a command then refused left them behind.
OUTPUT_KEYS = ("hydra.run", "hydra.output_subdir", "hydra.job.chdir")


def output_override_refusal(words: list[str]) -> str | None:
    """Why an override of Hydra's output folder is refused, or None where `words` (a command's) set
    none: conf/config.yaml keeps Hydra writing nothing, in the folder the command runs in, and a
    campaign keeps its own files, its resolved config among them, in its folder under runs_dir."""
    overrides, _flags = split_flags(words)
    for word in overrides:
        key = override.key_or_group if (override := parsed_override(word)) else ""
        if any(key == k or key.startswith(f"{k}.") or k.startswith(f"{key}.") for k in OUTPUT_KEYS):
            return (
                f"autoresearch takes no {key}: Hydra would make its folder (write there, move into it) before any check, and a "
                "campaign keeps its files, its resolved config among them, in RUNS_DIR/NAME (set "
                "runs_dir=... to move them)"
            )
    return None


def parsed_override(word: str) -> Override | None:
    """`word` as Hydra reads an override, or None where it cannot (left for Hydra to say, which it
    does in one line before writing anything)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_override(word)
    except HydraException:  # (what its lexer cannot read, `campaign.name=ø`, is not wrapped)
        return None


def _sets_multirun(word: str) -> bool:
    """Whether the override `word` sets Hydra's mode to anything but RUN, in any form Hydra takes
    (`++hydra.mode='MULTIRUN'`, `hydra.mode=2`, a sweep of modes); a mode Hydra would refuse is
    left for Hydra to say."""
    from hydra.types import RunMode
    from omegaconf import ValidationError
    from omegaconf.nodes import EnumNode

    if (override := parsed_override(word)) is None:
        return False
    if override.key_or_group != MODE_KEY or override.is_delete() or override.value() is None:
        return False
    if override.is_sweep_override():
        return True
    try:
        return EnumNode.validate_and_convert_to_enum(RunMode, override.value()) != RunMode.RUN
    except ValidationError:
        return False


def flags_first(words: list[str]) -> list[str]:
    """`words` with the overrides before Hydra's flags (and their values), each in its order. Hydra's
    parser takes the overrides as one run of words: an override after a flag, as the docs' pieces
    combine (`+campaign=gpt2 --config-dir=that/folder cluster=mysite`), ended in argparse's usage
    and 'unrecognized arguments: cluster=mysite', exit 2, for a command that means one thing.
    (Flags last: one with an optional value, --info, then takes no override.)"""
    overrides, flags = split_flags(words)
    return overrides + flags


def split_flags(words: list[str]) -> tuple[list[str], list[str]]:
    """A command's overrides, and Hydra's flags with their values, each in its order."""
    flags: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("-"):
            overrides.append(word)
            continue
        flags.append(word)
        takes = word in FLAGS_WITH_VALUE or (i < len(words) and words[i] in FLAGS_WITH_CHOICE.get(word, ()))
        if takes and i < len(words):
            flags.append(words[i])
            i += 1
    return overrides, flags


def run_tool() -> bool:
    """Run the tool `sys.argv` names (`autoresearch status DIR`, `python -m autoresearch report DIR`),
    if it names one: the console script and `python -m autoresearch` both come here."""
    if len(sys.argv) < 2 or sys.argv[1] not in TOOLS:
        return False
    tool = sys.argv.pop(1)
    sys.argv[0] = f"{program_name(sys.argv[0])} {tool}"
    importlib.import_module(TOOLS[tool]).main()
    return True


def main() -> None:
    if run_tool() or print_check_usage():  # at once, without Hydra's import
        return
    # As `python -m` does (its __main__ runs a tool too): Hydra finds conf/ from the file of a
    # `__main__` module, but from any other module it would look for an importable `conf` package.
    runpy.run_module("autoresearch", run_name="__main__", alter_sys=True)
