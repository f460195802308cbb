"""The campaign's journal storage: a trial's attrs go in one append, in Optuna's own format, and a
finished trial is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError

from autoresearch.journal import JOURNAL_FILE
from autoresearch.status import reading_campaign
from autoresearch.study import StudyUnavailable, load_study, open_study, set_trial_attrs

ATTRS = {"pool": "h100", "gpu_type": "h100", "run_key": "abc123", "launched_at": 1.5, "knobs": '{"LR": 0.02}'}


def counted_appends(study: optuna.Study, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of lines in each append the storage makes from now on (it still writes them)."""
    backend = study._storage._backend
    append = backend.append_logs
    sizes: list[int] = []

    def counting(logs: list[dict]) -> None:
        sizes.append(len(logs))
        append(logs)

    monkeypatch.setattr(backend, "append_logs", counting)
    return sizes


def counted_reads(study: optuna.Study, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per read of the journal file the storage makes from now on."""
    backend = study._storage._backend
    read = backend.read_logs
    reads: list[int] = []

    def counting(log_number_from: int):  # noqa: ANN202 (a generator, as Optuna's)
        reads.append(log_number_from)
        return read(log_number_from)

    monkeypatch.setattr(backend, "read_logs", counting)
    return reads


def test_the_controllers_storage_reads_the_journal_only_after_writing_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = open_study(tmp_path, "journal", None)
    study.enqueue_trial({}, user_attrs={"description": "wider"})
    reader = load_study(tmp_path, "journal", None)  # as `status` opens it, from another process
    reads = counted_reads(study, monkeypatch)
    for _ in range(5):
        assert [t.user_attrs for t in study.get_trials(deepcopy=False)] == [{"description": "wider"}]
        study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(study._study_id, 0))
    assert reads == []  # nothing new in the file: nobody else writes it
    set_trial_attrs(study, 0, ATTRS)
    assert len(reads) == 1 and study.trials[0].user_attrs == {"description": "wider", **ATTRS}
    assert reader.trials[0].user_attrs == study.trials[0].user_attrs  # a reader still sees each write


def test_a_trials_attrs_are_one_append_that_plain_optuna_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = open_study(tmp_path, "journal", None)
    study.enqueue_trial({}, user_attrs={"description": "wider"})
    appends = counted_appends(study, monkeypatch)
    set_trial_attrs(study, 0, ATTRS)
    assert appends == [len(ATTRS)]
    plain = optuna.load_study(
        study_name="journal",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / JOURNAL_FILE))
        ),
    )
    assert plain.trials[0].user_attrs == {"description": "wider", **ATTRS}
    assert study.trials[0].user_attrs == plain.trials[0].user_attrs  # the writer sees its own write


def test_a_finished_trial_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    study = open_study(tmp_path, "journal", None)
    study.tell(study.ask(), 2.5)
    study.enqueue_trial({})
    journal = tmp_path / JOURNAL_FILE
    size = journal.stat().st_size
    with pytest.raises(UpdateFinishedTrialError):
        set_trial_attrs(study, 0, ATTRS)
    assert journal.stat().st_size == size
    set_trial_attrs(study, 1, {"pool": "h200"})  # the storage goes on as before
    resumed = open_study(tmp_path, "journal", None)
    assert "pool" not in resumed.trials[0].user_attrs
    assert resumed.trials[1].user_attrs == {"pool": "h200"}


# A change of another writer, valid after any line: what a controller appends next.
NEXT_LINE = b'{"op_code": 2, "worker_id": "w", "study_id": 0, "user_attr": {"next": 1}}\n'
DAMAGED_LINES = {
    "torn": (b'{"op_code": 8, "worker_id', "does not parse ("),
    "not an object": (b"[8]", "is not a change Optuna knows"),
    "no op code": (b'{"trial_id": 0}', "is not a change Optuna knows"),
    "an unknown op code": (b'{"op_code": 99, "worker_id": "w"}', "is not a change Optuna knows"),
    "a change without its fields": (b'{"op_code": 8, "worker_id": "w"}', "is not a change Optuna knows"),
}


@pytest.mark.parametrize("damage", DAMAGED_LINES)
def test_a_damaged_line_before_the_last_is_one_line_naming_the_journal(tmp_path: Path, damage: str) -> None:
    """A line torn in the middle of the journal (a disk, a hand edit), or valid JSON that is not one
    of Optuna's changes, is not repaired (the change it held is lost): the controller and `status`
    refuse in one line that names the file and the line."""
    study = open_study(tmp_path, "journal", None)
    for description in ("wider", "deeper", "longer"):
        study.enqueue_trial({}, user_attrs={"description": description})
    path = tmp_path / JOURNAL_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    line, why = DAMAGED_LINES[damage]
    path.write_bytes(b"".join([*lines[:2], line + b"\n", *lines[3:]]))
    said = f"cannot read the study journal {path}: its line 3 {why}"
    for opened in (open_study, load_study):
        with pytest.raises(StudyUnavailable) as refused:
            opened(tmp_path, "journal", None)
        assert str(refused.value).startswith(said) and "\n" not in str(refused.value)
        assert str(refused.value).endswith(
            "; put back a copy from before the damage, or start over with a new campaign.name"
        )


def test_a_line_damaged_while_status_reads_ends_it_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status --watch` reads the journal again at every refresh: a line damaged since (and
    followed by others) ends the view in one line, instead of a traceback or, as Optuna's replay
    would at the next read, a view that goes on without that change."""
    campaign = tmp_path / "toy"
    campaign.mkdir()
    (campaign / "config.yaml").write_text("campaign:\n  name: toy\nstorage: null\n")
    study = open_study(campaign, "toy", None)
    study.enqueue_trial({}, user_attrs={"description": "wider"})
    with pytest.raises(SystemExit) as stopped, reading_campaign(campaign) as (watched, _):
        assert [t.user_attrs["description"] for t in watched.trials] == ["wider"]
        with (campaign / JOURNAL_FILE).open("ab") as journal:
            journal.write(b'{"op_code": 8, "worker_id": "w"}\n')
            journal.write(NEXT_LINE)  # (the controller's next line: its storage would stop at the damage)
        watched.get_trials()  # the next refresh
    assert stopped.value.code == 2
    (said,) = capsys.readouterr().err.splitlines()
    assert said.startswith(f"error: cannot read the study journal {campaign / JOURNAL_FILE}: its line ")
    assert " is not a change Optuna knows; put back a copy" in said


@pytest.mark.parametrize("damage", ["torn", "not json"])
def test_a_damaged_last_line_that_ends_with_its_newline_is_refused_too(tmp_path: Path, damage: str) -> None:
    """Optuna's reader passes over a last line that does not parse, as if a writer were still
    writing it: `status` and `report` showed the study without that change, saying nothing (the
    controller was refused only because its open appends a line after it). A line that ends with
    its newline was written whole: it is refused by every reader. (One without its newline is a
    torn write: `recover_journal` drops it.)"""
    study = open_study(tmp_path, "journal", None)
    for description in ("wider", "deeper"):
        study.enqueue_trial({}, user_attrs={"description": description})
    path = tmp_path / JOURNAL_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    last = {"torn": lines[-1][:20], "not json": b"op_code 8"}[damage]
    path.write_bytes(b"".join([*lines[:-1], last + b"\n"]))
    said = f"cannot read the study journal {path}: its line {len(lines)} does not parse ("
    for opened in (load_study, open_study):  # (the reader first: the controller appends a line)
        with pytest.raises(StudyUnavailable) as refused:
            opened(tmp_path, "journal", None)
        assert str(refused.value).startswith(said), str(refused.value)
    path.write_bytes(b"".join([*lines[:-1], last]))  # torn: no newline, as a killed writer leaves it
    assert [t.user_attrs["description"] for t in open_study(tmp_path, "journal", None).trials] == ["wider"]


def test_a_damaged_line_is_refused_at_every_read_not_passed_over_at_the_next(tmp_path: Path) -> None:
    """Optuna counts a line read before it applies it: a reader that went on after the refusal
    (a caller that catches it) read on past the damaged line, without the change it held."""
    from autoresearch.journal import JournalDamaged

    study = open_study(tmp_path, "journal", None)
    study.enqueue_trial({}, user_attrs={"description": "wider"})
    reader = load_study(tmp_path, "journal", None)
    damaged = len((tmp_path / JOURNAL_FILE).read_bytes().splitlines()) + 1
    with (tmp_path / JOURNAL_FILE).open("ab") as journal:
        journal.write(b'{"op_code": 8, "worker_id": "w"}\n' + NEXT_LINE)
    for _ in range(2):
        with pytest.raises(JournalDamaged, match=f"its line {damaged} is not a change Optuna knows"):
            reader.get_trials()


def test_a_start_on_a_study_that_exists_adds_nothing_to_the_journal(tmp_path: Path) -> None:
    """Each start, refused ones included, appended a line to the journal: Optuna's create_study
    with load_if_exists writes its create-study change before it finds the study there. A start
    now loads the study it finds, and the journal holds the one line that made it."""
    open_study(tmp_path, "demo", None).enqueue_trial({})
    made = (tmp_path / JOURNAL_FILE).read_bytes()
    for _ in range(3):
        resumed = open_study(tmp_path, "demo", None)
    assert (tmp_path / JOURNAL_FILE).read_bytes() == made
    assert len(resumed.trials) == 1 and resumed.direction == optuna.study.StudyDirection.MINIMIZE
