"""The status view reads a campaign folder without its controller."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from engine_helpers import REPO, autoresearch_into_closed_pipe, load, run_campaign, wait_for
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from autoresearch import status
from autoresearch.budget import PRICE_ATTR, exhausted, measure, pool_prices
from autoresearch.config import (
    SAVED_CONFIG,
    AutoresearchConfig,
    BudgetConfig,
    read_saved_config,
    with_defaults,
)
from autoresearch.eta import SLOTS_ATTR, record_slots
from autoresearch.files import process_start
from autoresearch.fleet.base import Pool
from autoresearch.fleet.runner_pid import kernel_view
from autoresearch.heartbeat import (
    CONTROLLER_FILE,
    COUNTING_SINCE,
    KERNEL_VIEW,
    PID_STARTED,
    RAN_BEFORE,
    STALE_SECONDS,
    Heartbeat,
    controller_state,
)
from autoresearch.ledger import Ledger
from autoresearch.status import REASON_CHARS, clipped, render


def test_status_shows_a_finished_campaign_and_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_campaign(tmp_path, "campaign.budget.max_experiments=5").returncode == 0
    campaign = tmp_path / "toy"
    out = subprocess.run(
        [sys.executable, "-m", "autoresearch.status", str(campaign)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},  # one line per row, whatever the terminal
    )
    assert out.returncode == 0, out.stderr
    assert "kept changes" in out.stdout and "baseline" in out.stdout
    assert re.search(r"controller +stopped [^\n]*: experiments budget reached \(\d+ of 5[):]", out.stdout)
    assert "0 calls, 0 failed" in out.stdout  # the offline proposer spends nothing on an API
    assert "CPU-hours" in out.stdout and "GPU-hours" not in out.stdout  # the toy's slots are CPU processes
    assert re.search(r"spend +\d+\.\d\d CPU-hours \(\$0\.00\), \$0\.00 of LLM calls", out.stdout)
    lines = subprocess.run(
        [sys.executable, "-m", "autoresearch.status", str(campaign), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == len((campaign / "results.tsv").read_text().splitlines()) - 1
    assert {r["status"] for r in rows} >= {"baseline"}
    ran = [r for r in rows if r["status"] != "skip"]  # skipped ones never ran: counted apart
    reruns = sum(1 for r in rows if r["status"] == "rerun")
    assert f"{len(ran)} finished (" in out.stdout and f"{reruns} re-runs" in out.stdout

    # The console script has both tools as subcommands, from any folder.
    console_script = str(Path(sys.executable).with_name("autoresearch"))
    env = {**os.environ, "COLUMNS": "250"}
    same = subprocess.run(
        [console_script, "status", str(campaign)], cwd=tmp_path, capture_output=True, text=True, env=env
    )

    # The calendar time since the first start moves on between the two calls (0.00 h, then 0.01 h
    # under load): the rest of the output is the same.
    def timeless(text: str) -> str:
        return re.sub(r"[0-9.]+ h ago", "N h ago", text)

    assert same.returncode == 0 and timeless(same.stdout) == timeless(out.stdout)
    (campaign / "report.html").unlink()
    report = subprocess.run(
        [console_script, "report", str(campaign)], cwd=tmp_path, capture_output=True, text=True
    )
    assert report.returncode == 0 and Path(report.stdout.splitlines()[0]) == campaign / "report.html"
    assert (campaign / "report.html").is_file()
    usage = subprocess.run([console_script, "status"], cwd=tmp_path, capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: autoresearch status")

    # The live view waits between refreshes and ends on Ctrl-C without a traceback (here the
    # first wait is interrupted).
    waits: list[float] = []

    def interrupted(seconds: float) -> None:
        waits.append(seconds)
        raise KeyboardInterrupt

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["autoresearch status", str(campaign), "--watch", "5"])
    monkeypatch.setattr(status.time, "sleep", interrupted)
    status.main()
    assert waits == [5.0]
    assert "kept changes" in capsys.readouterr().out


def test_status_refuses_a_folder_that_is_not_a_campaign(tmp_path: Path) -> None:
    def status_of(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "autoresearch.status", *args]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True)

    out = status_of(str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"error: not a campaign folder (no config.yaml): {tmp_path}"]
    out = status_of(str(tmp_path / "typo"))
    assert out.returncode == 2 and out.stderr.splitlines() == [f"error: no such folder: {tmp_path / 'typo'}"]
    out = status_of(str(tmp_path), "--watch", "-1")
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == (
        "python -m autoresearch.status: error: argument --watch: expected a positive number of seconds, not '-1'"
    )


@pytest.mark.parametrize("tool", ["status", "report"])
def test_a_mistyped_campaign_folder_is_named_with_the_one_meant(tmp_path: Path, tool: str) -> None:
    """A newcomer's first tries: the campaign's name alone, a near miss, the runs folder itself, a
    file of the campaign: each refusal names the folder to give instead."""
    campaign = tmp_path / "runs" / "demo"
    campaign.mkdir(parents=True)
    (campaign / CONTROLLER_FILE).write_text("{}")
    (campaign / "config.yaml").write_text("campaign:\n  name: demo\nstorage: null\n")
    (campaign / "report.html").write_text("<html></html>")
    (tmp_path / "conf").mkdir()  # a Hydra config folder is not a campaign
    (tmp_path / "conf" / "config.yaml").write_text("defaults: []\n")

    def refusal(folder: str) -> str:
        command = [sys.executable, "-m", "autoresearch", tool, folder]
        out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out
        (line,) = out.stderr.splitlines()
        return line

    assert refusal("demo") == "error: no such folder: demo (did you mean runs/demo?)"
    assert refusal("runs/dmeo") == "error: no such folder: runs/dmeo (did you mean runs/demo?)"
    assert (
        refusal("runs")
        == "error: not a campaign folder (no config.yaml): runs (the campaigns in it: runs/demo)"
    )
    assert refusal("runs/demo/report.html") == "error: not a folder: runs/demo/report.html"
    assert refusal(".") == "error: not a campaign folder (no config.yaml): ."
    # a Hydra config folder's config.yaml is no campaign's: not one to remove, as a campaign's broken one is
    assert refusal("conf") == (
        "error: not a campaign folder (its config.yaml is no campaign's, and no campaign ran there): conf"
    )
    assert refusal("elsewhere") == "error: no such folder: elsewhere"


def test_status_of_a_first_start_still_setting_up_says_so(tmp_path: Path) -> None:
    """config.yaml is written once the study is open and the data prepared (minutes at the gpt2
    scale): meanwhile the folder has only its controller's heartbeat, and status says what it is."""
    beat = Heartbeat(tmp_path)
    beat.start()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "autoresearch.status", str(tmp_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    finally:
        beat.stop("the test ended")
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    assert line.startswith(
        f"error: {tmp_path}: its first start is still setting up (the data, the study); controller running: pid "
    )
    # once that controller has stopped (a failed download, a refused storage), it is not "still" so
    out = subprocess.run(
        [sys.executable, "-m", "autoresearch.status", str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"error: {tmp_path}: its first start did not get past setting up (the data, the study); "
        f"controller {controller_state(tmp_path)}"
    ]
    assert controller_state(tmp_path).startswith("stopped ") and "the test ended" in out.stderr


def test_a_heartbeat_the_disk_refuses_is_said_once_and_again_when_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A controller.json that could not be written (a full disk, a read-only folder) was passed
    over in silence: `status` said the controller ran until its beat went stale, then that it was
    gone, and no one was told why. A refused beat is now said once, with the file and the error,
    and once again when a beat is written. (A folder in its place refuses root's writes too.)"""
    caplog.set_level(logging.INFO, logger="autoresearch")
    in_the_way = tmp_path / CONTROLLER_FILE / "x"
    in_the_way.mkdir(parents=True)
    beat = Heartbeat(tmp_path, every=3600.0)  # (no beat of its thread during the test)
    beat.start()
    beat.beat()
    refused = [r.getMessage() for r in caplog.records]
    assert refused == [
        f"cannot write {tmp_path / CONTROLLER_FILE}: Is a directory; the "
        "campaign goes on, but `autoresearch status` from another host will say this controller is not "
        f"seen after {STALE_SECONDS:.0f} s"
    ], refused
    in_the_way.rmdir()
    in_the_way.parent.rmdir()
    caplog.clear()
    beat.beat()
    beat.beat()
    beat.stop("the test ended")
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / CONTROLLER_FILE} written again: `autoresearch status` sees this controller again"
    ]
    assert "the test ended" in controller_state(tmp_path)


@pytest.mark.parametrize("written", [False, True], ids=["no beat written", "a beat written first"])
def test_a_controllers_running_time_the_disk_refused_to_record_is_said_not_lost_in_silence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, written: bool
) -> None:
    """A controller whose controller.json the disk refused (full) from its count's start, or from
    some beat on, to its stop: the next resume counted it only up to its last beat written (none of
    it where none was), and no one was told. Its stop now says how much time the wall budget will
    not count, and to when it counts it."""
    in_the_way = tmp_path / CONTROLLER_FILE / "x"  # (refuses every write, as a full disk does)
    if not written:
        in_the_way.mkdir(parents=True)
    beat = Heartbeat(tmp_path, every=3600.0)  # (no beat of its thread during the test)
    beat.start()
    beat.count_from(600.0)
    if written:
        (tmp_path / CONTROLLER_FILE).unlink()
        in_the_way.mkdir(parents=True)
    caplog.set_level(logging.INFO, logger="autoresearch")
    beat.stop("the user")
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("wall budget")]
    counted = r"its time up to \d{4}-\d\d-\d\d \d\d:\d\d \S+" if written else "none of it"
    assert len(said) == 1 and re.fullmatch(
        rf"wall budget: \d+ s of this controller's running time is not in {re.escape(str(tmp_path / CONTROLLER_FILE))}, "
        rf"which the disk refused; max_wall_hours counts {counted}",
        said[0],
    ), said


@pytest.mark.parametrize("tool", ["status", "report"])
def test_a_campaign_that_ran_without_its_config_yaml_is_not_said_to_be_setting_up(
    tmp_path: Path, tool: str
) -> None:
    """config.yaml deleted from a campaign that ran: it was said not to have got past setting
    up. It says config.yaml is gone, and what writes it anew."""
    (tmp_path / "experiments" / "00000").mkdir(parents=True)
    beat = Heartbeat(tmp_path)
    beat.start()
    beat.stop("experiments budget reached")
    out = subprocess.run(
        [sys.executable, "-m", f"autoresearch.{tool}", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"error: {tmp_path} ran experiments, but its config.yaml, which says where its study is, is gone: "
        "the campaign's command writes it anew as it resumes the campaign (study and results kept)"
    ]


def test_status_of_a_campaign_without_a_study_yet_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("campaign:\n  name: early\nstorage: null\n")
    out = subprocess.run(
        [sys.executable, "-m", "autoresearch.status", str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"error: no study 'early' yet in {tmp_path / 'study.journal'}"]
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # looking changes nothing
    (tmp_path / "experiments" / "00000").mkdir(parents=True)  # it ran: the journal was deleted since
    out = subprocess.run(
        [sys.executable, "-m", "autoresearch.status", str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"error: no study 'early' in {tmp_path / 'study.journal'}, though {tmp_path / 'experiments'} holds "
        "the experiments it ran: the study was lost (deleted, emptied?); put it back as it was to read the campaign"
    ]


NOW = 1_800_000_000.0  # the clock the frames below are drawn at


def printed(console_width: int, study: optuna.Study, campaign_dir: Path) -> list[str]:
    """What `status` prints at NOW, line by line, without the rules and borders of its tables."""
    console = Console(record=True, width=console_width, file=io.StringIO())
    console.print(render(study, campaign_dir, now=NOW))
    return [line.strip() for line in console.export_text().splitlines()]


def test_status_leaves_out_empty_tables_and_says_why(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="early")
    baseline = {
        "status": "baseline",
        "tier": "screen",
        "val_bpb": 2.0,
        "ended_at": 1.0,
        "description": "baseline",
    }
    study.add_trial(optuna.trial.create_trial(value=2.0, user_attrs=baseline))
    lines = printed(200, study, tmp_path)
    assert any(line.startswith("kept changes") and "none yet" in line for line in lines)
    skipped = {**baseline, "status": "skip", "description": "a repeat"}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=skipped))
    lines = printed(200, study, tmp_path)
    assert any(
        "1 finished (1 baseline, 0 kept, 0 discarded, 0 crashed), 1 skipped (never ran)" in line
        for line in lines
    )
    assert "running" not in lines  # no table title: the head says "nothing running"
    assert any("; nothing running" in line for line in lines)

    pending = {"description": "wider", "partition": "h100", "job": "slurm:h100:4242_3"}
    study.enqueue_trial({}, user_attrs=pending)
    study.ask()  # now running: launched, its runner not started (a Slurm job in the queue)
    started = {
        "description": "narrower",
        "partition": "h100",
        "exp_dir": "experiments/00009",
        "job": "local:5151",
    }
    study.enqueue_trial({}, user_attrs=started)
    study.ask()
    (tmp_path / "experiments" / "00009").mkdir(parents=True)
    (tmp_path / "experiments" / "00009" / "started.json").write_text(json.dumps({"started_at": NOW - 150}))
    kept = {
        **baseline,
        "status": "keep",
        "val_bpb": 1.9,
        "ended_at": 2.0,
        "description": "deeper",
        "commit": "abc",
    }
    study.add_trial(optuna.trial.create_trial(value=1.9, user_attrs=kept))
    number = study.trials[-1].number
    for value in (1.92, 1.96):  # its fresh-seed re-runs: the kept table gives their mean
        rerun = {**baseline, "status": "rerun", "val_bpb": value, "validates": number}
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs=rerun))
    lines = printed(200, study, tmp_path)
    assert "kept changes" in lines and "running" in lines  # both tables, by their titles
    assert not any("none yet" in line for line in lines)
    assert any("deeper" in line and "abc" in line and "1.940000 (mean of 2)" in line for line in lines)
    assert any("wider" in line and "h100" in line and "pending" in line for line in lines)
    assert any("narrower" in line and "running" in line and "2.5 min" in line for line in lines)
    # the job each runs as, to scancel or kill it by: the Slurm job, the local runner's pid
    assert any("wider" in line and " 4242_3 " in line for line in lines)
    assert any("narrower" in line and " pid 5151 " in line for line in lines)
    assert any("1 running, 1 pending on the cluster, 0 queued" in line for line in lines)

    # re-runs on a validate tier (other GPUs) are another mean, each named by its tier; these are
    # named as a study begun before 2026-12-04 holds them, and read the same
    for value in (1.80, 1.84):
        rerun = {**baseline, "status": "validated", "tier": "validate", "val_bpb": value, "validates": number}
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs=rerun))
    lines = printed(250, study, tmp_path)
    assert any("1.940000 (mean of 2 on screen); 1.820000 (mean of 2 on validate)" in line for line in lines)


def test_a_change_whose_run_ended_is_shown_awaiting_its_decision_not_running(tmp_path: Path) -> None:
    """A promoted change stays undecided (a running trial) while its re-runs go, and a result
    waits so for the runs it is compared with. Status counted each as running, for as long as
    they took: now as ran and awaiting a decision, saying which, since its run ended."""
    study = optuna.create_study(study_name="confirming")
    for number, attrs in enumerate(
        (
            {"description": "deeper", "promoted": True, "ended_at": NOW - 240},
            {"description": "wider", "ended_at": NOW - 60},
            {"description": "validates deeper", "validates": 0},
        )
    ):
        exp_dir = f"experiments/{number:05d}"
        study.enqueue_trial({}, user_attrs={**attrs, "partition": "h100", "exp_dir": exp_dir})
        study.ask()
        (tmp_path / exp_dir).mkdir(parents=True)
        (tmp_path / exp_dir / "started.json").write_text(json.dumps({"started_at": NOW - 600}))
    lines = [" ".join(line.replace("│", " ").split()) for line in printed(200, study, tmp_path)]
    assert any(
        line.endswith("1 running, 0 pending on the cluster, 0 queued, 2 ran and awaiting a decision")
        for line in lines
    )
    assert (
        "0 h100 - awaiting re-runs 4.0 min deeper" in lines
    )  # trial, partition, job, state, for, description
    assert "1 h100 - awaiting comparison 1.0 min wider" in lines
    assert "2 h100 - running 10.0 min validates deeper" in lines


def test_a_running_trial_whose_started_json_has_no_number_shows_running_for_an_unknown_time(
    tmp_path: Path,
) -> None:
    """started.json damaged by hand (its start a string): the run shows as running, since when
    unknown, where the whole view was a TypeError."""
    study = optuna.create_study(study_name="damaged")
    study.enqueue_trial(
        {}, user_attrs={"description": "wider", "partition": "h100", "exp_dir": "experiments/00000"}
    )
    study.ask()
    (tmp_path / "experiments/00000").mkdir(parents=True)
    (tmp_path / "experiments/00000/started.json").write_text(json.dumps({"started_at": "yesterday"}))
    lines = [" ".join(line.replace("│", " ").split()) for line in printed(200, study, tmp_path)]
    assert "0 h100 - running - wider" in lines


def test_status_says_the_time_the_wall_budget_counts_not_the_time_since_the_first_start(
    tmp_path: Path,
) -> None:
    """A campaign begun 26 h ago, its controllers run 30 min before a stop overnight and 15 min
    since its resume: status said "elapsed 26 h" next to max_wall_hours 1, and a user could not
    tell why it still ran. It says the 45 min the budget counts, against its limit, and the first
    start apart, as calendar time; the count goes on while the controller lives between waves
    (nothing running), and ends at its last beat once it stopped."""
    study = optuna.create_study(study_name="resumed")
    study.set_user_attr("started_at", NOW - 26 * 3600)
    ran = {"status": "baseline", "tier": "screen", "exp_dir": "experiments/00000", "pool": "local"}
    ran |= {"started_at": NOW - 26 * 3600, "ended_at": NOW - 3600, "description": "baseline"}
    study.add_trial(optuna.trial.create_trial(value=2.0, user_attrs=ran))
    alive = {"pid": os.getpid(), "host": socket.gethostname(), "state": "running", "seen_at": NOW - 60}
    alive |= {RAN_BEFORE: 30 * 60, COUNTING_SINCE: NOW - 15 * 60}
    (tmp_path / CONTROLLER_FILE).write_text(json.dumps(alive))
    config = _saved_config(
        tmp_path, "resumed", "cluster.partitions.local.slots=1", "campaign.budget.max_wall_hours=1"
    )

    def head() -> list[str]:
        console = Console(record=True, width=200, file=io.StringIO())
        console.print(render(study, tmp_path, now=NOW, config=config))
        return [" ".join(line.split()) for line in console.export_text().splitlines()]

    counted = "the time its controllers ran (what the wall budget counts)"
    assert f"ran 0.75 h of max_wall_hours 1, {counted}; nothing running" in head()
    assert "first start 26.00 h ago (calendar time)" in head()
    assert not any("elapsed" in line for line in head())
    (tmp_path / CONTROLLER_FILE).write_text(json.dumps({**alive, "state": "stopped", "why": "done"}))
    assert f"ran 0.73 h of max_wall_hours 1, {counted}; nothing running" in head()  # to its last beat


@pytest.mark.parametrize("ended", ["its pid free", "its pid taken by another process"])
def test_status_counts_a_controller_killed_on_this_host_to_its_last_beat_not_to_now(
    tmp_path: Path, ended: str
) -> None:
    """A controller killed outright (kill -9) on this host, its last beat a minute old: status
    counted its time on to now until the beat went stale (up to 120 s too many), where the kernel
    says at once that it ended: its pid is free, or another process took it since. It counts to
    its last beat; a live controller's beat a minute old still counts to now."""
    study = optuna.create_study(study_name="killed")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "host": socket.gethostname(), "state": "running", "seen_at": NOW - 60}
    record |= {RAN_BEFORE: 600, COUNTING_SINCE: NOW - 660}
    if ended == "its pid taken by another process":  # (this process, begun at another tick than recorded)
        record |= {"pid": os.getpid(), PID_STARTED: str(int(process_start(os.getpid()) or 0) + 1)}
    (tmp_path / CONTROLLER_FILE).write_text(json.dumps(record))
    assert measure(study, {}, tmp_path, NOW).wall_hours == pytest.approx(1200 / 3600)
    assert controller_state(tmp_path, now=NOW).startswith("gone: ")
    alive = {**record, "pid": os.getpid(), PID_STARTED: process_start(os.getpid())}
    (tmp_path / CONTROLLER_FILE).write_text(json.dumps(alive))
    assert measure(study, {}, tmp_path, NOW).wall_hours == pytest.approx(1260 / 3600)


@pytest.mark.parametrize("where", ["this-kernel", "another-machine"])
def test_a_controller_of_another_container_of_this_name_is_not_said_gone(tmp_path: Path, where: str) -> None:
    """Two containers of one host name (each 'localhost', or run with their host's network), on this
    kernel or another machine's: status in the one read the other's live controller by its own
    /proc, found its pid free, said 'gone ... (killed?)' and counted its time to its last beat. Its
    kernel view, another's, says /proc here cannot see it: its beat says it runs. A record written
    before views were recorded is judged by the name, as before; one of this view by /proc here."""
    here = kernel_view()
    if here is None:
        pytest.skip("no kernel view here (/proc)")
    study = optuna.create_study(study_name="sibling")
    boot = here.split("/")[0] if where == "this-kernel" else "0f2c6a53-0000-4000-8000-000000000000"
    no_process = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # (no pid is ever this)
    record = {"pid": no_process, "host": socket.gethostname(), "state": "running", "seen_at": NOW - 60}
    record |= {RAN_BEFORE: 600, COUNTING_SINCE: NOW - 660, KERNEL_VIEW: f"{boot}/4:4026532999"}
    (tmp_path / CONTROLLER_FILE).write_text(json.dumps(record))
    assert (
        controller_state(tmp_path, now=NOW)
        == f"running: pid {no_process} on {socket.gethostname()}, seen 60 s ago"
    )
    assert measure(study, {}, tmp_path, NOW).wall_hours == pytest.approx(1260 / 3600)
    older = {key: value for key, value in record.items() if key != KERNEL_VIEW}
    (tmp_path / CONTROLLER_FILE).write_text(json.dumps(older))
    assert controller_state(tmp_path, now=NOW).startswith("gone: ")
    renamed = {**record, KERNEL_VIEW: here, "host": "login-2"}  # (this process's view, its name changed)
    (tmp_path / CONTROLLER_FILE).write_text(json.dumps(renamed))
    assert controller_state(tmp_path, now=NOW).startswith("gone: ")
    assert measure(study, {}, tmp_path, NOW).wall_hours == pytest.approx(1200 / 3600)


def test_the_spend_line_prices_the_hours_as_the_dollar_budget_does(tmp_path: Path) -> None:
    """`max_dollars` counts each experiment's hours at the price it was launched at: status shows
    those dollars, also for a pool config.yaml no longer names (a resume on other partitions).
    Hours launched before prices were recorded take config.yaml's price; on a pool it no longer
    names they have none, and status said only "+ unpriced hours": it now says which hours, and
    the GPU types they ran on, as report.html does."""
    study = optuna.create_study(study_name="priced")
    study.set_user_attr("started_at", NOW - 3 * 3600)
    runs = (
        ("h100", "H100", 1.0, None),
        ("h100", "H100", 0.5, None),
        ("h200", "H200", 0.25, None),
        ("h200", "H100", 0.5, None),  # (the partition's gpu_type changed on a resume)
        ("a100", "A100", 2.0, 3.0),
    )
    for number, (pool, gpu_type, hours, price) in enumerate(runs):
        ran = {"status": "discard", "tier": "screen", "exp_dir": f"experiments/{number:05d}", "pool": pool}
        ran |= {"gpu_type": gpu_type, "started_at": NOW - 7200, "ended_at": NOW - 7200 + hours * 3600}
        ran |= {} if price is None else {PRICE_ATTR: price}
        study.add_trial(optuna.trial.create_trial(value=2.0, user_attrs=ran))
    console = Console(record=True, width=200, file=io.StringIO())
    for prices, said in (
        ({"h100": 2.0, "h200": 4.0}, "4.25 GPU-hours ($12.00), $0.00 of LLM calls"),
        ({"h100": 2.0}, "4.25 GPU-hours ($9.00 + ? for 0.75 GPU-hours on H200, H100), $0.00 of LLM calls"),
    ):
        console.print(render(study, tmp_path, now=NOW, prices=prices))
        assert said in console.export_text()


def test_the_hours_of_a_change_awaiting_its_decision_count_in_status_and_the_gpu_hours_budget(
    tmp_path: Path,
) -> None:
    """A promoted change stays a running trial while its re-runs go, yet its run ended and its
    slot was billed: the report counted its hours, while status and the GPU-hours budget left them
    out until the decision. All three count them now."""
    study = optuna.create_study(study_name="awaiting")
    study.set_user_attr("started_at", NOW - 3 * 3600)
    ran = {"tier": "screen", "pool": "h100", "gpu_type": "H100", PRICE_ATTR: 2.0, "started_at": NOW - 7200}
    ended = {**ran, "status": "discard", "exp_dir": "experiments/00000", "ended_at": NOW - 3600}
    study.add_trial(optuna.trial.create_trial(value=2.0, user_attrs=ended))  # 1 hour
    awaiting = {**ran, "promoted": True, "exp_dir": "experiments/00001", "ended_at": NOW - 5400}
    study.enqueue_trial({}, user_attrs=awaiting)  # half an hour, awaiting its re-runs
    study.ask()

    console = Console(record=True, width=200, file=io.StringIO())
    console.print(render(study, tmp_path, now=NOW, prices={"h100": 2.0}))
    assert "1.50 GPU-hours ($3.00), $0.00 of LLM calls" in console.export_text()
    spent = measure(study, {}, tmp_path, NOW)
    assert exhausted(spent, BudgetConfig(max_gpu_hours=1.5)) == "GPU-hours budget reached (1.5 of 1.5)"
    assert sum(Ledger(study, time.time, lambda: None).rated_hours.values()) == pytest.approx(1.5)


def test_status_shows_brackets_in_descriptions_reasons_and_stop_reasons_as_written(tmp_path: Path) -> None:
    """Rich reads [...] as markup: a log line's `[rank0]` vanished, and a closing tag that opens
    nothing failed the whole view."""
    study = optuna.create_study(study_name="brackets")
    crash = {
        "status": "crash",
        "tier": "screen",
        "ended_at": 1.0,
        "description": "index by x[i] [/i]",
        "reason": "exit 1: [rank0]: no shards in [/data/shards]",
    }
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=crash))
    stopped = {"pid": 1, "host": "elsewhere", "state": "stopped", "seen_at": 1.0, "why": "asked to [/bold]"}
    (tmp_path / CONTROLLER_FILE).write_text(json.dumps(stopped))
    lines = printed(250, study, tmp_path)
    assert any("exit 1: [rank0]: no shards in [/data/shards]" in line for line in lines)
    assert any("index by x[i] [/i]" in line for line in lines)
    assert any(line.startswith("controller") and line.endswith(": asked to [/bold]") for line in lines)


def test_a_decisions_reason_shows_whole_and_a_long_one_is_cut_visibly() -> None:
    decision = "-0.0281 vs frontier 1.9513 (4 runs); needed < -0.0338 (1 x noise 0.0303)"
    assert clipped(decision) == decision
    crash = "RuntimeError: " + "shape mismatch " * 10
    assert len(clipped(crash)) == REASON_CHARS and clipped(crash).endswith("…")
    assert clipped(crash)[:-1] == crash[: REASON_CHARS - 1]


def test_the_controller_line_tells_running_stopped_and_gone(tmp_path: Path) -> None:
    assert controller_state(tmp_path) is None  # no controller wrote one: the line is left out
    beat = Heartbeat(tmp_path, every=0.01)
    beat.start()
    first = json.loads((tmp_path / CONTROLLER_FILE).read_text())
    here = f"pid {os.getpid()} on {socket.gethostname()}"
    assert first.get(KERNEL_VIEW) == kernel_view()  # (whose /proc shows it: `heartbeat.seen_here`)
    assert re.fullmatch(rf"running: {re.escape(here)}, seen \d+ s ago", controller_state(tmp_path) or "")
    # The thread beats on its own, whatever the loop is doing.
    wait_for(
        lambda: json.loads((tmp_path / CONTROLLER_FILE).read_text())["seen_at"] > first["seen_at"],
        10,
        "a second beat",
        every=0.01,
    )
    later = json.loads((tmp_path / CONTROLLER_FILE).read_text())["seen_at"] + STALE_SECONDS + 300
    assert controller_state(tmp_path, now=later).startswith(f"not seen for 7 min ({here}): killed")
    beat.stop("experiments budget reached (5 of 5)")
    stopped = controller_state(tmp_path, now=later)
    assert stopped is not None and stopped.startswith("stopped ")
    assert stopped.endswith(": experiments budget reached (5 of 5)")

    # On the controller's own host the kernel says at once whether its pid lives.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {**first, "pid": dead.pid, "state": "running", "seen_at": time.time()}
    (tmp_path / CONTROLLER_FILE).write_text(json.dumps(record))
    assert controller_state(tmp_path) == (
        f"gone: pid {dead.pid} on {socket.gethostname()} ended without a word (killed?); "
        "run the campaign command again to resume"
    )


def _journal_study(folder: Path, name: str) -> optuna.Study:
    """A new study in the campaign folder's journal, where the controller keeps it."""
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "study.journal"))
    )
    return optuna.create_study(study_name=name, storage=storage)


def _campaign_of_discards(folder: Path, name: str, count: int) -> None:
    """A campaign folder as status reads it: config.yaml and a journal study of `count` discards."""
    (folder / "config.yaml").write_text(
        f"campaign: {{name: {name}}}\nstorage: null\ncluster: {{partitions: {{}}}}\n"
    )
    study = _journal_study(folder, name)
    for number in range(count):
        ran = {"status": "discard", "tier": "screen", "ended_at": float(number), "description": "a change"}
        study.add_trial(optuna.trial.create_trial(value=2.0, user_attrs=ran))


def test_json_rows_piped_into_a_reader_that_stops_early_end_quietly(tmp_path: Path) -> None:
    """`status --json | head -2`: head closes the pipe after two lines, and the rows still to be
    printed ended in a BrokenPipeError traceback on the terminal."""
    _campaign_of_discards(
        tmp_path, "piped", 200
    )  # more than a pipe holds: the tool blocks until the reader leaves
    tool = subprocess.Popen(
        [sys.executable, "-m", "autoresearch.status", str(tmp_path), "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tool.stdout is not None
    assert json.loads(tool.stdout.readline())["trial"] == 0  # a reader that takes one row, then leaves
    tool.stdout.close()
    _, err = tool.communicate(timeout=60)
    assert err == "" and tool.returncode == 0


@pytest.mark.parametrize("view", [[], ["--watch", "0.1"], ["--json"]], ids=["plain", "watch", "json"])
def test_any_view_into_a_pipe_its_reader_has_left_ends_quietly_with_status_0(
    tmp_path: Path, view: list[str]
) -> None:
    """`status DIR --watch 5 | head -3`: rich ends the program itself when the pipe breaks, with exit
    status 1, where `status DIR --json | head` ended with 0. A pipe whose reader has left before the
    first write breaks on it for each view, whatever its size."""
    _campaign_of_discards(tmp_path, "left", 3)
    tool = autoresearch_into_closed_pipe(["status", str(tmp_path), *view])
    assert (tool.returncode, tool.stderr) == (0, "")


def test_the_live_view_into_a_pipe_prints_a_frame_at_each_refresh(tmp_path: Path) -> None:
    """`status --watch 10 | tee watch.log` (or into a file): with no screen to redraw, the live
    view printed nothing until Ctrl-C, and nothing at all when ended by TERM."""
    _campaign_of_discards(tmp_path, "watched", 3)
    tool = subprocess.Popen(
        [sys.executable, "-m", "autoresearch.status", str(tmp_path), "--watch", "0.1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert tool.stdout is not None
    heads: list[str] = []
    reader = threading.Thread(
        target=lambda: heads.extend(line for line in tool.stdout if line.startswith("campaign ")), daemon=True
    )
    reader.start()
    try:
        wait_for(lambda: len(heads) >= 2, 60, "two frames of the live view")
    finally:
        tool.terminate()
        tool.wait(timeout=30)
    assert all(head.split()[1] == "watched" for head in heads), heads


def test_a_controller_file_that_is_a_folder_is_said_not_a_traceback(tmp_path: Path) -> None:
    """`controller.json` made a folder (by hand, or a bad copy): status and check say so in the
    controller's line, not in a traceback."""
    (tmp_path / CONTROLLER_FILE).mkdir()
    assert (controller_state(tmp_path) or "").startswith(
        f"unreadable: {tmp_path / CONTROLLER_FILE} is a folder"
    )


@pytest.mark.parametrize(
    "record",
    [
        {"pid": "abc", "host": "here", "state": "running", "seen_at": "yesterday"},
        {"pid": 10**30, "host": socket.gethostname(), "state": "running", "seen_at": NOW},
        {"pid": 1, "host": "here", "state": "stopped", "seen_at": 1e300},
    ],
)
def test_a_controller_file_whose_figures_are_no_pid_or_time_is_said_damaged(
    tmp_path: Path, record: dict
) -> None:
    """`controller.json` edited by hand into figures that are no pid or time: said damaged in the
    controller's line, where status died of a ValueError or OverflowError."""
    (tmp_path / CONTROLLER_FILE).write_text(json.dumps(record))
    assert (controller_state(tmp_path, now=NOW) or "").startswith(
        f"unreadable: {tmp_path / CONTROLLER_FILE} is damaged"
    )


def _saved_config(folder: Path, name: str, *settings: str) -> DictConfig:
    """config.yaml as the controller writes it (every setting, `settings` as overrides), read back
    as `status` reads it."""
    cfg = OmegaConf.merge(
        OmegaConf.structured(AutoresearchConfig), OmegaConf.from_dotlist([f"campaign.name={name}", *settings])
    )
    (folder / SAVED_CONFIG).write_text(OmegaConf.to_yaml(cfg))
    return with_defaults(read_saved_config(folder / SAVED_CONFIG))


def _ran(study: optuna.Study, pool: str, started: float, held: float, **attrs: str) -> None:
    """An ended experiment that held its slot on `pool` for `held` seconds from `started`."""
    number = len(study.trials)
    ran = {"status": "discard", "tier": "screen", "exp_dir": f"experiments/{number:05d}", "pool": pool}
    ran |= {"started_at": started, "ended_at": started + held, "description": "a change", **attrs}
    study.add_trial(optuna.trial.create_trial(value=2.0, user_attrs=ran))


def _controller_running(folder: Path, seen_at: float = NOW) -> None:
    """A live controller's heartbeat: this process's pid, on this host."""
    alive = {"pid": os.getpid(), "host": socket.gethostname(), "state": "running", "seen_at": seen_at}
    (folder / CONTROLLER_FILE).write_text(json.dumps(alive))


def ends_line(study: optuna.Study, folder: Path, config: DictConfig) -> str | None:
    """The head's "ends" row as `status` prints it at NOW, its label cut off; None where it has none."""
    console = Console(record=True, width=400, file=io.StringIO())
    console.print(render(study, folder, now=NOW, prices=pool_prices(config), config=config))
    found = [
        line.split(None, 1)[1].rstrip()
        for line in console.export_text().splitlines()
        if line.startswith("ends ")
    ]
    return found[0] if found else None


def test_the_ends_line_names_the_budget_that_binds_first_at_the_recent_pace(tmp_path: Path) -> None:
    """A resume onto two slots, whose experiments hold them half as long: the end is estimated at
    the pace of each tier's last 3 x slots experiments, not of the whole study."""
    config = _saved_config(
        tmp_path,
        "paced",
        "cluster.kind=slurm",
        "cluster.partitions.h100.slots=2",
        "cluster.partitions.h100.price_per_gpu_hour=3.0",
        "cluster.tiers.screen=h100",
        "cluster.tiers.validate=h100",
        "campaign.budget.max_experiments=60",
        "campaign.budget.max_gpu_hours=40",
    )
    study = _journal_study(tmp_path, "paced")
    study.set_user_attr("started_at", NOW - 10 * 3600)
    for number in range(6):  # before the resume: one slot, 30 min an experiment
        _ran(study, "h100", NOW - 10 * 3600 + number * 1800, 1800)
    for number in range(6):  # since: two slots, about 15 min an experiment
        _ran(study, "h100", NOW - 4 * 3600 + number * 1000, 850 + 20 * number)
    _controller_running(tmp_path)
    ended = study.get_trials(deepcopy=False)
    recent = sorted(t.user_attrs["ended_at"] - t.user_attrs["started_at"] for t in ended[6:])
    median = (recent[2] + recent[3]) / 2
    gpu_hours = sum(t.user_attrs["ended_at"] - t.user_attrs["started_at"] for t in ended) / 3600
    by_experiments = (60 - len(ended)) / (2 * 3600 / median)
    by_gpu_hours = (40 - gpu_hours) / 2
    assert by_experiments < by_gpu_hours  # (the pace decides)
    assert ends_line(study, tmp_path, config) == (
        f"in about {by_experiments:.1f} h, when max_experiments binds ({len(ended)} of 60 used), "
        "at the pace of the last 6 experiments (an estimate: every slot busy)"
    )
    # the whole study's pace (half its experiments at 30 min) would have said otherwise
    whole = (60 - len(ended)) / (2 * 3600 / ((recent[-1] + 1800) / 2))
    assert f"{whole:.1f} h" not in (ends_line(study, tmp_path, config) or "")

    # a stopped campaign has no end ahead: its controller line says why it stopped
    stopped = {"pid": os.getpid(), "host": socket.gethostname(), "state": "stopped", "seen_at": NOW}
    (tmp_path / CONTROLLER_FILE).write_text(json.dumps({**stopped, "why": "asked to stop"}))
    assert ends_line(study, tmp_path, config) is None


def test_the_ends_line_says_too_few_were_measured_rather_than_guess(tmp_path: Path) -> None:
    """Fewer experiments measured than a tier has slots is no pace; the wall budget still bounds
    the end, at one hour an hour."""
    config = _saved_config(
        tmp_path,
        "early",
        "cluster.kind=slurm",
        "cluster.partitions.h100.slots=4",
        "cluster.tiers.screen=h100",
        "cluster.tiers.validate=h100",
        "campaign.budget.max_gpu_hours=100",
        "campaign.budget.max_wall_hours=8",
    )
    study = _journal_study(tmp_path, "early")
    started = NOW - 1.5 * 3600
    study.set_user_attr("started_at", started)
    _controller_running(tmp_path)
    wall_left = 8 - (NOW - started) / 3600
    assert ends_line(study, tmp_path, config) == (
        "not estimated yet: too few experiments measured, fewer than the slots (0 of 4 on screen); "
        f"max_wall_hours ends it in about {wall_left:.1f} h at the latest"
    )
    for slot in range(3):
        _ran(study, "h100", NOW - 3600, 600 + slot)
    assert ends_line(study, tmp_path, config) == (
        "not estimated yet: too few experiments measured, fewer than the slots (3 of 4 on screen); "
        f"max_wall_hours ends it in about {wall_left:.1f} h at the latest"
    )
    # a budget already reached: what runs finishes, and nothing new starts
    spent = _saved_config(
        tmp_path, "early", "cluster.partitions.h100.slots=4", "campaign.budget.max_wall_hours=1"
    )
    assert ends_line(study, tmp_path, spent) == (
        f"once the running experiments end: wall hours budget reached ({(NOW - started) / 3600:.4g} of 1), "
        "so no new one starts"
    )


def test_a_reached_budget_still_starts_the_runs_a_decision_waits_for_and_the_ends_line_says_so(
    tmp_path: Path,
) -> None:
    """A budget reached with a promoted change's re-run queued: the controller still runs it
    (`Ledger.owed`), so the line does not say that no new experiment starts."""
    config = _saved_config(tmp_path, "owed", "campaign.budget.max_experiments=2")
    study = _journal_study(tmp_path, "owed")
    study.set_user_attr("started_at", NOW - 3600)
    _ran(study, "local", NOW - 3600, 600)
    promoted = study.ask()  # its experiment ran; it awaits its re-runs' verdict
    for key, value in {"kind": "experiment", "promoted": True, "exp_dir": "experiments/00001"}.items():
        promoted.set_user_attr(key, value)
    study.enqueue_trial({}, user_attrs={"kind": "validation", "validates": promoted.number, "tier": "screen"})
    _controller_running(tmp_path)
    assert ends_line(study, tmp_path, config) == (
        "once the running experiments and the 1 queued run a decision waits for end: "
        "experiments budget reached (2 of 2), so no other one starts"
    )


def _three_gpus_seen_at_once(folder: Path, name: str, recorded: int = 0) -> optuna.Study:
    """A running study on local GPUs: three experiments at once, then one alone (400, 410, 420 and
    500 s held); its start recorded `recorded` slots (0: an older version's, which recorded none)."""
    study = _journal_study(folder, name)
    study.set_user_attr("started_at", NOW - 3600)
    if recorded:
        record_slots(study, {"local": Pool("local", recorded, "H100")})
    for slot in range(3):
        _ran(study, "local", NOW - 3600, 400 + 10 * slot, gpu_type="H100")
    _ran(study, "local", NOW - 1800, 500, gpu_type="H100")
    _controller_running(folder)
    return study


def test_local_slots_the_controller_counted_are_those_seen_running_at_once(tmp_path: Path) -> None:
    """A local partition of 0 slots has one per GPU the controller found, which config.yaml does
    not say. Where an older version's start recorded none, the most experiments that held slots at
    the same time stand for them."""
    config = _saved_config(
        tmp_path,
        "gpus",
        "cluster.partitions.local.slots=0",
        "cluster.partitions.local.gpu_type=auto",
        "campaign.budget.max_experiments=20",
    )
    study = _three_gpus_seen_at_once(tmp_path, "gpus")
    held = sorted([400.0, 410.0, 420.0, 500.0])
    hours = (20 - 4) / (3 * 3600 / ((held[1] + held[2]) / 2))
    assert ends_line(study, tmp_path, config) == (
        f"in about {hours * 60:.0f} min, when max_experiments binds (4 of 20 used), "
        "at the pace of the last 4 experiments (an estimate: every slot busy)"
    )
    # free slots spend no dollars: only LLM calls reach max_dollars, which no pace says
    free = _saved_config(
        tmp_path, "gpus", "cluster.partitions.local.slots=0", "campaign.budget.max_dollars=5"
    )
    assert ends_line(study, tmp_path, free) == (
        "when stopped or when the proposer runs dry: the slots cost nothing, so max_dollars counts only LLM calls"
    )


def test_local_slots_are_those_the_controllers_start_recorded(tmp_path: Path) -> None:
    """Four GPUs found, only three experiments seen at once: the four the start recorded count."""
    config = _saved_config(
        tmp_path,
        "found",
        "cluster.partitions.local.slots=0",
        "cluster.partitions.local.gpu_type=auto",
        "campaign.budget.max_experiments=20",
    )
    study = _three_gpus_seen_at_once(tmp_path, "found", recorded=4)
    hours = (20 - 4) / (4 * 3600 / ((410 + 420) / 2))
    assert ends_line(study, tmp_path, config) == (
        f"in about {hours * 60:.0f} min, when max_experiments binds (4 of 20 used), "
        "at the pace of the last 4 experiments (an estimate: every slot busy)"
    )


def test_a_real_start_records_its_slots_and_the_ends_line_paces_by_them(tmp_path: Path) -> None:
    """The toy campaign on 3 CPU slots: its start records them, and the end is estimated at the
    pace of the last 3 x 3 experiments, as if it still ran under a larger budget."""
    started = run_campaign(tmp_path, "campaign.budget.max_experiments=12", "cluster.cpu_slots=3")
    assert started.returncode == 0, started.stderr
    campaign = tmp_path / "toy"
    study = load(campaign)
    assert study.user_attrs[SLOTS_ATTR] == {"local": 3}
    ran = [t for t in study.trials if "started_at" in t.user_attrs and "ended_at" in t.user_attrs]
    assert len(ran) > 9  # (more than 3 rounds of 3 slots: the slots decide how many are paced)
    config = with_defaults(read_saved_config(campaign / SAVED_CONFIG))
    config.campaign.budget.max_experiments = 100
    _controller_running(campaign)
    said = ends_line(study, campaign, config) or ""
    assert said.endswith("at the pace of the last 9 experiments (an estimate: every slot busy)"), said


def test_status_of_a_running_campaign_without_a_budget_says_it_runs_until_stopped(tmp_path: Path) -> None:
    """Also from an older version's config.yaml: a setting it lacks takes its default, and one this
    version does not know is passed over."""
    older = "campaign: {name: open, retired_setting: 1}\nstorage: null\ncluster: {partitions: {}}\n"
    (tmp_path / SAVED_CONFIG).write_text(older)
    study = _journal_study(tmp_path, "open")
    study.set_user_attr("started_at", time.time() - 60)
    _controller_running(tmp_path, seen_at=time.time())
    out = subprocess.run(
        [sys.executable, "-m", "autoresearch.status", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert out.returncode == 0, out.stderr
    said = "when stopped or when the proposer runs dry: no budget is set"
    assert re.search(rf"^ends +{said} *$", out.stdout, re.MULTILINE), out.stdout
