"""`autoresearch status` on real campaign folders as users leave them: made private, damaged by
hand, their controller killed. Each gives a true view, or one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import ANOTHER_KERNEL, REPO, controller_killed_mid_run, load, run_campaign, wait_for
from optuna.trial import TrialState

from autoresearch.heartbeat import Heartbeat
from autoresearch.runner import OUTCOME_FILE, PID_FILE


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


def run_tool(
    *args: str, prefix: tuple[str, ...] = (), tool: str = "status"
) -> subprocess.CompletedProcess[str]:
    command = [*prefix, sys.executable, "-m", "autoresearch", tool, *args]
    env = {**os.environ, "COLUMNS": "250"}  # one line per row, whatever the terminal
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


def view_lines(view: str) -> list[str]:
    """status's view line by line, the tables' borders and the padding of cells left out."""
    return [" ".join(line.replace("│", " ").split()) for line in view.splitlines()]


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
        out = run_tool(str(campaign), prefix=tuple(without_root_rights()))
    finally:
        path.chmod(mode)
    assert out.returncode == 2, out.stderr
    named = campaign / "config.yaml" if private == "." else path  # (a closed folder: its first file read)
    assert out.stderr.splitlines() == [
        f"error: cannot read {named} (Permission denied): run this as a user who may read the whole "
        "campaign folder"
    ]


@pytest.mark.parametrize("tool", ["status", "report"])
@pytest.mark.parametrize(
    ("replaced", "by", "why"),
    [
        ("study.journal", "folder", "(Is a directory): a folder stands where the campaign keeps a file"),
        ("agent/usage.jsonl", "folder", "(Is a directory): a folder stands where the campaign keeps a file"),
        ("agent", "file", "(Not a directory): a file stands where the campaign keeps a folder on that path"),
    ],
)
def test_a_folder_where_a_campaign_keeps_a_file_or_a_file_where_it_keeps_a_folder_is_one_line(
    finished_campaign: Path, tmp_path: Path, tool: str, replaced: str, by: str, why: str
) -> None:
    """A campaign folder whose journal or LLM ledger a folder stands in for (an unpacked archive, a
    copy gone wrong), or whose agent folder a file does: status and report ended in an
    IsADirectoryError or NotADirectoryError traceback. They name the path they could not read."""
    campaign = copy_of(finished_campaign, tmp_path)
    path = campaign / replaced
    shutil.rmtree(path, ignore_errors=True)
    path.unlink(missing_ok=True)
    path.parent.mkdir(exist_ok=True)
    path.mkdir() if by == "folder" else path.write_text("")
    out = run_tool(str(campaign), tool=tool)
    read = path / "usage.jsonl" if replaced == "agent" else path  # (the agent folder's ledger)
    assert out.returncode == 2 and out.stderr.splitlines() == [
        f"error: cannot read {read} {why}: move it aside and put back the campaign's own"
    ]


def test_a_report_of_a_campaign_file_the_reader_may_not_read_is_not_said_to_be_a_write(
    finished_campaign: Path, tmp_path: Path
) -> None:
    """`autoresearch report --out DIR` on a campaign whose ledger is private: it said it could not
    write the report, though it could not read the campaign, and sent the user to another --out."""
    campaign = copy_of(finished_campaign, tmp_path)
    ledger = campaign / "agent" / "usage.jsonl"
    ledger.parent.mkdir(exist_ok=True)
    ledger.write_text("")
    ledger.chmod(0)
    try:
        out = run_tool(
            str(campaign), "--out", str(tmp_path / "out"), prefix=tuple(without_root_rights()), tool="report"
        )
    finally:
        ledger.chmod(0o644)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        f"error: cannot read {ledger} (Permission denied): run this as a user who may read the whole campaign folder"
    ]


def run_ended_without_its_controller(tmp_path: Path) -> Path:
    """The experiment folder of a run that ended after its controller was killed (kill -9)."""
    started, hold = controller_killed_mid_run(tmp_path)
    hold.unlink()
    wait_for((started.parent / OUTCOME_FILE).is_file, 60, "the run's end, without its controller")
    return started.parent


@pytest.mark.parametrize(
    ("live", "controller", "said"),
    [(False, "gone", "ended, not collected"), (True, "running", "ended, being collected")],
)
def test_a_run_that_ended_is_said_to_await_its_controller(
    tmp_path: Path, live: bool, controller: str, said: str
) -> None:
    """kill -9 of the controller mid-wave: its runner goes on and ends, but no controller collects
    the result into the study, and status showed the run "running" for ever, its minutes growing.
    It shows it ended, its result not collected; and while a controller beats (the moment before
    its next look at its runs), being collected, not the word for a result none will collect."""
    exp_dir = run_ended_without_its_controller(tmp_path)
    campaign = exp_dir.parent.parent
    beat = Heartbeat(campaign)  # a live controller's
    if live:
        beat.start()
    try:
        out = run_tool(str(campaign))
    finally:
        beat.stop("test over")
    assert out.returncode == 0, out.stderr
    lines = view_lines(out.stdout)
    assert any(line.startswith(f"controller {controller}: ") for line in lines), out.stdout
    assert any(re.match(rf"{int(exp_dir.name)} local pid \d+ {said} ", line) for line in lines), out.stdout
    assert any("0 running, 0 pending on the cluster, " in line for line in lines), out.stdout
    assert any("1 ran and awaiting a decision" in line for line in lines), out.stdout


def test_the_runs_a_stopped_controller_left_queued_are_said_not_to_be_launched(
    finished_campaign: Path, tmp_path: Path
) -> None:
    """A campaign stopped by its budget leaves the rest of its wave queued in the study: status said
    "4 queued" beside the stopped controller, as if they would run, where report.html says no
    controller launches them now."""
    campaign = copy_of(finished_campaign, tmp_path)
    queued = len(load(campaign).get_trials(states=(TrialState.WAITING,)))
    assert queued  # (the toy's wave is larger than its budget)
    out = run_tool(str(campaign))
    assert out.returncode == 0, out.stderr
    (line,) = [line.rstrip() for line in out.stdout.splitlines() if line.startswith("experiments ")]
    assert line.endswith(f", {queued} queued (no controller launches them now)"), line


def test_a_campaign_name_edited_in_config_yaml_is_not_said_to_be_a_lost_study(
    finished_campaign: Path, tmp_path: Path
) -> None:
    """config.yaml's campaign.name edited by hand: status said the study was lost (deleted,
    emptied?) and to put it back, though the journal holds it whole under the name it ran as."""
    campaign = copy_of(finished_campaign, tmp_path)
    saved = campaign / "config.yaml"
    saved.write_text(saved.read_text().replace("  name: toy\n", "  name: renamed\n", 1))
    out = run_tool(str(campaign))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"error: no study 'renamed' in {campaign / 'study.journal'}, which holds the study 'toy': "
        "config.yaml's campaign.name was edited? It records the last start: put back the name it wrote"
    ]


def test_a_campaign_folder_removed_under_a_live_view_ends_it_in_one_line(
    finished_campaign: Path, tmp_path: Path
) -> None:
    """`rm -rf runs/demo` to start over (as the README says) while `status --watch` showed it: the
    view's next read of the journal ended in a FileNotFoundError traceback."""
    campaign = copy_of(finished_campaign, tmp_path)
    frames = tmp_path / "frames.txt"
    with frames.open("w") as into:
        command = [sys.executable, "-m", "autoresearch", "status", str(campaign), "--watch", "0.1"]
        view = subprocess.Popen(command, cwd=REPO, stdout=into, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: "campaign " in frames.read_text(), 60, "the view's first frame")
            shutil.rmtree(campaign)
            _, err = view.communicate(timeout=60)
        finally:
            view.kill()
    assert view.returncode == 2
    assert err.splitlines() == [
        f"error: the study journal {campaign / 'study.journal'} is gone: its campaign folder was removed or "
        "moved while it was read"
    ]


def test_a_config_yaml_made_a_folder_is_not_said_to_be_gone(finished_campaign: Path, tmp_path: Path) -> None:
    """config.yaml replaced by a folder of that name (a bad copy, a mount): status said config.yaml
    was gone, though `ls` shows it there."""
    campaign = copy_of(finished_campaign, tmp_path)
    (campaign / "config.yaml").unlink()
    (campaign / "config.yaml").mkdir()
    out = run_tool(str(campaign))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"error: {campaign} ran experiments, but its config.yaml, which says where its study is, is not a "
        "file: remove it, and the campaign's command writes it anew as it resumes the campaign (study and "
        "results kept)"
    ]


@pytest.mark.parametrize("node", ["as the host names itself", "by another form of its name"])
def test_a_run_whose_runner_died_with_its_controller_is_not_shown_running(tmp_path: Path, node: str) -> None:
    """kill -9 of the controller and of its runner (an OOM kill, a session closed): the run will
    never end, but status showed it "running" for ever. On the host it ran on, status now sees its
    runner is gone; also where the run's node is Slurm's name for this host, its short or full one
    (`SLURMD_NODENAME` in an salloc), which read as another host's."""
    started, _ = controller_killed_mid_run(tmp_path)
    if node == "by another form of its name":
        here = socket.gethostname()
        other = here.split(".")[0] if "." in here else f"{here}.cluster.example"
        started.write_text(json.dumps({**json.loads(started.read_text()), "node": other}))
    campaign = started.parent.parent.parent
    runner = int((started.parent / PID_FILE).read_text().split()[0])
    os.kill(runner, signal.SIGKILL)  # (its train.py dies with it)
    wait_for(lambda: not Path(f"/proc/{runner}").exists(), 60, "the runner's end")
    out = run_tool(str(campaign))
    assert out.returncode == 0, out.stderr
    lines = view_lines(out.stdout)
    trial = int(started.parent.name)
    assert any(re.match(rf"{trial} local pid \d+ runner gone ", line) for line in lines), out.stdout
    assert any(
        "0 running, 0 pending on the cluster" in line and "1 whose runner is gone" in line for line in lines
    )
    assert not (started.parent / OUTCOME_FILE).exists()


def hidden_from_proc(pid: int, empty: Path) -> tuple[str, ...]:
    """A command prefix under which /proc does not show process `pid`, as /proc mounted hidepid does
    another user's: an empty folder mounted over its entry, in a mount namespace of its own."""
    empty.mkdir()
    prefix = ("unshare", "-m", "sh", "-c", f'mount --bind "{empty}" /proc/{pid} && exec "$0" "$@"')
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("a mount namespace cannot be made here")
    return prefix


@pytest.mark.parametrize("unseen", ["hidden in /proc", "controller elsewhere", "runner elsewhere"])
def test_a_runner_this_host_cannot_see_is_said_unknown_not_gone(tmp_path: Path, unseen: str) -> None:
    """A local run whose controller was killed: status judged its runner by /proc on this host. A
    runner /proc did not show (mounted hidepid, another user's process) was said gone, as was one
    that ran on another host (its started.json's node), and one of a controller stopped on another
    host was said gone or running by this host's /proc. Each is now said unknown from this host,
    but for a runner /proc shows here running this experiment, which is."""
    started, hold = controller_killed_mid_run(tmp_path)
    exp_dir, campaign = started.parent, started.parent.parent.parent
    pid, slot = (exp_dir / PID_FILE).read_text().split()[:2]
    runner = int(pid)
    prefix: tuple[str, ...] = ()
    try:
        if unseen == "hidden in /proc":
            prefix = hidden_from_proc(runner, tmp_path / "empty")
        elif unseen == "controller elsewhere":
            beat = campaign / "controller.json"
            record = json.loads(beat.read_text())
            beat.write_text(
                json.dumps({**record, "host": "another-host", "seen_at": record["seen_at"] - 600})
            )
            # as that host's controller wrote it (a runner /proc shows here is running, whatever
            # the names: `local_runner_state`)
            (exp_dir / PID_FILE).write_text(f"{runner} {slot} another-host {ANOTHER_KERNEL}")
            os.kill(runner, signal.SIGKILL)
            wait_for(lambda: not Path(f"/proc/{runner}").exists(), 60, "the runner's end")
        else:
            started.write_text(json.dumps({**json.loads(started.read_text()), "node": "another-host"}))
            (exp_dir / PID_FILE).write_text(f"{runner} {slot}")  # (written before hosts were recorded)
            os.kill(runner, signal.SIGKILL)
            wait_for(lambda: not Path(f"/proc/{runner}").exists(), 60, "the runner's end")
        out = run_tool(str(campaign), prefix=prefix)
    finally:
        hold.unlink()
    assert out.returncode == 0, out.stderr
    lines = view_lines(out.stdout)
    assert any(
        re.match(rf"{int(exp_dir.name)} local pid \d+ runner unknown from this host ", line) for line in lines
    )
    assert any(
        "0 running, 0 pending on the cluster" in line and "1 whose runner this host cannot see" in line
        for line in lines
    ), out.stdout


def test_a_refused_read_that_names_no_file_is_still_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A PermissionError raised without a file name (a library's own) read 'cannot read None'."""
    from autoresearch.status import reads_allowed

    with pytest.raises(SystemExit) as exited, reads_allowed():
        raise PermissionError(13, "Permission denied")
    assert exited.value.code == 2
    said = capsys.readouterr().err
    assert said == (
        "error: cannot read a file of the campaign folder (Permission denied): run this as a user who "
        "may read the whole campaign folder\n"
    )


@pytest.mark.parametrize("damage", ["not JSON", "a folder", "private"])
def test_a_controller_file_that_cannot_be_read_is_said_not_dropped(
    finished_campaign: Path, tmp_path: Path, damage: str
) -> None:
    """controller.json damaged by hand or a disk, made a folder, or private: status left the
    controller line out without a word, so a live campaign looked like one from before heartbeats.
    It says, in the line, that the file cannot be read and why."""
    campaign = copy_of(finished_campaign, tmp_path)
    beat = campaign / "controller.json"
    prefix: list[str] = []
    if damage == "not JSON":
        beat.write_text('{"pid": 12')
    elif damage == "a folder":
        beat.unlink()
        beat.mkdir()
    else:
        prefix = without_root_rights()
        beat.chmod(0)
    try:
        out = run_tool(str(campaign), prefix=tuple(prefix))
    finally:
        beat.chmod(0o755 if beat.is_dir() else 0o644)
    assert out.returncode == 0, out.stderr
    said = {
        "not JSON": f"{beat} is damaged (not the record a controller writes); a running controller writes "
        "it anew within 15 s",
        "a folder": f"{beat} is a folder: remove it, and a running controller writes it anew",
        "private": f"cannot read {beat} (Permission denied)",
    }[damage]
    assert f"controller unreadable: {said}" in view_lines(out.stdout), out.stdout
