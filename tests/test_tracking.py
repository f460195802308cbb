"""W&B tracking, checked in the offline run files W&B itself writes."""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
import wandb
from conftest import wandb_given_back
from engine_helpers import (
    REPO,
    campaign_command,
    compose_toy,
    launched_within_budget,
    load,
    run_campaign,
    wait_for,
)
from omegaconf import OmegaConf
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial
from wandb_records import offline_runs, read_run

from autoresearch import tracking
from autoresearch.config import SAVED_CONFIG, TrackingConfig
from autoresearch.files import complete_lines
from autoresearch.folder_lock import take_lock
from autoresearch.results import rows
from autoresearch.resume_changes import tracking_move
from autoresearch.study import finished
from autoresearch.tracking import (
    MAX_CURVE_POINTS,
    SENT_FILE,
    WandbTracker,
    run_id,
    training_curve,
    where_runs_are,
)
from autoresearch.wandb_files import is_whole

# The tracking code of a controller, in a process of its own, its sending thread held still at
# one point of trial 1's send until the test kills it: `finish`, as its run is about to be
# finished (its data file torn), or `sent`, once it is whole but not yet listed as sent.
KILLED_MID_SEND = """
import sys, threading
from pathlib import Path
import optuna, wandb
from optuna.storages.journal import JournalFileBackend
from autoresearch.config import SAVED_CONFIG, TrackingConfig
from autoresearch.tracking import WandbTracker
campaign, where, held = sys.argv[1], sys.argv[2], sys.argv[3]
def hold():
    open(held, "w").close()
    threading.Event().wait()
storage = optuna.storages.JournalStorage(JournalFileBackend(campaign + "/study.journal"))
study = optuna.load_study(study_name="toy", storage=storage)
config = TrackingConfig(kind="wandb", project="tests", mode="offline")
tracker = WandbTracker(config, Path(campaign), "toy")
finish, sent = wandb.Run.finish, tracker._sent
def held_finish(run, *args, **kwargs):
    if where == "finish" and run.id.endswith("-t00001"):
        hold()
    return finish(run, *args, **kwargs)
def held_sent(number):
    if where == "sent" and number == 1:
        hold()
    sent(number)
wandb.Run.finish, tracker._sent = held_finish, held_sent
tracker.update(study)
tracker._thread.join()
"""
WANDB_OFFLINE = ("tracking=wandb", "tracking.mode=offline", "tracking.project=tests")
SECRETS = {"ANTHROPIC_API_KEY": "sk-ant-api03-never-in-a-file", "WANDB_API_KEY": "f" * 40}


def test_every_experiment_becomes_a_wandb_run_with_its_figures(tmp_path: Path) -> None:
    out = run_campaign(tmp_path, *WANDB_OFFLINE, "campaign.budget.max_experiments=6", env=SECRETS)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not [x for x in out.stderr.splitlines() if x.startswith("wandb:")]  # not W&B's own chatter
    campaign = tmp_path / "toy"
    study = load(campaign)
    started = study.user_attrs["started_at"]
    runs = offline_runs(campaign / "wandb")
    sent = [t for t in finished(study) if t.user_attrs.get("status") != "skip"]
    assert sent
    for t in sent:
        (run,) = runs.pop(run_id("toy", started, f"t{t.number:05d}"))  # each exactly once
        attrs = t.user_attrs
        assert (run.group, run.job_type, run.tags) == ("toy", attrs["tier"], [attrs["status"]])
        assert run.config["trial"] == t.number and run.config["description"] == attrs["description"]
        assert {k: run.config[k] for k in json.loads(attrs["knobs"])} == json.loads(attrs["knobs"])
        assert run.summary["status"] == attrs["status"]
        if t.state == TrialState.COMPLETE:
            assert run.summary["val_bpb"] == t.value and run.exit_code == 0
        else:
            assert "val_bpb" not in run.summary and run.exit_code == 1
        if "exp_dir" in attrs:  # ran: its curve from run.log, and its diff and log as files
            assert [h["train/loss"] for h in run.history] == [4.0, 2.0]
            assert [h["_step"] for h in run.history] == [1, 2]
            assert set(run.files) == {"train.diff", "run.log"}
    (report,) = runs.pop(run_id("toy", started, "campaign"))
    assert report.job_type == "report" and report.history[0]["report._type"] == "html-file"
    assert not runs  # nothing else was sent
    # W&B's own lines are off, so the controller says where the runs are, once: offline, no link
    where = [x for x in (campaign / "controller.log").read_text().splitlines() if "W&B: " in x]
    wandb_dir = campaign / "wandb"
    assert len(where) == 1 and where[0].endswith(
        f"INFO W&B: offline: runs written under {wandb_dir}; send them with `wandb sync {wandb_dir}`"
    ), where
    # No secret of the controller's environment reached W&B's files (nor any file of the campaign).
    for path in campaign.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(secret.encode() in data for secret in SECRETS.values()), path


def test_a_resumed_campaign_sends_only_what_was_not_sent(tmp_path: Path) -> None:
    assert run_campaign(tmp_path, *WANDB_OFFLINE, "campaign.budget.max_experiments=4").returncode == 0
    campaign = tmp_path / "toy"
    first = set(offline_runs(campaign / "wandb"))
    assert run_campaign(tmp_path, *WANDB_OFFLINE, "campaign.budget.max_experiments=7").returncode == 0
    runs = offline_runs(campaign / "wandb")
    experiments = {i: r for i, r in runs.items() if not i.endswith("-campaign")}
    assert all(len(r) == 1 for r in experiments.values())  # none sent twice
    assert len(experiments) == len(
        [t for t in finished(load(campaign)) if t.user_attrs.get("status") != "skip"]
    )
    assert first < set(runs)
    assert len(runs[next(i for i in runs if i.endswith("-campaign"))]) == 2  # one report per controller run


def test_an_online_campaign_without_a_wandb_key_is_refused_before_it_starts(tmp_path: Path) -> None:
    home = tmp_path / "home"  # no ~/.netrc, and no WANDB_API_KEY
    home.mkdir()
    env = {"HOME": str(home), "WANDB_API_KEY": "", "WANDB_MODE": "online"}
    out = run_campaign(tmp_path, "tracking=wandb", env=env)
    assert out.returncode == 2
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert (
        line.startswith("error: W&B: no API key in WANDB_API_KEY or ~/.netrc")
        and "tracking.mode=offline" in line
    )
    assert not (tmp_path / "toy").exists()  # nothing written
    malformed = run_campaign(tmp_path, "tracking=wandb", env={**env, "WANDB_API_KEY": "x" * 12})
    assert malformed.returncode == 2
    (line,) = [x for x in malformed.stderr.splitlines() if x.startswith("error:")]
    assert "40+ characters" in line and "x" * 12 not in line  # W&B's reason, without the key
    # Offline, W&B needs no key.
    offline = run_campaign(
        tmp_path, "tracking=wandb", "tracking.mode=offline", "campaign.budget.max_experiments=1", env=env
    )
    assert offline.returncode == 0, offline.stdout + offline.stderr


def test_wandb_refusing_does_not_stop_the_campaign(tmp_path: Path) -> None:
    # A key, but a server that refuses connections: each wandb.init fails once its timeout is up.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    env = {
        "HOME": str(tmp_path),
        "WANDB_API_KEY": "f" * 40,
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port}",
        "WANDB_INIT_TIMEOUT": "5",
    }
    out = run_campaign(tmp_path, "tracking=wandb", "campaign.budget.max_experiments=4", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    campaign = tmp_path / "toy"
    launched_within_budget(load(campaign), 4)
    log = (campaign / "controller.log").read_text()
    assert log.count("W&B: cannot send") == 1  # said once, not once per experiment
    assert "W&B: runs at" not in log  # no run was made, so there is no link to give
    assert not (campaign / "wandb" / "sent.txt").exists()  # so the next run sends them all


def test_an_online_campaign_is_told_its_projects_link_and_an_offline_one_how_to_send_it(
    tmp_path: Path,
) -> None:
    """W&B's banner with the links is off (`quiet_wandb`), so the controller gives the link itself.
    Its server cannot be reached from the tests, so no online run can be made: the settings are
    W&B's own, as an online run holds them once the server has named its entity."""
    online = wandb.Settings(mode="online", entity="my-team", project="gpt2")
    assert online.project_url.endswith("/my-team/gpt2")  # (W&B's own link, as its banner gives it)
    assert where_runs_are(online, tmp_path, "toy") == f"W&B: runs at {online.project_url} (group toy)"
    own_server = wandb.Settings(
        mode="online", entity="lab", project="p", base_url="https://wandb.lab.example"
    )
    said = where_runs_are(own_server, tmp_path, "toy")
    assert said.startswith("W&B: runs at https://wandb.lab.example") and said.endswith("/lab/p (group toy)")
    offline = wandb.Settings(mode="offline", entity="my-team", project="gpt2")
    said = where_runs_are(offline, tmp_path, "toy")
    assert said.startswith("W&B: offline:") and f"`wandb sync {tmp_path}`" in said and "https" not in said
    disabled = where_runs_are(wandb.Settings(mode="disabled", project="gpt2"), tmp_path, "toy")
    assert "disabled" in disabled and "https" not in disabled


def test_the_curve_parses_what_the_real_trainer_prints(tmp_path: Path) -> None:
    run_log = tmp_path / "run.log"
    run_log.write_text(
        "device: cpu | scale: cpu\n"
        "step 00001 (0.0%) | loss 9.0110 | lrm 1.00 | dt 812 ms | tok/s 2,522 | mfu 0.0%\n"
        "step 00002 (4.1%) | loss nan | lrm 1.00 | dt 301 ms | tok/s 6,804 | mfu 0.0%\n"
        "step 00040 (96.0%) | loss 5.5000 | lrm 0.10 | dt 299 ms | tok/s 6,849 | mfu 41.5%\n"
        "step 00041 and something the agent printed\n"
        "val_bpb:          2.080000\n"
    )
    curve = training_curve(run_log)
    assert [p["step"] for p in curve] == [1, 2, 40]
    assert curve[0] == {"step": 1, "train/loss": 9.011, "train/tok/s": 2522.0, "train/mfu": 0.0}
    assert curve[2]["train/mfu"] == 41.5
    assert training_curve(tmp_path / "missing.log") == []


def test_a_trial_whose_records_do_not_read_is_left_out_not_the_tracking(tmp_path: Path) -> None:
    """A field of a progress line that does not parse is skipped; a trial whose records do not read
    at all is left out (and not tried again); the trials after either are still sent."""
    campaign = tmp_path / "toy"
    study = optuna.create_study(study_name="toy")
    warming = "step 00001 (0.0%) | loss 3.2000 | tok/s ... (warming up) | mfu 1.0%\n"
    for number, knobs in enumerate(("{}", "{not json", "{}")):
        exp_dir = campaign / "experiments" / f"{number:05d}"
        exp_dir.mkdir(parents=True)
        (exp_dir / "run.log").write_text(warming)
        attrs = {"exp_dir": str(exp_dir.relative_to(campaign)), "knobs": knobs, "status": "discard"}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=2.0, user_attrs=attrs))
    tracker = WandbTracker(TrackingConfig(kind="wandb", project="tests", mode="offline"), campaign, "toy")
    tracker.update(study)
    tracker.close(None)
    runs = offline_runs(campaign / "wandb")
    assert sorted(runs) == [run_id("toy", 0.0, "t00000"), run_id("toy", 0.0, "t00002")]
    for (run,) in runs.values():
        assert [{k: v for k, v in h.items() if not k.startswith("_")} for h in run.history] == [
            {"train/loss": 3.2, "train/mfu": 1.0}
        ]
    assert (campaign / "wandb" / SENT_FILE).read_text().split() == ["0", "1", "2"]


def test_a_torn_line_of_the_sent_list_is_sent_again_not_read_as_another_trial(tmp_path: Path) -> None:
    """A controller killed while writing "13" to sent.txt left "1": that is no trial known sent,
    and the next number appended must not make it read as "12"."""
    campaign = tmp_path / "toy"
    study = optuna.create_study(study_name="toy")
    for _ in range(3):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=2.0, user_attrs={"status": "discard"}))
    sent = campaign / "wandb" / SENT_FILE
    sent.parent.mkdir(parents=True)
    sent.write_text("0\n1")
    tracker = WandbTracker(TrackingConfig(kind="wandb", project="tests", mode="offline"), campaign, "toy")
    tracker.update(study)
    tracker.close(None)
    assert sorted(offline_runs(campaign / "wandb")) == [run_id("toy", 0.0, f"t{n:05d}") for n in (1, 2)]
    assert sent.read_text() == "0\n1\n2\n"


def test_a_curve_longer_than_the_cap_is_thinned_evenly_keeping_its_ends(tmp_path: Path) -> None:
    """A train.py printing every step of a fast model writes thousands of progress lines: each is a
    W&B call, so its run's send would take seconds and the fleet's backlog would grow."""
    campaign = tmp_path / "toy"
    exp_dir = campaign / "experiments" / "00000"
    exp_dir.mkdir(parents=True)
    lines = 2 * MAX_CURVE_POINTS + 500
    (exp_dir / "run.log").write_text(
        "".join(f"step {s:05d} | loss {1 + 1 / s:.6f}\n" for s in range(1, lines + 1))
    )
    study = optuna.create_study(study_name="toy")
    attrs = {"exp_dir": "experiments/00000", "status": "discard"}
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=2.0, user_attrs=attrs))
    tracker = WandbTracker(TrackingConfig(kind="wandb", project="tests", mode="offline"), campaign, "toy")
    tracker.update(study)
    tracker.close(None)
    ((run,),) = offline_runs(campaign / "wandb").values()
    steps = [h["_step"] for h in run.history]
    assert len(steps) == MAX_CURVE_POINTS
    assert steps[0] == 1 and steps[-1] == lines and steps == sorted(set(steps))
    gaps = {b - a for a, b in zip(steps, steps[1:], strict=False)}
    assert max(gaps) - min(gaps) <= 1  # evenly spread
    assert run.history[-1]["train/loss"] == round(1 + 1 / lines, 6)


def test_a_backlog_left_at_close_is_counted_and_says_how_to_send_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`close` waits boundedly: what the thread has not sent by then the next controller sends,
    and the user is told how many and how (no wait at all here, so a backlog is certain)."""
    campaign = tmp_path / "toy"
    study = optuna.create_study(study_name="toy")
    for _ in range(5):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=2.0, user_attrs={"status": "discard"}))
    monkeypatch.setattr(tracking, "CLOSE_TIMEOUT_S", 0.0)
    tracker = WandbTracker(TrackingConfig(kind="wandb", project="tests", mode="offline"), campaign, "toy")
    tracker.update(study)
    report = campaign / "report.html"
    report.write_text("<p>report</p>")
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        tracker.close(report)
    tracker._thread.join()  # (done with before tmp_path goes)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("W&B:")]
    counted = re.match(r"W&B: (\d+) experiment\(s\) and the report not sent after 0 s", line)
    assert counted, line
    assert 1 <= int(counted.group(1)) <= 5 and "command run again sends them" in line
    assert len(complete_lines(campaign / "wandb" / SENT_FILE)) == 5  # the thread went on with them


def test_a_runs_status_in_wandb_is_the_one_results_tsv_shows(tmp_path: Path) -> None:
    """W&B's summary took the raw status attr: an older study's re-run ("validated", which every
    reader takes as "rerun") showed under the old name, and a failed trial with no decision had no
    status in its summary, where results.tsv says rerun and crash."""
    campaign = tmp_path / "toy"
    study = optuna.create_study(study_name="toy")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=2.0, user_attrs={"status": "validated"}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"reason": "exit 1"}))
    tracker = WandbTracker(TrackingConfig(kind="wandb", project="tests", mode="offline"), campaign, "toy")
    tracker.update(study)
    tracker.close(None)
    runs = offline_runs(campaign / "wandb")
    shown = {n: runs[run_id("toy", 0.0, f"t{n:05d}")][0] for n in (0, 1)}
    assert [row["status"] for row in rows(study)] == ["rerun", "crash"]
    assert [(shown[n].summary["status"], shown[n].tags) for n in (0, 1)] == [
        ("rerun", ["rerun"]),
        ("crash", ["crash"]),
    ]


def test_looking_up_the_wandb_key_at_a_start_prints_none_of_wandbs_own_lines(tmp_path: Path) -> None:
    """W&B's own terminal output is off, yet its login, as an online start looked the key up, said
    "Loaded credentials for <host> from WANDB_API_KEY" and "W&B API key is configured" each time."""
    look_up = (
        "from autoresearch.config import TrackingConfig\n"
        "from autoresearch.tracking import check_credentials\n"
        "check_credentials(TrackingConfig(kind='wandb', project='tests', mode='online'))\n"
        "print('found')\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "WANDB_API_KEY": SECRETS["WANDB_API_KEY"]}
    said = tmp_path / "stderr"
    with said.open("w") as stderr:  # (a file, not a pipe: W&B's service may hold a pipe open after)
        out = subprocess.run(
            [sys.executable, "-c", look_up],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=120,
        )
    assert out.returncode == 0 and out.stdout == "found\n", said.read_text()
    assert not [x for x in said.read_text().splitlines() if x.startswith("wandb:")], said.read_text()


def test_looking_up_the_wandb_key_asks_the_wandb_server_nothing(tmp_path: Path) -> None:
    """The key is looked up without the server (which may be down for a while), yet W&B's login
    asked it who the key's user was, to say so on the terminal, though that line is off: 5 s to a
    timeout offline at every start and check, and once a process that did not end in 120 s. A
    server on 127.0.0.1 at WANDB_BASE_URL counts what it is asked."""
    asked: list[str] = []

    class Counting(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # (W&B's GraphQL)
            asked.append(self.path)
            self.send_response(500)
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    look_up = (
        "from autoresearch.config import TrackingConfig\n"
        "from autoresearch.tracking import check_credentials\n"
        "check_credentials(TrackingConfig(kind='wandb', project='tests', mode='online'))\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "WANDB_API_KEY": SECRETS["WANDB_API_KEY"]}
    env["WANDB_BASE_URL"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with (tmp_path / "out").open("w") as out:
            done = subprocess.run(
                [sys.executable, "-c", look_up], env=env, stdout=out, stderr=out, timeout=120
            )
    finally:
        server.shutdown()
    assert done.returncode == 0, (tmp_path / "out").read_text()
    assert asked == []


def tracked_study(campaign: Path, trials: int, steps: int) -> optuna.Study:
    """A study in a journal file, as a campaign keeps it, of `trials` finished experiments, each
    with a curve of `steps` points: at 1,000, W&B has written most of a run before it finishes it;
    at 3, nothing but its file's header."""
    campaign.mkdir(parents=True)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(campaign / "study.journal")))
    study = optuna.create_study(study_name="toy", storage=storage)
    for number in range(trials):
        exp_dir = campaign / "experiments" / f"{number:05d}"
        exp_dir.mkdir(parents=True)
        (exp_dir / "run.log").write_text(
            "".join(f"step {s:05d} | loss {number + 1 / s:.6f}\n" for s in range(1, steps + 1))
        )
        attrs = {"exp_dir": f"experiments/{number:05d}", "status": "discard"}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=2.0, user_attrs=attrs))
    return study


def kill_mid_send(campaign: Path, where: str) -> None:
    """Run the tracking code in a process of its own and kill it (SIGKILL) where KILLED_MID_SEND
    holds it: waited for, not slept on."""
    held = campaign / "held"
    # Its own W&B service, as a controller has, not this process's: one outlives the kill.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    with (campaign / "killed.stderr").open("w") as stderr:  # (not a pipe: W&B's service may hold it)
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_MID_SEND, str(campaign), where, str(held)], env=env, stderr=stderr
        )
        try:
            wait_for(lambda: held.exists() or proc.poll() is not None, 120, "the send to be held")
        finally:
            proc.kill()
            proc.wait()
    assert held.exists(), (campaign / "killed.stderr").read_text()


def resume_tracking(campaign: Path, study: optuna.Study) -> None:
    tracker = WandbTracker(TrackingConfig(kind="wandb", project="tests", mode="offline"), campaign, "toy")
    tracker.update(study)
    tracker.close(None)


def assert_one_whole_run_per_experiment(campaign: Path, trials: int, steps: int) -> None:
    """Each experiment in exactly one run folder, whole, with its whole curve; no other folder."""
    runs = offline_runs(campaign / "wandb")  # (read once W&B's service has written them out)
    folders = sorted((campaign / "wandb").glob("offline-run-*"))
    assert [is_whole(folder) for folder in folders] == [True] * trials, [f.name for f in folders]
    assert sorted(runs) == [run_id("toy", 0.0, f"t{n:05d}") for n in range(trials)]
    for number in range(trials):
        (run,) = runs[run_id("toy", 0.0, f"t{number:05d}")]
        assert [h["_step"] for h in run.history] == list(range(1, steps + 1)) and run.exit_code == 0
        assert run.history[0]["train/loss"] == number + 1
    assert sorted(map(int, complete_lines(campaign / "wandb" / SENT_FILE))) == list(range(trials))


@pytest.mark.parametrize("steps", [1000, 3])
def test_a_run_torn_by_a_controller_killed_mid_send_is_written_again_in_its_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, steps: int
) -> None:
    """Killed as trial 1's run was being finished, the controller left its folder with a data file
    that ends before the run's exit (or none at all): `wandb sync` of the campaign's folder fails
    for every run on a file with no run record in it, and replays one cut short as a failed run.
    The next controller writes the run again and removes the torn folder."""
    campaign = tmp_path / "toy"
    study = tracked_study(campaign, 3, steps)
    kill_mid_send(campaign, "finish")
    (torn,) = [f for f in (campaign / "wandb").glob("offline-run-*") if f.name.endswith("-t00001")]
    assert not is_whole(torn)
    assert complete_lines(campaign / "wandb" / SENT_FILE) == ["0"]
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        resume_tracking(campaign, study)
    assert_one_whole_run_per_experiment(campaign, 3, steps)
    (said,) = [r.getMessage() for r in caplog.records if "torn" in r.getMessage()]
    assert said.startswith("W&B: removed 1 run folder(s) left torn") and torn.name in said


def test_a_run_folder_left_without_its_data_file_is_removed_and_its_run_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A controller killed between wandb.init making the run's folder and W&B's service writing its
    data file left a folder with no run in it: `wandb sync` of the campaign's folder fails on it
    for every run. The next controller removes it and writes the run."""
    campaign = tmp_path / "toy"
    study = tracked_study(campaign, 2, 3)
    empty = campaign / "wandb" / f"offline-run-20260101_000000-{run_id('toy', 0.0, 't00001')}"
    for part in ("files", "logs", "tmp"):  # (as wandb.init makes it)
        (empty / part).mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        resume_tracking(campaign, study)
    assert not empty.exists()
    assert_one_whole_run_per_experiment(campaign, 2, 3)
    (said,) = [r.getMessage() for r in caplog.records if "torn" in r.getMessage()]
    assert said.startswith("W&B: removed 1 run folder(s) left torn") and empty.name in said


def test_a_torn_run_the_user_synced_by_hand_is_kept_not_written_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run torn by a killed controller that the user sent with `wandb sync` (which marks its data
    file sent with `<file>.synced` beside it) is in W&B already, cut short: the next controller
    removed its folder and wrote the run again, a second write under the same run id that the
    next `wandb sync` sent on top of it. It is now listed as sent and kept, and the user told."""
    campaign = tmp_path / "toy"
    study = tracked_study(campaign, 3, 1000)
    kill_mid_send(campaign, "finish")
    (torn,) = [f for f in (campaign / "wandb").glob("offline-run-*") if f.name.endswith("-t00001")]
    (data,) = torn.glob("run-*.wandb")
    data.with_name(data.name + ".synced").touch()  # as `wandb sync` leaves it
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        resume_tracking(campaign, study)
    assert torn.is_dir() and not is_whole(torn)
    folders = sorted((campaign / "wandb").glob("offline-run-*"))
    assert [f.name[-6:] for f in folders] == ["t00000", "t00001", "t00002"]  # trial 1 not written twice
    assert [read_run(f).exit_code for f in folders if f != torn] == [0, 0]
    assert sorted(map(int, complete_lines(campaign / "wandb" / SENT_FILE))) == [0, 1, 2]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("W&B:")]
    assert len(said) == 1 and torn.name in said[0] and "wandb sync" in said[0], said


def test_a_run_whole_but_not_listed_as_sent_when_its_controller_was_killed_is_not_written_twice(
    tmp_path: Path,
) -> None:
    """Killed after trial 1's run was finished, its file whole, but before sent.txt listed it, the
    controller left a run the next one wrote again under the same id: W&B keeps the second write
    as a second run folder, marked neither resumed nor a copy, its history again from step 1, and
    `wandb sync` sends both to that one run id, one after the other. It is listed now instead."""
    campaign = tmp_path / "toy"
    study = tracked_study(campaign, 3, 1000)
    kill_mid_send(campaign, "sent")
    (whole,) = [f for f in (campaign / "wandb").glob("offline-run-*") if f.name.endswith("-t00001")]
    assert is_whole(whole) and complete_lines(campaign / "wandb" / SENT_FILE) == ["0"]
    resume_tracking(campaign, study)
    assert_one_whole_run_per_experiment(campaign, 3, 1000)
    assert whole.is_dir()  # the run the killed controller wrote, kept


def test_a_resume_that_moves_the_wandb_project_says_where_the_earlier_runs_stay(tmp_path: Path) -> None:
    """A resume with another tracking.project or tracking.entity sent the rest of the campaign's
    runs there without a word, while W&B keeps those sent before where they went: the start says
    so in one warning line, naming both places and the settings that keep the campaign in one."""
    first = run_campaign(tmp_path, *WANDB_OFFLINE, "campaign.budget.max_experiments=2")
    assert first.returncode == 0, first.stdout + first.stderr
    campaign = tmp_path / "toy"
    sent = len(complete_lines(campaign / "wandb" / SENT_FILE))
    before = {i for i, r in offline_runs(campaign / "wandb").items() if not i.endswith("-campaign")}
    moved = ("tracking=wandb", "tracking.mode=offline", "tracking.project=moved", "tracking.entity=lab")
    command = campaign_command(tmp_path, *moved, "campaign.budget.max_experiments=4")
    checked = subprocess.run([*command[:3], "check", *command[3:]], cwd=REPO, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    warned = re.findall(r"^warning +(W&B: .+)$", checked.stdout, re.M)
    out = run_campaign(tmp_path, *moved, "campaign.budget.max_experiments=4")
    assert out.returncode == 0, out.stdout + out.stderr
    said = (campaign / "controller.log").read_text().splitlines()
    (line,) = [x for x in said if "changed since the last start: the" in x]
    assert warned == [line.split(" WARNING ", 1)[1]]  # `autoresearch check` says it too, in its words
    assert line.endswith(
        f"WARNING W&B: tracking.project and tracking.entity changed since the last start: the {sent} "
        "experiment run(s) and the reports sent before stay in project 'tests' of the login's default "
        "entity, and this start sends the rest, and its report, to project 'moved' of entity 'lab': the "
        "campaign's runs are split across two projects (tracking.project=tests tracking.entity=null keeps "
        "them in one)"
    ), line
    runs = offline_runs(campaign / "wandb")
    for name, written in runs.items():  # each where it was sent: W&B moves none
        places = [(run.project, run.entity) for run in written]
        if name.endswith("-campaign"):  # a report by each start
            assert places == [("tests", ""), ("moved", "lab")]
        else:
            assert places == [("tests", "") if name in before else ("moved", "lab")], name
    assert len(runs) > len(before) + 1  # the second start sent experiments of its own
    again = run_campaign(tmp_path, *moved, "campaign.budget.max_experiments=4")
    assert again.returncode == 0
    assert (campaign / "controller.log").read_text().count("changed since the last start: the") == 1


def test_a_start_refused_by_a_running_controllers_lock_leaves_its_wandb_runs_alone(tmp_path: Path) -> None:
    """A second start of a running campaign builds its tracker before the campaign's lock refuses
    it; the tracker's clean-up of torn run folders, run then, removed the run the running
    controller was writing (no data file yet) from under it. Only a controller holding the lock
    cleans up."""
    campaign = tmp_path / "toy"
    writing = campaign / "wandb" / "offline-run-20260101_000000-toy-0-t00000"
    writing.mkdir(parents=True)
    fd = take_lock(campaign)  # the running controller's
    try:
        out = run_campaign(tmp_path, *WANDB_OFFLINE)
    finally:
        os.close(fd)
    assert out.returncode == 2 and "ERROR" in out.stdout + out.stderr, out.stdout + out.stderr
    assert writing.is_dir()


def test_a_start_refused_by_a_running_controllers_lock_builds_nothing_beside_it(tmp_path: Path) -> None:
    """A second start of a running campaign built its fleet and tracker (a W&B thread, its wandb
    folder) before the campaign's lock refused it; it is now refused first, in the lock's line."""
    campaign = tmp_path / "toy"
    campaign.mkdir()
    fd = take_lock(campaign)  # the running controller's, which tracks nothing
    try:
        out = run_campaign(tmp_path, *WANDB_OFFLINE)
    finally:
        os.close(fd)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "ERROR    another controller (pid " in out.stdout, out.stdout + out.stderr
    assert not (campaign / "wandb").exists()


def test_a_test_that_sent_from_its_own_process_leaves_no_wandb_service_to_the_next(tmp_path: Path) -> None:
    """An in-process send starts W&B's service in pytest's process and names it in WANDB_SERVICE,
    which every later test's controller inherited: its runs went through a service another test
    started, holding that test's streams (a run it left unfinished, one of the same id). After each
    test, W&B is torn down (`wandb_given_back`, run by conftest), so the next test's controller
    starts its own, as a user's does."""
    study = tracked_study(tmp_path / "in-process", 1, 3)
    resume_tracking(tmp_path / "in-process", study)
    assert os.environ.get("WANDB_SERVICE")  # (this test's own, so far)
    wandb_given_back()
    assert "WANDB_SERVICE" not in os.environ
    out = run_campaign(tmp_path, *WANDB_OFFLINE, "campaign.budget.max_experiments=1")
    assert out.returncode == 0, out.stdout + out.stderr
    logs = list((tmp_path / "toy" / "wandb").glob("offline-run-*/logs/debug.log"))
    assert logs and not [log for log in logs if "existing wandb-core service" in log.read_text()]
    again = tracked_study(tmp_path / "again", 1, 3)  # and this process starts W&B afresh
    resume_tracking(tmp_path / "again", again)
    assert_one_whole_run_per_experiment(tmp_path / "again", 1, 3)


def sent_from_a_then_b(tmp_path: Path, list_kept_from: str) -> Path:
    """A campaign that sent one experiment from a start in project A, then one from a start in B,
    its config.yaml B's; `projects.txt` kept from A's start, or only from B's (A's sent by a
    version that kept no list)."""
    campaign = tmp_path / "toy"
    study = tracked_study(campaign, 2, 3)
    first = optuna.create_study(study_name="toy")  # (the study as the first start left it)
    first.add_trial(study.trials[0])
    for project, finished_then in (("A", first), ("B", study)):
        tracker = WandbTracker(TrackingConfig(kind="wandb", project=project, mode="offline"), campaign, "toy")
        tracker.update(finished_then)
        tracker.close(None)
        offline_runs(campaign / "wandb")  # (once W&B's service has written them out)
        if project < list_kept_from:
            (campaign / "wandb" / tracking.PLACES_FILE).unlink()
    saved = compose_toy(tmp_path, "tracking=wandb", "tracking.mode=offline", "tracking.project=B")
    (campaign / SAVED_CONFIG).write_text(OmegaConf.to_yaml(saved))
    return campaign


def test_a_second_move_of_the_wandb_project_names_every_project_the_runs_went_to(tmp_path: Path) -> None:
    """Moved from project A to B, then to C, the campaign's runs are in A and B: the warning named
    the last start's project alone ("stay in project 'B'"), counted two projects where there are
    three, and said the last start's setting keeps them in one, though A's runs stay in A."""
    campaign = sent_from_a_then_b(tmp_path, list_kept_from="A")
    place = ("tracking=wandb", "tracking.mode=offline")
    moved = tracking_move(campaign, compose_toy(tmp_path, *place, "tracking.project=C"))
    assert moved == (
        "W&B: tracking.project changed since the last start: the 2 experiment run(s) and the reports "
        "sent before stay where they went, in project 'A' of the login's default entity and project "
        "'B' of the login's default entity, and this start sends the rest, and its report, to project "
        "'C' of the login's default entity: the campaign's runs are split across three projects "
        "(tracking.project=B, where the last start sent them, adds none more)"
    )
    back = tracking_move(campaign, compose_toy(tmp_path, *place, "tracking.project=A"))
    assert (
        back is not None
        and "split across two projects" in back
        and "stay where they went, in project 'A'" in back
    )
    assert back.endswith("(the campaign's runs are split already)")


def test_a_trial_whose_folder_attr_is_no_path_is_left_out_not_the_campaigns_tracking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A trial's exp_dir of another type (a study edited, or written by another version) was read
    outside the check of a trial's records: its TypeError was taken for W&B refusing, and nothing
    more was sent by that controller. The trial is now left out, and the rest sent."""
    campaign = tmp_path / "toy"
    study = optuna.create_study(study_name="toy")
    for exp_dir in ("experiments/00000", 5, "experiments/00002"):
        attrs = {"exp_dir": exp_dir, "status": "discard"}
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=2.0, user_attrs=attrs))
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        resume_tracking(campaign, study)
    assert sorted(offline_runs(campaign / "wandb")) == [run_id("toy", 0.0, f"t{n:05d}") for n in (0, 2)]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("W&B:")]
    assert len(said) == 1 and said[0].startswith("W&B: trial 1 left out: its records do not read"), said


def test_a_second_move_of_a_campaign_begun_before_the_list_of_projects_names_the_first_too(
    tmp_path: Path,
) -> None:
    """A campaign that sent to project A before wandb/projects.txt was kept, then to B (which began
    the list), then moved to C: the warning named B alone ("stay in project 'B'"), and counted two
    projects where there are three. The runs' own files say A, and A is named first."""
    campaign = sent_from_a_then_b(tmp_path, list_kept_from="B")
    assert tracking.places_sent_to(campaign / "wandb") == [tracking.Place("B", None)]
    place = ("tracking=wandb", "tracking.mode=offline")
    moved = tracking_move(campaign, compose_toy(tmp_path, *place, "tracking.project=C"))
    assert moved is not None and moved.endswith(
        "the reports sent before stay where they went, in project 'A' of the login's default entity and "
        "project 'B' of the login's default entity, and this start sends the rest, and its report, to "
        "project 'C' of the login's default entity: the campaign's runs are split across three projects "
        "(tracking.project=B, where the last start sent them, adds none more)"
    )
