"""A campaign on a database: the controller reads its copy of the study, and that copy is the database's."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy
from engine_helpers import (
    REPO,
    campaign_command,
    compose_toy,
    experiment_runs,
    killed_and_resumed,
    run_campaign,
    run_scripted,
    scripted_campaign,
    wait_for,
)
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event

from autoresearch import cli, outage, rdb_cache
from autoresearch.config import campaign_dir_of
from autoresearch.heartbeat import controller_state
from autoresearch.intake import Intake
from autoresearch.ledger import Ledger
from autoresearch.proposals import Candidate, Edit
from autoresearch.runner import OUTCOME_FILE
from autoresearch.status import reading_campaign
from autoresearch.study import (
    StudyTaken,
    StudyUnavailable,
    held_storage,
    load_study,
    open_study,
    set_trial_attrs,
    trials,
)


@contextmanager
def statements(study: optuna.Study) -> Iterator[list[str]]:
    """The SQL statements the study's storage sends to its database while the block runs."""
    storage = study._storage
    engine = getattr(storage, "_backend", storage).engine
    sent: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", note)


class PatienceTime:
    """The clock `outage.Patience` reads, moved on by its pauses (none slept) and by what a try is
    made to take (`spend`), so a test sees its deadline without waiting for it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        self.on_pause: list[Callable[[], object]] = []  # run at each pause (a database coming back)

    def pause(self, seconds: float, stopping: Callable[[], bool]) -> None:
        self.waits.append(seconds)
        self.now += seconds
        for action in self.on_pause:
            action()

    def spend(self, seconds: float) -> None:
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def patience_time(monkeypatch: pytest.MonkeyPatch) -> PatienceTime:
    time = PatienceTime()
    monkeypatch.setattr(outage, "_pause", time.pause)
    monkeypatch.setattr(outage, "_clock", time.clock)
    return time


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or one on the session's PostgreSQL server, reached
    through the libpq settings in the environment (where a user keeps the password too)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'study.db'}"
        return
    with pytest.MonkeyPatch.context() as mp:  # apart from the test's own monkeypatch
        for key, value in request.getfixturevalue("postgres_server").items():
            mp.setenv(key, value)
        name = f"t{uuid.uuid4().hex[:12]}"
        with psycopg.connect(dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        yield f"postgresql+psycopg://postgres@/{name}"


def as_stored(t: FrozenTrial) -> tuple:
    return (
        t.number,
        t.state,
        t.values,
        t.params,
        t.distributions,
        t.user_attrs,
        t.system_attrs,
        t.datetime_start,
        t.datetime_complete,
    )


def test_the_controller_reads_its_study_from_memory_and_writes_it_to_the_database(
    tmp_path: Path, database_url: str
) -> None:
    study = open_study(tmp_path, "c", database_url)
    ledger = Ledger(study, now=lambda: 0.0, after_tell=lambda: None)
    for i in range(6):
        study.enqueue_trial({"LR": 0.01 * (i + 1)}, user_attrs={"kind": "experiment", "i": i})
    first, second, third = trials(study, TrialState.WAITING)[:3]
    assert ledger.claim(first) and ledger.claim(second)
    assert not ledger.claim(first)  # the database refuses a second claim, as before
    knob = optuna.Trial(study, first._trial_id).suggest_float("LR", 0.001, 0.1, log=True)
    ledger.launch(first.number, {"run_key": "v1", "exp_dir": "experiments/00000"})
    ledger.complete(first.number, 1.5, {"val_bpb": 1.5, "status": "discard"})
    ledger.fail(second.number, {"status": "crash", "reason": "NaN"})
    set_trial_attrs(study, third.number, {"note": "queued", "seed": 43})

    with statements(study) as sent:
        for _ in range(3):
            waiting = ledger.waiting()
            everything = ledger.all()
            looked_up = [ledger.trial(n) for n in range(ledger.size())]
    assert sent == []  # without the copy, each read of the study queried its unfinished trials
    assert [t.number for t in waiting] == [2, 3, 4, 5]
    assert ledger.size() == 6 and [t.number for t in looked_up] == list(range(6))
    assert everything[0].params == {"LR": knob} and everything[0].value == 1.5
    assert everything[1].state == TrialState.FAIL and everything[1].user_attrs["reason"] == "NaN"
    assert everything[2].user_attrs == {"kind": "experiment", "i": 2, "note": "queued", "seed": 43}
    assert everything[0].datetime_start is not None and everything[0].datetime_complete is not None

    database = optuna.load_study(study_name="c", storage=database_url).get_trials(deepcopy=False)
    assert [as_stored(t) for t in database] == [as_stored(t) for t in everything]


def test_a_trial_read_before_a_write_keeps_what_it_was(tmp_path: Path) -> None:
    study = open_study(tmp_path, "c", f"sqlite:///{tmp_path / 'study.db'}")
    study.enqueue_trial({}, user_attrs={"kind": "experiment"})
    before = study.trials[0]
    set_trial_attrs(study, 0, {"kind": "stack"})
    assert before.user_attrs["kind"] == "experiment" and study.trials[0].user_attrs["kind"] == "stack"


def test_a_campaign_on_a_database_ends_with_its_copy_equal_to_the_database(
    tmp_path: Path, database_url: str
) -> None:
    changes = [
        Candidate("wider", knobs={"WIDTH": 128}),
        Candidate("worse", knobs={"LR": 0.001}),
        Candidate("broken", edits=[Edit(search="no such line", replace="x")]),
    ]
    campaign = run_scripted(tmp_path, changes, f"storage={database_url}")
    copy = campaign.study.get_trials(deepcopy=False)
    database = optuna.load_study(study_name="toy", storage=database_url).get_trials(deepcopy=False)
    assert [as_stored(t) for t in database] == [as_stored(t) for t in copy]
    statuses = Counter(t.user_attrs.get("status") for t in database)
    assert statuses["baseline"] == 3 and statuses["invalid"] == 1 and statuses["keep"] == 1, statuses


def test_a_controller_killed_on_a_database_resumes_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    campaign = killed_and_resumed(
        tmp_path,
        monkeypatch,
        [Candidate("wider", knobs={"WIDTH": 128})],
        lambda _, attrs: attrs.get("kind") == "validation",
        overrides=(f"storage={database_url}",),
    )
    database = optuna.load_study(study_name="toy", storage=database_url).trials
    assert [t.number for t in database] == list(range(len(database)))
    reruns = [t for t in database if "validates" in t.user_attrs]
    # each queued once, either side; and the new frontier's run at its screening seed
    assert sorted(t.user_attrs["seed"] for t in reruns) == [43, 44, 1042]
    assert all(t.state.is_finished() for t in database)
    assert campaign.study.trials[-1].number == database[-1].number


@contextmanager
def cut_off(database_url: str) -> Iterator[None]:
    """The database refusing the controller while the block runs, as a stopped server or a
    SQLite file another process locked would: SQLite locked by another connection; on PostgreSQL
    the database closed to new connections and its open ones ended."""
    name = sqlalchemy.engine.make_url(database_url).database
    if database_url.startswith("sqlite"):
        locker = sqlite3.connect(name, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            locker.close()
        return
    with psycopg.connect(dbname="postgres", autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        try:
            yield
        finally:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")


def lose_the_database_at_the_first_rerun(monkeypatch: pytest.MonkeyPatch, database_url: str) -> ExitStack:
    """The database cut off (`cut_off`) as a promotion's re-runs are queued, experiments running,
    until the returned stack is closed."""
    queue = Intake.add
    held, cut = ExitStack(), []

    def add_then_lose_the_database(self: Intake, cand: Candidate, attrs: dict) -> None:
        queue(self, cand, attrs)
        if attrs.get("kind") == "validation" and not cut:
            cut.append(held.enter_context(cut_off(database_url)))

    monkeypatch.setattr(Intake, "add", add_then_lose_the_database)
    return held


def test_a_database_lost_mid_campaign_for_longer_than_the_retries_stops_the_controller_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    patience_time: PatienceTime,
) -> None:
    """The database goes away and stays away: the controller tries again for storage_retry_seconds,
    then stops with one line saying so (not a driver traceback), and the same command run once it
    is back finishes the campaign from the experiments' folders, nothing lost."""
    held = lose_the_database_at_the_first_rerun(monkeypatch, database_url)
    overrides = (f"storage={database_url}",)
    dying = scripted_campaign(
        tmp_path, [Candidate("wider", knobs={"WIDTH": 128})], *overrides, "storage_retry_seconds=10"
    )
    with held, pytest.raises(StudyUnavailable) as stopped:
        dying.run()
    assert patience_time.waits == [1, 2, 4, 3]  # doubled each time, and the last cut to the 10 s allowed
    said = [r.getMessage() for r in caplog.records if "storage=" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith(": trying again for up to 10 s"), said
    # (the stop's report, which reads the study, is left to `autoresearch report`: it waited the
    # retries again, then raised the driver's error over the line above)
    assert any("report.html not written: the study's database" in r.getMessage() for r in caplog.records)
    assert (dying.dir / "results.tsv").exists()
    message = str(stopped.value)
    assert re.match(f"^lost the study at storage={re.escape(database_url)}: .+; ", message), message
    assert "\n" not in message
    why = json.loads((dying.dir / "controller.json").read_text())["why"]
    assert why == f"error: {message}"
    monkeypatch.undo()
    campaign = run_scripted(tmp_path, [], *overrides)
    database = optuna.load_study(study_name="toy", storage=database_url).trials
    assert all(t.state.is_finished() for t in database)
    reruns = [t for t in database if "validates" in t.user_attrs]
    assert sorted(t.user_attrs["seed"] for t in reruns) == [43, 44, 1042]
    assert campaign.study.trials[-1].number == database[-1].number


def test_a_database_back_within_the_retries_costs_the_campaign_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    patience_time: PatienceTime,
) -> None:
    """A PostgreSQL restart or a network blip: the controller waits for the database (one line
    when it starts, one when it is back) and the campaign goes on to its end, its copy equal to
    the database, nothing queued twice."""
    held = lose_the_database_at_the_first_rerun(monkeypatch, database_url)
    patience_time.on_pause.append(held.close)
    campaign = run_scripted(tmp_path, [Candidate("wider", knobs={"WIDTH": 128})], f"storage={database_url}")
    assert patience_time.waits == [1]
    said = [r.getMessage() for r in caplog.records if "storage=" in r.getMessage()]
    assert len(said) == 2 and said[0].endswith(": trying again for up to 300 s"), said
    assert said[1] == f"the study's database at storage={database_url} is back after 1 s"
    database = optuna.load_study(study_name="toy", storage=database_url).get_trials(deepcopy=False)
    assert [as_stored(t) for t in database] == [
        as_stored(t) for t in campaign.study.get_trials(deepcopy=False)
    ]
    assert all(t.state.is_finished() for t in database)
    reruns = [t for t in database if "validates" in t.user_attrs]
    assert sorted(t.user_attrs["seed"] for t in reruns) == [43, 44, 1042]


RETRY_SECONDS = 600  # the wait a stop must cut short: far beyond what a stop is given below


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_the_database_is_gone_ends_the_wait_and_a_resume_collects_what_ended(
    tmp_path: Path, database_url: str, signum: signal.Signals
) -> None:
    """Slurm's TERM (preemption, scancel) or a Ctrl-C while the controller waits for its database:
    it stops as at any stop (one line, exit 3, no traceback), not once the database is back or
    `storage_retry_seconds` have run out (5 minutes by default: past Slurm's KillWait, which then
    SIGKILLs it). The experiments that ended meanwhile, their results never written, are collected
    by the same command run once the database is back, none run twice."""
    campaign, run_log, said = tmp_path / "toy", tmp_path / "runs.log", tmp_path / "controller.out"
    hold = tmp_path / "hold"  # the first experiments end only once the database is gone
    hold.touch()
    env = {**os.environ, "TOY_RUN_LOG": str(run_log), "TOY_HOLD": str(hold)}
    overrides = (f"storage={database_url}", f"storage_retry_seconds={RETRY_SECONDS}")
    with said.open("w") as out:
        controller = subprocess.Popen(
            campaign_command(tmp_path, *overrides), cwd=REPO, env=env, stdout=out, stderr=out
        )
    try:
        wait_for(lambda: len(list(campaign.glob("experiments/*/runner.pid"))) == 2, 60, "both slots to run")
        with cut_off(database_url):
            held = sorted(p.parent for p in campaign.glob("experiments/*/runner.pid"))
            hold.unlink()
            wait_for(lambda: all((d / OUTCOME_FILE).exists() for d in held), 60, "the runs to end")
            wait_for(lambda: "): trying again for up to" in said.read_text(), 60, "the controller to wait")
            controller.send_signal(signum)
            wait_for(lambda: controller.poll() is not None, RETRY_SECONDS / 5, "the controller to stop")
    finally:
        if controller.poll() is None:
            controller.kill()
            controller.wait()
    out = said.read_text()
    assert controller.returncode == 3, out
    stopped = [line for line in out.splitlines() if "stopped while the study's database" in line]
    assert len(stopped) == 1, out
    assert f"at storage={database_url} could not be reached (" in stopped[0]
    assert stopped[0].endswith("run the same command again once the database is back"), stopped[0]
    assert "Traceback" not in out and "ERROR" not in out, out
    state = controller_state(campaign)
    assert (
        state is not None and "stopped by the user while the study's database could not be reached" in state
    )

    def by_experiment() -> dict[str, FrozenTrial]:
        stored = optuna.load_study(study_name="toy", storage=database_url).trials
        return {t.user_attrs["exp_dir"]: t for t in stored if "exp_dir" in t.user_attrs}

    unwritten = {str(d.relative_to(campaign)) for d in held}
    before = by_experiment()
    assert all(before[exp].state == TrialState.RUNNING for exp in unwritten)  # their results not written
    resumed = run_campaign(tmp_path, *overrides, env=env)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    after = by_experiment()
    for exp in unwritten:
        ran = json.loads((campaign / exp / OUTCOME_FILE).read_text())["metrics"]["val_bpb"]
        assert after[exp].state == TrialState.COMPLETE and after[exp].user_attrs["val_bpb"] == ran, exp
    assert not [t for t in after.values() if t.state == TrialState.RUNNING]
    runs = experiment_runs(run_log)
    assert max(runs.values()) == 1, runs  # nothing ran twice


def test_a_stop_during_a_write_lets_the_write_finish(tmp_path: Path, database_url: str) -> None:
    """A signal that asks for a stop while a write is on its way to a healthy database: the write
    goes through and is kept, the stop is the loop's to take (only a wait for a database gone is cut short)."""
    stop = []
    study = open_study(tmp_path, "c", database_url, retry_seconds=60, stopping=lambda: bool(stop))
    study.enqueue_trial({}, user_attrs={"kind": "experiment"})
    engine = study._storage._backend.engine

    def stop_as_it_is_sent(*_: object) -> None:
        stop.append(True)

    event.listen(engine, "before_cursor_execute", stop_as_it_is_sent)
    set_trial_attrs(study, 0, {"note": "written"})
    event.remove(engine, "before_cursor_execute", stop_as_it_is_sent)
    assert stop  # asked for during the write
    database = optuna.load_study(study_name="c", storage=database_url).trials
    assert database[0].user_attrs["note"] == "written" == study.trials[0].user_attrs["note"]


def test_a_sqlite_file_another_process_locks_holds_a_statement_of_the_controller_a_second_at_most(
    tmp_path: Path,
) -> None:
    """A SQLite study locked by another process (a user's `sqlite3 study.db` shell in a write
    transaction) held each of the controller's statements in the driver's 5 s wait, in C, where a
    Ctrl-C is not heard: the stop came 5 s late and said nothing meanwhile (6.8 s against 3.1 s
    unlocked, measured). A statement now gives the lock up after a second, and `Patience`, which
    says what it waits for and hears a stop between its tries, waits on."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(tmp_path, "c", url)
    with study._storage._backend.engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("PRAGMA busy_timeout")).scalar() == 1000  # milliseconds
    with cut_off(url), pytest.raises(optuna.exceptions.StorageInternalError) as locked:
        study.enqueue_trial({})  # (no retries: storage_retry_seconds 0)
    assert outage.first_line(locked.value) == "database is locked"
    study.enqueue_trial({})  # the lock given back: written
    assert [t.state for t in optuna.load_study(study_name="c", storage=url).trials] == [TrialState.WAITING]


def test_a_reader_of_a_sqlite_study_waits_a_second_at_most_for_its_lock_at_each_try(tmp_path: Path) -> None:
    """The start, `check`, `status` and `report` read a SQLite study through engines of the
    driver's own 5 s wait for a lock: each try past the last could run 5 s over
    storage_retry_seconds (a check given 60 s was refused after 77.6 s). Every connection a reader
    opens now waits a second, as the controller's do."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="toy", storage=url)
    waits: list[int] = []

    def note_busy_timeout(connection: sqlite3.Connection, record: object) -> None:
        waits.append(connection.execute("PRAGMA busy_timeout").fetchone()[0])

    event.listen(sqlalchemy.engine.Engine, "connect", note_busy_timeout)
    try:
        study = load_study(tmp_path, "toy", url, retry_seconds=60)
        assert study.trials == []
    finally:
        event.remove(sqlalchemy.engine.Engine, "connect", note_busy_timeout)
    assert len(waits) >= 2 and set(waits) == {1000}, waits  # milliseconds


SQLITE_BUSY_SECONDS = 5.0  # what a try on a locked SQLite file waits before "database is locked"


def test_the_retry_limit_counts_the_time_spent_trying_not_only_the_pauses(
    tmp_path: Path, patience_time: PatienceTime, caplog: pytest.LogCaptureFixture
) -> None:
    """The retry limit is a deadline: a try that itself takes long (SQLite's busy
    timeout on a locked file, a connect to a host that drops packets) is counted, else a 10 s limit
    on tries of 5 s each ran 35 s; counted from the first try's end, 18 s. The file is really locked; each try is charged the 5 s the
    driver would have waited for the lock."""
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    engine = sqlalchemy.create_engine(url, connect_args={"timeout": 0})
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE notes (text TEXT)"))

    def write_a_note() -> None:
        patience_time.spend(SQLITE_BUSY_SECONDS)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("INSERT INTO notes VALUES ('x')"))

    with cut_off(url), pytest.raises(sqlalchemy.exc.OperationalError, match="database is locked"):
        outage.Patience(url, seconds=10).run(write_a_note)
    assert patience_time.waits == [1]  # lost at 5 s; tried at 6 s: past the deadline, 10 s from the first try
    assert patience_time.now == 11
    said = "trying again for up to 5 s more (the first try took 5 s of the 10 s allowed)"
    assert caplog.messages[0].endswith(f"(database is locked): {said}"), caplog.messages
    patience_time.now, patience_time.waits = 0.0, []
    held = ExitStack()
    held.enter_context(cut_off(url))
    patience_time.on_pause.append(held.close)  # unlocked at the first pause
    outage.Patience(url, seconds=10).run(write_a_note)
    assert patience_time.waits == [1]
    assert caplog.messages[-1] == f"the study's database at storage={url} is back after 6 s"
    engine.dispose()


def test_a_first_try_longer_than_the_retry_limit_is_still_tried_once_more(
    tmp_path: Path, patience_time: PatienceTime, caplog: pytest.LogCaptureFixture
) -> None:
    """The deadline counts from the first try's start, so a first try that outlasts the limit
    itself (a connect to a host that drops packets, past the OS's SYN retries) leaves none of it:
    it is tried once more even so, at once, not given up on without a second try. The line said
    'trying again for up to 10 s' all the same; it says it tries once more, and why."""
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    engine = sqlalchemy.create_engine(url, connect_args={"timeout": 0})
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE notes (text TEXT)"))
    tries: list[float] = []

    def write_a_note() -> None:
        tries.append(patience_time.now)
        patience_time.spend(30)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("INSERT INTO notes VALUES ('x')"))

    with cut_off(url), pytest.raises(sqlalchemy.exc.OperationalError, match="database is locked"):
        outage.Patience(url, seconds=10).run(write_a_note)
    assert (tries, patience_time.waits) == ([0, 30], [0])
    said = "trying once more (the first try took 30 s of the 10 s allowed)"
    assert caplog.messages[0].endswith(f"(database is locked): {said}"), caplog.messages
    engine.dispose()


def test_a_write_whose_answer_was_lost_is_not_made_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, patience_time: PatienceTime
) -> None:
    """A connection that drops as a commit goes through leaves the write in the database, its
    answer lost: a new trial or a state change tried again would be made twice (a second trial;
    a claim refused as taken, a finish refused as finished). Each is looked for first."""
    study = open_study(tmp_path, "c", database_url, retry_seconds=60)
    ledger = Ledger(study, now=lambda: 0.0, after_tell=lambda: None)

    dialect = study._storage._backend.engine.dialect
    commit, lose = dialect.do_commit, []

    def commit_then_lose_the_answer(connection: object) -> None:
        commit(connection)
        if lose and lose.pop():
            raise dialect.loaded_dbapi.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(dialect, "do_commit", commit_then_lose_the_answer)
    lose.append(True)
    study.enqueue_trial({}, user_attrs={"kind": "experiment"})
    lose.append(True)
    assert ledger.claim(study.trials[0])
    lose.append(True)
    ledger.complete(0, 1.5, {"val_bpb": 1.5})
    assert lose == []  # each write's answer was lost
    database = optuna.load_study(study_name="c", storage=database_url).get_trials(deepcopy=False)
    assert [(t.number, t.state, t.value) for t in database] == [(0, TrialState.COMPLETE, 1.5)]
    assert [as_stored(t) for t in database] == [as_stored(t) for t in study.get_trials(deepcopy=False)]


def test_a_sqlite_file_without_the_study_tables_is_not_taken_for_the_database_lost(
    tmp_path: Path, patience_time: PatienceTime
) -> None:
    """The study's SQLite file replaced under the controller (by another program's, or an empty
    one): its own line, at once, not "lost, run again once it is back", which it never will be."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(tmp_path, "c", url, retry_seconds=60)
    with sqlite3.connect(tmp_path / "study.db") as other:
        tables = [name for (name,) in other.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            other.execute(f"DROP TABLE {table}")
        other.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(StudyUnavailable) as stopped, held_storage(url):
        study.enqueue_trial({}, user_attrs={"kind": "experiment"})
    assert str(stopped.value).startswith(
        f"the database at storage={url} lacks the study's tables (no such table: "
    ), stopped.value
    assert "not an Optuna study, or was replaced while the controller ran" in str(stopped.value)
    assert patience_time.waits == []  # not waited for


def test_a_statement_the_database_refuses_is_not_taken_for_the_database_lost(
    tmp_path: Path, database_url: str
) -> None:
    """Only the database failing (gone, locked) is 'lost, run again once it is back': a statement it
    refuses (a row that breaks a constraint, as a bug of ours would write) fails the same on every
    run, so it stays itself, traceback and all, instead of a line that sends the user to wait."""
    engine = sqlalchemy.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE once (id INTEGER PRIMARY KEY)"))
        conn.execute(sqlalchemy.text("INSERT INTO once VALUES (1)"))
    with pytest.raises(sqlalchemy.exc.IntegrityError), held_storage(database_url), engine.begin() as conn:
        conn.execute(sqlalchemy.text("INSERT INTO once VALUES (1)"))
    engine.dispose()


def test_a_database_lost_while_status_reads_ends_it_in_one_line(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str], patience_time: PatienceTime
) -> None:
    """`status --watch` reads the database again at every refresh: one gone since, for longer
    than the campaign's storage_retry_seconds, ends the view in one line (exit 2), as one gone
    before it started does, not a driver traceback."""
    campaign = tmp_path / "toy"
    campaign.mkdir()
    (campaign / "config.yaml").write_text(
        f"campaign:\n  name: toy\nstorage: {database_url}\nstorage_retry_seconds: 3\n"
    )
    open_study(campaign, "toy", database_url).enqueue_trial({}, user_attrs={"description": "wider"})
    with pytest.raises(SystemExit) as stopped, reading_campaign(campaign) as (watched, _):
        assert [t.user_attrs["description"] for t in watched.trials] == ["wider"]
        with cut_off(database_url):
            watched.get_trials()  # the next refresh
    assert stopped.value.code == 2
    assert patience_time.waits == [1, 2]  # the refresh tried again for the 3 s allowed
    waiting, said = capsys.readouterr().err.splitlines()
    assert waiting.endswith("): trying again for up to 3 s"), waiting
    assert said.startswith(f"error: cannot open the study at storage={database_url}: "), said


def saved_campaign(tmp_path: Path, database_url: str, retry_seconds: float) -> Path:
    """A campaign folder as its controller leaves it (config.yaml, a study with a queued trial)."""
    cfg = compose_toy(tmp_path, f"storage={database_url}", f"storage_retry_seconds={retry_seconds:g}")
    campaign = campaign_dir_of(cfg)
    campaign.mkdir(parents=True)
    (campaign / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    open_study(campaign, "toy", database_url).enqueue_trial({}, user_attrs={"description": "wider"})
    return campaign


def run_tool(monkeypatch: pytest.MonkeyPatch, tool: str, campaign: Path, *args: str) -> int:
    """`autoresearch TOOL CAMPAIGN ARGS...` in this process; its exit status."""
    monkeypatch.setattr(sys, "argv", ["autoresearch", tool, str(campaign), *args])
    try:
        assert cli.run_tool()
    except SystemExit as stopped:
        return int(stopped.code or 0)
    return 0


@pytest.mark.parametrize("tool", ["status", "report"])
def test_status_and_report_wait_for_a_database_back_within_the_campaigns_retries(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    patience_time: PatienceTime,
    capsys: pytest.CaptureFixture[str],
    tool: str,
) -> None:
    """A PostgreSQL restart (or a SQLite file locked a moment) as `status` or `report` starts: it
    waits as the controller would, with the campaign's storage_retry_seconds, one line on stderr
    as the wait begins and one when the database is back, and does its work."""
    campaign = saved_campaign(tmp_path, database_url, retry_seconds=10)
    held = ExitStack()
    held.enter_context(cut_off(database_url))
    patience_time.on_pause.append(held.close)  # back at the first pause
    with held:
        assert run_tool(monkeypatch, tool, campaign) == 0
    assert patience_time.waits == [1]
    out, err = capsys.readouterr()
    waiting, back = err.splitlines()
    lost = (  # a SQLite file locked by another process is there and whole: not "lost"
        f"the study's database at storage={database_url} is locked by another process ("
        if database_url.startswith("sqlite")
        else f"lost the study's database at storage={database_url} ("
    )
    assert waiting.startswith(lost), err
    assert waiting.endswith("): trying again for up to 10 s"), err
    assert back == f"the study's database at storage={database_url} is back after 1 s"
    if tool == "status":
        assert "1 queued" in out and "campaign      toy" in out, out
    else:
        path, *headline = out.splitlines()  # the page's path, then its cost and speed-up
        assert path == str(campaign / "report.html") and headline, out
        assert "toy" in (campaign / "report.html").read_text()


@pytest.mark.parametrize("tool", ["status", "report"])
def test_status_and_report_end_in_one_line_when_the_database_stays_gone(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    patience_time: PatienceTime,
    capsys: pytest.CaptureFixture[str],
    tool: str,
) -> None:
    """The database gone for longer than the campaign's storage_retry_seconds: the tool tries again
    that long, then ends with one error line (exit 2), not a driver traceback."""
    campaign = saved_campaign(tmp_path, database_url, retry_seconds=1)
    with cut_off(database_url):
        assert run_tool(monkeypatch, tool, campaign) == 2
    assert patience_time.waits == [1]  # tried again once, at the 1 s allowed
    out, err = capsys.readouterr()
    waiting, said = err.splitlines()
    assert waiting.endswith("): trying again for up to 1 s"), err
    assert said.startswith(f"error: cannot open the study at storage={database_url}: "), said
    assert out == ""
    assert not (campaign / "report.html").exists()


def test_attrs_set_on_a_finished_trial_are_refused_whole(tmp_path: Path, database_url: str) -> None:
    study = open_study(tmp_path, "c", database_url)
    study.enqueue_trial({}, user_attrs={"kind": "experiment"})
    ledger = Ledger(study, now=lambda: 0.0, after_tell=lambda: None)
    assert ledger.claim(study.trials[0])
    ledger.complete(0, 1.0, {"val_bpb": 1.0})
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_trial_attrs(study, 0, {"status": "keep", "reason": "late"})
    stored = optuna.load_study(study_name="c", storage=database_url).trials[0]
    assert stored.user_attrs == study.trials[0].user_attrs == {"kind": "experiment", "val_bpb": 1.0}


@pytest.mark.parametrize("one_statement", [True, False])
def test_a_trials_attrs_are_one_read_and_one_upsert_else_optunas_way_one_by_one(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, one_statement: bool
) -> None:
    if not one_statement:
        monkeypatch.setattr(rdb_cache, "_insert", lambda dialect: None)  # as on MySQL
    study = open_study(tmp_path, "c", database_url)
    with statements(study) as sent:  # a queued candidate: the trial and its attrs in one transaction
        study.enqueue_trial({}, user_attrs={"kind": "experiment", "seed": 42, "tier": "screen"})
    on_attrs = [x for x in sent if "trial_user_attributes" in x]
    if one_statement:
        assert len(on_attrs) == 1 and on_attrs[0].startswith("INSERT"), sent
    else:
        assert len(on_attrs) >= 3, sent  # at least a write per attr
    stored = optuna.load_study(study_name="c", storage=database_url).trials[0]
    assert as_stored(stored) == as_stored(study.trials[0])
    with statements(study) as sent:
        set_trial_attrs(study, 0, {"kind": "stack", "seed": 43, "tier": "screen"})
    if one_statement:
        assert len(sent) == 2 and sent[1].startswith("INSERT"), sent  # the trial's state, then the rows
    else:
        assert len(sent) >= 6, sent  # a read and a write per attr
    stored = optuna.load_study(study_name="c", storage=database_url).trials[0]
    assert stored.user_attrs == study.trials[0].user_attrs == {"kind": "stack", "seed": 43, "tier": "screen"}


def test_a_reader_creates_no_database_where_no_campaign_put_a_study(
    tmp_path: Path, database_url: str
) -> None:
    """`status` and `report` read: one pointed at a database with no study yet (a mistyped name, a
    campaign not started) is told so, and leaves neither a SQLite file nor Optuna's tables."""
    with pytest.raises(StudyUnavailable, match=f"^no study 'c' yet in {re.escape(database_url)}$"):
        load_study(tmp_path, "c", database_url)
    assert not (tmp_path / "study.db").exists()
    if database_url.startswith("postgresql"):
        engine = sqlalchemy.create_engine(database_url)
        assert sqlalchemy.inspect(engine).get_table_names() == []
        engine.dispose()
    open_study(tmp_path, "other", database_url)
    with pytest.raises(StudyUnavailable, match="^no study 'c' yet in "):  # tables, but not this study
        load_study(tmp_path, "c", database_url)
    assert load_study(tmp_path, "other", database_url).study_name == "other"


def test_a_database_study_belongs_to_the_campaign_folder_that_started_it(
    tmp_path: Path, database_url: str
) -> None:
    """The database keys a study by campaign.name alone: a folder of the same name elsewhere (another
    runs_dir) is refused in one line instead of adopting trials whose files it lacks."""
    first, second = tmp_path / "a" / "c", tmp_path / "b" / "c"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    open_study(first, "c", database_url).enqueue_trial({}, user_attrs={"edit": "proposals/t00000.json"})
    taken = f"^storage={re.escape(database_url)} holds a study 'c' started by another campaign folder than {second}: "
    with pytest.raises(StudyTaken, match=taken):
        open_study(second, "c", database_url)
    assert list(second.iterdir()) == []
    (second / "study.id").write_text("another folder's id\n")
    with pytest.raises(StudyTaken, match=taken):
        open_study(second, "c", database_url)
    assert len(open_study(first, "c", database_url).trials) == 1  # its own folder resumes it


def test_a_copied_campaign_folder_that_runs_takes_the_study_from_the_one_it_copied(
    tmp_path: Path, database_url: str
) -> None:
    """A copy carries the folder's id, so it may resume the study (a folder moved is one copied,
    then deleted); once it has, the folder it was copied from lacks that run's proposals,
    experiments and kept changes, and is refused the study as another folder is."""
    original, copy = tmp_path / "a" / "c", tmp_path / "b" / "c"
    original.mkdir(parents=True)
    open_study(original, "c", database_url).enqueue_trial({}, user_attrs={"edit": "proposals/t00000.json"})
    shutil.copytree(original, copy)
    assert len(open_study(copy, "c", database_url).trials) == 1
    with pytest.raises(StudyTaken, match=f"started by another campaign folder than {original}: "):
        open_study(original, "c", database_url)
    assert len(open_study(copy, "c", database_url).trials) == 1  # and the copy goes on


def test_a_campaign_folder_whose_study_the_database_lost_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    """The study deleted, or the URL now reaching another database (recreated, restored from an
    older dump): the folder that ran it is told so in one line, instead of going on in a new study
    from a frontier whose trials it lacks."""
    ran = tmp_path / "c"
    ran.mkdir()
    open_study(ran, "c", database_url).enqueue_trial({}, user_attrs={"edit": "proposals/t00000.json"})
    (ran / "config.yaml").write_text("campaign:\n  name: c\n")  # as the controller's start writes it
    optuna.delete_study(study_name="c", storage=database_url)
    lost = (
        f"^storage={re.escape(database_url)} holds no study 'c' of the campaign {ran}, which ran one there: "
    )
    with pytest.raises(StudyUnavailable, match=lost):
        open_study(ran, "c", database_url)
    with pytest.raises(StudyUnavailable, match=lost):  # and again: the empty study it made adopts nothing
        open_study(ran, "c", database_url)


def test_a_database_study_begun_before_studies_had_ids_stays_with_the_folder_that_ran_it(
    tmp_path: Path, database_url: str
) -> None:
    ran, other = tmp_path / "a" / "c", tmp_path / "b" / "c"
    ran.mkdir(parents=True)
    other.mkdir(parents=True)
    optuna.create_study(study_name="c", storage=database_url).enqueue_trial({})  # as before the ids
    (ran / "config.yaml").write_text("campaign:\n  name: c\n")
    with pytest.raises(StudyTaken):
        open_study(other, "c", database_url)
    assert len(open_study(ran, "c", database_url).trials) == 1
    with pytest.raises(StudyTaken):  # claimed now, by the folder that ran it
        open_study(other, "c", database_url)


def test_a_reader_of_the_study_writes_nothing_to_it() -> None:
    """status and report read through PatientReader, which repeats a read through a blip; a write
    repeated so could land twice, and a reader has none to make: each is refused, the study as it was."""
    from autoresearch.patient_reader import PatientReader

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="toy")
    study.enqueue_trial({}, user_attrs={"description": "wider"})
    trial_id = study.trials[0]._trial_id
    reader = optuna.load_study(study_name="toy", storage=PatientReader(storage, outage.Patience("memory", 5)))
    assert [t.user_attrs["description"] for t in reader.trials] == ["wider"]
    writes: list[Callable[[], object]] = [
        lambda: reader.set_user_attr("note", 1),
        lambda: reader.enqueue_trial({}),
        lambda: reader._storage.set_trial_user_attr(trial_id, "note", 1),
        lambda: reader._storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0]),
        lambda: reader._storage.delete_study(reader._study_id),
    ]
    for write in writes:
        with pytest.raises(RuntimeError, match="a reader of the study"):
            write()
    assert study.user_attrs == {} and len(study.trials) == 1
    assert (
        study.trials[0].user_attrs == {"description": "wider"} and study.trials[0].state == TrialState.WAITING
    )


def test_a_password_in_a_storage_url_reaches_no_message_nor_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The start refuses a URL with a password, but status, report and the library's readers take
    the URL as given: their errors and the outage's log lines said it whole, password and all, to a
    terminal, controller.log or a Slurm job's output file. They say it masked."""
    url = "postgresql://me:s3cret@127.0.0.1:1/runs"  # (port 1: refused at once)
    with pytest.raises(StudyUnavailable) as refused:
        load_study(tmp_path, "toy", url)
    assert "s3cret" not in str(refused.value) and "me:***@127.0.0.1:1" in str(refused.value), refused.value
    failures = iter([sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))])

    def operation() -> str:
        if (failure := next(failures, None)) is not None:
            raise failure
        return "done"

    monkeypatch.setattr(outage, "_pause", lambda seconds, stopping: None)
    with caplog.at_level("WARNING", logger="autoresearch"):
        assert outage.Patience(url, seconds=60).run(operation) == "done"
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and all("me:***@" in line and "s3cret" not in line for line in said), said
