"""A partition's `setup` lines grouped into the commands the job's shell reads from them.

The fleet checks each command's exit status on a line of its own after it (fleet.slurm
checked_setup). Where the check goes must follow bash's own reading, not the line breaks: inside
a heredoc it would be written into the file, after a trailing `&&` or backslash it would be read
as part of the command. Bash itself (`bash -n`, which parses without running) says when the
lines so far end a command, so every construct it allows is grouped as it will run.
"""

from __future__ import annotations

import os
import subprocess

# bash's words for lines that stop mid-command (an open heredoc, quote, `if` or trailing `&&`).
UNFINISHED = ("unexpected end of file", "unexpected EOF", "delimited by end-of-file")


def setup_commands(lines: list[str]) -> list[list[str]]:
    """The setup lines grouped as the shell reads them, each group one command."""
    commands: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        current.append(line)
        if _ends_a_command(current):
            commands.append(current)
            current = []
    return commands + ([current] if current else [])  # (unfinished at the end: bash says so on the node)


def _ends_a_command(lines: list[str]) -> bool:
    """Whether the shell reads `lines` as whole commands: the last does not end in an odd number of
    backslashes (bash -n takes one at the end of its input for an end), and bash -n finds nothing
    left open. Where bash cannot be run here, each line is taken for a command of its own."""
    last = lines[-1]
    if (len(last) - len(last.rstrip("\\"))) % 2:
        return False
    try:
        parsed = subprocess.run(
            ["bash", "-n"],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C"},  # (bash's messages in English, whatever the user's locale)
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return True
    return not any(words in parsed.stderr for words in UNFINISHED)
