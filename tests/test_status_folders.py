"""`autoresearch status` on real campaign folders as users leave them: made private, damaged by
hand, their controller killed. Each gives a true view, or one line and a non-zero exit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import REPO, run_campaign


@pytest.fixture(scope="module")
def finished_campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy campaign run to its end, once for the module: each test reads or damages a copy."""
    runs = tmp_path_factory.mktemp("runs")
    assert run_campaign(runs, "campaign.budget.max_experiments=3").returncode == 0
    return runs / "toy"


def copy_of(campaign: Path, tmp_path: Path) -> Path:
    copy = tmp_path / campaign.name
    shutil.copytree(campaign, copy, symlinks=True)
    return copy


def without_root_rights() -> list[str]:
    """A command prefix under which file modes hold: root reads through them, so for root the
    capabilities that let it are dropped (setpriv)."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("root reads through file modes, and setpriv cannot drop that right here")
    return prefix


def status(*args: str, prefix: tuple[str, ...] = (), cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    command = [*prefix, sys.executable, "-m", "autoresearch", "status", *args]
    env = {**os.environ, "COLUMNS": "250"}  # one line per row, whatever the terminal
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("private", [".", "config.yaml", "study.journal", "agent/usage.jsonl"])
def test_a_campaign_file_the_reader_may_not_read_is_one_line(
    finished_campaign: Path, tmp_path: Path, private: str
) -> None:
    """A colleague's campaign folder, or one file of it made private: status ended in a
    PermissionError traceback. It names the file it could not read, in one line."""
    campaign = copy_of(finished_campaign, tmp_path)
    (campaign / "agent").mkdir(exist_ok=True)
    (campaign / "agent" / "usage.jsonl").write_text("")  # (a Claude campaign's ledger)
    path = campaign / private
    mode = path.stat().st_mode
    path.chmod(0)
    try:
        out = status(str(campaign), prefix=tuple(without_root_rights()))
    finally:
        path.chmod(mode)
    assert out.returncode == 2, out.stderr
    named = campaign / "config.yaml" if private == "." else path  # (a closed folder: its first file read)
    assert out.stderr.splitlines() == [
        f"error: cannot read {named} (Permission denied): run this as a user who may read the whole "
        "campaign folder"
    ]
