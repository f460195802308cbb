"""The frontier: the best train.py so far, kept as a git lineage under the campaign folder.

Each keep is one commit whose message starts with the trial number, so the lineage reads like the
reference loop's branch and `git log -p` shows every kept change. The study says which trials were
kept; this repository is derived from it and can be checked against it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from autoresearch.proposals import plain_line

FILE = "train.py"
_GIT_IDENTITY = ["-c", "user.name=autoresearch", "-c", "user.email=autoresearch@localhost"]
# What a git killed mid-write leaves (the index, HEAD, the branch's ref): later writes fail on them.
GIT_LOCKS = (".git/index.lock", ".git/HEAD.lock", ".git/refs/heads/*.lock")


def start_source_of(path: Path) -> str | None:
    """The train.py the frontier at `path` began from, read without writing (`autoresearch check`);
    None where there is none yet, or git cannot read it (the start then says so in git's words)."""
    if not (path / ".git").exists():
        return None
    root = _git_read(path, "rev-list", "--max-parents=0", "HEAD")
    return None if root is None else _git_read(path, "show", f"{root.strip()}:{FILE}")


def _git_read(path: Path, *args: str) -> str | None:
    done = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def _unborn(path: Path) -> bool:
    """Whether the repository at `path` has its branch but no commit yet: one just made, or one a
    controller killed between `git init` and the first commit left, on which every later start
    failed, since it has no HEAD to read. (A HEAD that names no branch is no such repository.)"""
    on_branch = _git_read(path, "symbolic-ref", "-q", "HEAD") is not None
    return on_branch and _git_read(path, "rev-parse", "-q", "--verify", "HEAD") is None


class FrontierError(RuntimeError):
    """A git command on the frontier failed; the message says which, git's own words and what to do."""


class Frontier:
    def __init__(self, path: Path, start_source: str) -> None:
        self.path = path
        if not (path / ".git").exists():
            path.mkdir(parents=True, exist_ok=True)
            self._git("init", "-q", "-b", "main")
        if _unborn(path):  # new, or begun by a first start killed before its first commit
            (path / FILE).write_text(start_source)
            self._git("add", FILE)
            self._git("commit", "-q", "-m", "baseline")
        self._head = self._git("rev-parse", "--short=12", "HEAD")
        # The committed train.py, in the index and the working file too: a controller killed in
        # `advance` between writing the file and committing it left one that was never kept.
        self._git("checkout", "-q", "HEAD", "--", FILE)
        self._source = (self.path / FILE).read_text()
        self._kept = self._kept_commits()  # trial -> the commit that kept it, kept up by `advance`
        root = self._git("rev-list", "--max-parents=0", "HEAD")
        self._start_source = self.source_at(root)

    def _git(self, *args: str, strip: bool = True) -> str:
        done = subprocess.run(["git", *_GIT_IDENTITY, *args], cwd=self.path, capture_output=True, text=True)
        if done.returncode != 0:
            said = " ".join(done.stderr.split())[:400] or f"exit {done.returncode}"
            raise FrontierError(
                f"git {args[0]} failed in the frontier {self.path}: {said}; put the repository right "
                f"(git -C {self.path} status), then run the command again"
            )
        return done.stdout.strip() if strip else done.stdout

    def source(self) -> str:
        """The frontier's train.py (cached, like the head: only this controller writes it)."""
        return self._source

    def source_at(self, commit: str) -> str:
        """The train.py of one version of the lineage (a trial's `parent`)."""
        return self._git("show", f"{commit}:{FILE}", strip=False)

    def start_source(self) -> str:
        """The train.py the campaign started from: what baselines measure, whatever was kept since."""
        return self._start_source

    def head(self) -> str:
        """The current frontier commit (cached: only this controller writes the repository)."""
        return self._head

    def _kept_commits(self) -> dict[int, str]:
        kept: dict[int, str] = {}
        for line in self._git("log", "--format=%h %s", "--abbrev=12").splitlines():
            sha, _, subject = line.partition(" ")
            number = subject.removeprefix("trial ").partition(":")[0]
            if subject.startswith("trial ") and number.isdigit():
                kept.setdefault(int(number), sha)
        return kept

    def commit_of_trial(self, trial: int) -> str | None:
        """The commit that kept `trial`, if any (makes a keep idempotent across restarts). Read
        from the lineage once: asked at every decision, a git call each time cost the controller
        a tenth of its time at 1,600 GPUs."""
        return self._kept.get(trial)

    def generation(self) -> int:
        """How many changes the frontier has kept: 0 at the start."""
        return len(self._kept)

    def head_trial(self) -> int | None:
        """The trial the current frontier kept, or None at the start."""
        return next((trial for trial, commit in self._kept.items() if commit == self._head), None)

    def advance(self, source: str, trial: int, description: str) -> str:
        """Make `source` the frontier; returns the new commit. The caller checks `commit_of_trial` first."""
        (self.path / FILE).write_text(source)
        self._git("add", FILE)
        # (a description an older check let through may hold a NUL, which no commit message can)
        self._git("commit", "-q", "-m", plain_line(f"trial {trial}: {description}")[:200])
        self._head = self._git("rev-parse", "--short=12", "HEAD")
        self._source = source
        self._kept[trial] = self._head
        return self._head
