"""The intake and the ledger on a real journal study: the engine's own runs are queued once,
whichever controller asks and however often, and a proposal that cannot run costs no slot."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_helpers import INTAKE_NOW, open_intake
from optuna.trial import TrialState

from autoresearch.campaign import Campaign
from autoresearch.intake import BASE_SEED, MAX_STACK_DEPTH, Intake
from autoresearch.proposals import Candidate, Edit, Grid, Wave
from autoresearch.workspace import OVERWRITTEN_EDITS


def claimed_and_failed(intake: Intake, number: int, **attrs: object) -> None:
    trial = intake.ledger.trial(number)
    assert intake.ledger.claim(trial)
    intake.ledger.fail(number, {"status": "lost", **attrs})


def test_baselines_and_re_runs_are_queued_by_tier_and_seed_once(tmp_path: Path) -> None:
    intake = open_intake(tmp_path)
    intake.baselines("screen")
    assert intake.reruns(0, "screen", 2, "a change") is True
    assert intake.reruns(0, "screen", 2, "a change") is False  # all there: nothing more
    resumed = open_intake(tmp_path)  # a new controller on the same study
    resumed.baselines("screen")
    assert resumed.reruns(0, "screen", 2, "a change") is False
    assert resumed.reruns(0, "screen", 3, "a change") is True  # a third seed is new
    queued = resumed.ledger.all()
    baselines = sorted(t.user_attrs["seed"] for t in queued if t.user_attrs["kind"] == "baseline")
    reruns = sorted(t.user_attrs["seed"] for t in resumed.ledger.queued_for("validates", 0))
    # The toy campaign's baseline_seeds and validate_seeds are 2: the baselines ran the seeds the
    # re-runs run (never the screening seed), so a change and its frontier compare seed for seed;
    # and the seed the changes to the starting train.py are screened with, for them to compare with.
    assert baselines == [BASE_SEED, BASE_SEED + 1, BASE_SEED + 2]
    assert reruns == [BASE_SEED + 1, BASE_SEED + 2, BASE_SEED + 3]
    assert all(t.state == TrialState.WAITING for t in queued) and len(queued) == 6


def test_the_tier_that_confirms_has_a_baseline_run_at_each_re_run_seed(tmp_path: Path) -> None:
    def baselines(confirm_on: str | None, name: str) -> list[tuple[str, int]]:
        intake = open_intake(tmp_path / name, "campaign.baseline_seeds=2", "campaign.validate_seeds=3")
        intake.baselines(confirm_on)
        return sorted((t.user_attrs["tier"], t.user_attrs["seed"]) for t in intake.ledger.all())

    # Confirmed on the screen tier: 3 baselines there, for the 3 re-runs (baseline_seeds is 2), and
    # one at the screening seed, on the screen tier whatever confirms.
    assert baselines("screen", "a") == [("screen", 42), ("screen", 43), ("screen", 44), ("screen", 45)]
    # On a validate tier of its own: 3 there; the screen tier keeps its 2.
    assert baselines("validate", "b") == [("screen", 42), ("screen", 43), ("screen", 44)] + [
        ("validate", s) for s in (43, 44, 45)
    ]
    # nothing confirmed: baseline_seeds
    assert baselines(None, "c") == [("screen", 42), ("screen", 43), ("screen", 44)]


def test_a_campaign_begun_on_the_old_baseline_seeds_runs_the_one_it_lacks(tmp_path: Path) -> None:
    intake = open_intake(tmp_path)
    for seed in (BASE_SEED, BASE_SEED + 1):  # the baselines as queued before runs were paired
        intake.add(Candidate("baseline", "measured again, unchanged"), {"kind": "baseline", "seed": seed})
    open_intake(tmp_path).baselines("screen")  # resumed
    seeds = sorted(t.user_attrs["seed"] for t in open_intake(tmp_path).ledger.all())
    assert seeds == [BASE_SEED, BASE_SEED + 1, BASE_SEED + 2]  # 43 is there; 44 was not


def test_a_resumed_campaign_asked_for_more_baselines_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An old campaign resumed after its file (or the command line) raised baseline_seeds runs the
    extra baselines before any change: the log says why, once; a cancelled one queued again is no news."""

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "more baseline run" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="autoresearch"):
        first = open_intake(tmp_path)  # baseline_seeds=2
        first.baselines(None)
        claimed_and_failed(first, 0, status="cancelled")
        first.baselines(None)  # the cancelled one queued again
        open_intake(tmp_path).baselines(None)  # resumed as it was
        assert said() == []
        raised = open_intake(tmp_path, "campaign.baseline_seeds=4")
        raised.baselines(None)
        raised.baselines(None)  # (as when a baseline is cancelled)
        open_intake(tmp_path, "campaign.baseline_seeds=4").baselines(None)  # resumed again
    assert said() == [
        "campaign.baseline_seeds=4 asks for 2 more baseline run(s) on the screen tier than this "
        "campaign had: queued, they run before new changes"
    ]
    seeds = sorted(t.user_attrs["seed"] for t in raised.ledger.waiting())
    assert seeds == [BASE_SEED, BASE_SEED + 1, BASE_SEED + 2, BASE_SEED + 3, BASE_SEED + 4]


def test_each_queued_candidate_file_is_named_by_its_trials_number(tmp_path: Path) -> None:
    intake = open_intake(tmp_path)
    study = intake.ledger.study
    for i in range(2):
        intake.add(Candidate(f"lr {i}", knobs={"LR": 0.01 * (i + 1)}), {"kind": "experiment"})
        study._storage.create_new_trial(study._study_id)  # an exploration, named by nothing
    resumed = open_intake(tmp_path)  # a new controller counts the trials there are
    resumed.add(Candidate("wider", knobs={"WIDTH": 128}), {"kind": "experiment"})
    queued = [t for t in resumed.ledger.all() if "edit" in t.user_attrs]
    assert [t.user_attrs["edit"] for t in queued] == [f"proposals/t{n:05d}-screen.json" for n in (0, 2, 4)]
    assert [resumed.load_candidate(t.user_attrs).description for t in queued] == ["lr 0", "lr 1", "wider"]


def test_a_controller_killed_while_writing_a_proposal_file_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proposal file is written whole or not at all: a torn one would leave a trial that can
    neither run nor be retried. (Killed before its trial is queued, the candidate is lost with it.)"""
    intake = open_intake(tmp_path)

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        intake.add(Candidate("wider", knobs={"WIDTH": 128}), {"kind": "experiment"})
    assert not (intake.campaign_dir / "proposals" / "t00000-screen.json").exists()
    assert intake.ledger.all() == []


@pytest.mark.parametrize(
    ("candidate", "said", "kept"),
    [
        (  # a model that wrote train.py into the edit's path
            Candidate(
                "wider", edits=[Edit("WIDTH = 64", "WIDTH = 96", path="train.py\n" + "x = 1\n" * 3000)]
            ),
            "edits may only change train.py; refused an edit to 'train.py\\nx = 1\\nx = 1",
            lambda c: c.edits[0].path,
        ),
        (  # a declared knob's value the length of a file
            Candidate("lr as text", knobs={"LR": "0.01 " * 3000}),
            "knob LR: '0.01 0.01 0.01",
            lambda c: c.knobs["LR"],
        ),
        (  # the same for a constant of train.py that no knob declares
            Candidate("seconds as text", knobs={"SECONDS": "0.2 " * 3000}),
            "knob SECONDS: '0.2 0.2 0.2",
            lambda c: c.knobs["SECONDS"],
        ),
    ],
)
def test_a_refused_proposal_is_said_in_a_short_line_and_kept_whole_in_its_file(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    candidate: Candidate,
    said: str,
    kept: Callable[[Candidate], object],
) -> None:
    """The reason quoted what the proposer wrote whole: one warning line of 15,000 characters in
    controller.log, and the same in results.tsv's reason, W&B and the next prompt. It now quotes
    its start, says how long it was, and the candidate is kept whole in proposals/, where its
    trial's `edit` points, as a queued one is."""
    intake = open_intake(tmp_path)
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        intake.wave(Wave(rationale="", candidates=[candidate], source="test"))
    (trial,) = intake.ledger.all()
    reason = trial.user_attrs["reason"]
    assert trial.state == TrialState.FAIL and reason.startswith(said) and "characters)" in reason
    (line,) = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(line) < 300 and "\n" not in line and "proposals/t00000-screen.json" in line
    assert trial.user_attrs["edit"] == "proposals/t00000-screen.json"
    assert kept(intake.load_candidate(trial.user_attrs)) == kept(candidate)  # nothing lost


def test_a_lost_run_is_retried_once_as_it_was(tmp_path: Path) -> None:
    intake = open_intake(tmp_path)
    intake.add(
        Candidate("wider", "more width", knobs={"WIDTH": 128}), {"kind": "experiment", "seed": 7, "wave": 3}
    )
    claimed_and_failed(intake, 0)
    lost = intake.ledger.trial(0)
    intake.retry(lost)
    open_intake(tmp_path).retry(lost)  # asked again after a restart
    (retry,) = intake.ledger.queued_for("retry_of", 0)
    assert retry.state == TrialState.WAITING
    assert (retry.user_attrs["retries"], retry.user_attrs["seed"], retry.user_attrs["wave"]) == (1, 7, 3)
    assert retry.user_attrs["description"] == "wider"
    assert intake.load_candidate(retry.user_attrs).knobs == {"WIDTH": 128}
    assert lost.user_attrs["ended_at"] == INTAKE_NOW  # the ledger stamps a failure with the clock's time


def test_a_lost_run_of_a_new_frontier_at_its_screening_seed_is_retried_as_one(tmp_path: Path) -> None:
    intake = open_intake(tmp_path)
    intake.new_frontier(0, "screen")  # as if trial 0 were kept (the frontier's generation is 0)
    (reference,) = intake.ledger.queued_for("validates", 0)
    assert (reference.user_attrs["seed"], reference.user_attrs["reference"]) == (BASE_SEED, True)
    claimed_and_failed(intake, reference.number)
    intake.retry(intake.ledger.trial(reference.number))
    (retry,) = intake.ledger.queued_for("retry_of", reference.number)
    # the results screened with its seed wait for it, as for the run it replaces
    assert (retry.user_attrs["seed"], retry.user_attrs["reference"]) == (BASE_SEED, True)


def test_a_stale_winner_is_stacked_once_and_no_deeper_than_the_limit(tmp_path: Path) -> None:
    intake = open_intake(tmp_path)
    intake.add(Candidate("lower lr", "", knobs={"LR": 0.002}), {"kind": "experiment", "seed": BASE_SEED})
    claimed_and_failed(intake, 0)
    winner = intake.ledger.trial(0)
    assert intake.stack(winner, "better").endswith("re-queued on the current frontier")
    assert open_intake(tmp_path).stack(winner, "better").endswith("re-queued on the current frontier")
    (stacked,) = intake.ledger.queued_for("stack_of", 0)
    assert stacked.user_attrs["description"] == "stack: lower lr"
    assert stacked.user_attrs["stack_depth"] == 1
    assert intake.load_candidate(stacked.user_attrs).knobs == {"LR": 0.002}
    intake.add(Candidate("deep", "", knobs={"LR": 0.003}), {"kind": "stack", "stack_depth": MAX_STACK_DEPTH})
    claimed_and_failed(intake, 2)
    assert "not re-run" in intake.stack(intake.ledger.trial(2), "better")
    assert intake.ledger.queued_for("stack_of", 2) == []


@pytest.mark.parametrize(
    "edit",
    [Edit("LR = 0.01\n", "LR = 0.01\n"), Edit("LR = 0.01\n", "LR = 0.03\n")],
    ids=["a text replaced by itself", "an edit its knob writes over"],
)
def test_a_run_whose_stored_edit_changes_nothing_is_stacked_and_retried_without_it(
    tmp_path: Path, edit: Edit
) -> None:
    """A grid cell an older version queued with a shared edit that replaces a text by itself, or
    that its level writes over (LR = 0.03 under LR=0.02), now refused by the engine: its winner,
    stacked on a newer frontier, was 'not re-run: its change no longer applies', and its lost run,
    retried, refused as invalid, a run of knob values lost. The edit changes nothing: it is left
    out, the rest re-queued."""
    intake = open_intake(tmp_path)
    cell = Candidate("LR sweep [LR=0.02]", "", [edit], knobs={"LR": 0.02})
    intake.add(cell, {"kind": "experiment", "seed": BASE_SEED})
    claimed_and_failed(intake, 0)
    assert intake.stack(intake.ledger.trial(0), "better").endswith("re-queued on the current frontier")
    assert intake.retry(intake.ledger.trial(0)) == ""
    for link in ("stack_of", "retry_of"):
        (queued,) = intake.ledger.queued_for(link, 0)
        again = intake.load_candidate(queued.user_attrs)
        assert (again.edits, again.knobs) == ([], {"LR": 0.02})


def test_an_edit_of_an_undeclared_knob_left_free_is_kept_when_its_run_is_stacked_or_retried(
    tmp_path: Path,
) -> None:
    """SECONDS is no declared knob: left free (a user's wave, the offline proposer's), nothing
    draws or sets it, and its run trains with the edit's SECONDS = 0.3. Queued again, stacked or
    retried, the edit was taken for one its knobs write over and dropped: the re-run was the
    frontier's train.py, skipped as 'no change', the change lost. It is kept."""
    intake = open_intake(tmp_path)
    longer = Candidate("longer", "", [Edit("SECONDS = 0.2", "SECONDS = 0.3")], knobs={"SECONDS": None})
    assert intake.precheck(longer) == ""
    intake.add(longer, {"kind": "experiment", "seed": BASE_SEED})
    claimed_and_failed(intake, 0, knobs="{}")  # as it ran: nothing resolved
    assert intake.stack(intake.ledger.trial(0), "better").endswith("re-queued on the current frontier")
    assert intake.retry(intake.ledger.trial(0)) == ""
    for link in ("stack_of", "retry_of"):
        (queued,) = intake.ledger.queued_for(link, 0)
        assert intake.load_candidate(queued.user_attrs).edits == longer.edits


def test_a_lost_stack_is_retried_as_deep_a_stack_as_it_was(tmp_path: Path) -> None:
    intake = open_intake(tmp_path)
    attrs = {"kind": "stack", "stack_of": 7, "stack_depth": MAX_STACK_DEPTH}
    intake.add(Candidate("stack: deep", "", knobs={"LR": 0.003}), attrs)
    claimed_and_failed(intake, 0)
    intake.retry(intake.ledger.trial(0))
    (retry,) = intake.ledger.queued_for("retry_of", 0)
    assert (retry.user_attrs["stack_of"], retry.user_attrs["stack_depth"]) == (7, MAX_STACK_DEPTH)
    claimed_and_failed(intake, retry.number)
    assert "not re-run" in intake.stack(intake.ledger.trial(retry.number), "better")  # no deeper


def test_a_proposal_that_cannot_run_is_failed_with_its_reason_before_it_costs_a_slot(tmp_path: Path) -> None:
    intake = open_intake(tmp_path)
    runs = Candidate("runs", "", knobs={"LR": 0.02})
    nowhere = Candidate("nowhere", "", knobs={"LR": 0.03}, tier="h200")
    intake.wave(Wave(rationale="two", candidates=[runs, nowhere], source="test"))
    by_description = {t.user_attrs["description"]: t for t in intake.ledger.all()}
    assert by_description["runs"].state == TrialState.WAITING
    assert by_description["nowhere"].state == TrialState.FAIL
    assert by_description["nowhere"].user_attrs["reason"] == "tier 'h200' has no partition in this cluster"
    assert intake.rejected == ["nowhere: tier 'h200' has no partition in this cluster"]
    assert intake.empty_waves == 1  # until "runs" runs
    intake.wave(Wave(rationale="again", candidates=[runs], source="test"))  # nothing new in it
    assert intake.empty_waves == 2 and len(intake.ledger.all()) == 2


def test_a_grid_whose_shared_edit_changes_nothing_is_refused_whoever_proposed_it(tmp_path: Path) -> None:
    """Only propose_wave refused a shared edit that replaces a text by itself; a grid reaching the
    engine another way (a user's or the offline proposer's, a resumed study's) queued cells that
    repeat knob-only runs judged as a change. The engine refuses each cell by the wave's rule."""
    intake = open_intake(tmp_path)
    itself = Edit("LR = 0.01\n", "LR = 0.01\n")
    grid = Grid("LR sweep", {"LR": [0.02, 0.03]}, shared_edits=[itself])
    intake.wave(Wave(rationale="user's", grids=[grid], source="test"))
    reasons = {t.user_attrs["reason"] for t in intake.ledger.all() if t.state == TrialState.FAIL}
    assert reasons == {"edit 1 replaces a text by itself, so it changes nothing"}
    assert len(intake.ledger.all()) == 2


def test_edits_that_knob_values_write_over_are_refused_whoever_proposed_them(tmp_path: Path) -> None:
    """Only propose_wave refused edits that change only what their knobs then set (WIDTH = 96
    under WIDTH=32, a free knob's or a grid's factor's constant); a wave reaching the engine
    another way (the offline proposer's, a user's) queued them, each run its knob values alone
    judged as a change. The engine refuses them by the wave's rule, in one line; an edit that
    changes more, or a constant no knob sets, is queued."""
    intake = open_intake(tmp_path)
    wider = Edit("WIDTH = 64", "WIDTH = 96")
    more = Edit("SECONDS = 0.2", "SECONDS = 0.3")
    refused = [
        Candidate("fixed", "", [wider], knobs={"WIDTH": 32}),
        Candidate("free", "", [wider], knobs={"WIDTH": None}),
        Candidate("undone", "", [wider, Edit("WIDTH = 96", "WIDTH = 64")], knobs={"LR": 0.02}),
    ]
    queued = [Candidate("more", "", [wider, more], knobs={"WIDTH": 32}), Candidate("other", "", [more])]
    grid = Grid("WIDTH sweep", {"WIDTH": [16, 128]}, shared_edits=[wider])
    intake.wave(Wave(rationale="offline's", candidates=refused + queued, grids=[grid], source="offline"))
    failed = {
        t.user_attrs["description"]: t.user_attrs["reason"]
        for t in intake.ledger.all()
        if t.state == TrialState.FAIL
    }
    cells = ["WIDTH sweep [WIDTH=16]", "WIDTH sweep [WIDTH=128]"]
    assert failed == dict.fromkeys(["fixed", "free", "undone", *cells], OVERWRITTEN_EDITS)
    waiting = [t.user_attrs["description"] for t in intake.ledger.all() if t.state == TrialState.WAITING]
    assert waiting == ["more", "other"]


def test_a_wave_counts_as_empty_until_one_of_its_candidates_runs(tmp_path: Path) -> None:
    """A wave whose candidates all end invalid or skipped (twins of runs) had nothing new either:
    counted as new at intake, a proposer of such waves (the offline one, on a small knob space) kept
    the campaign going for ever."""
    intake = open_intake(tmp_path)
    for lr in (0.02, 0.03, 0.04):
        intake.wave(Wave(candidates=[Candidate(f"lr {lr}", "", knobs={"LR": lr})], source="test"))
    assert intake.empty_waves == 3  # none has run yet
    intake.ran(2)  # the second wave's candidate launched: only the third is empty
    assert intake.empty_waves == 1
    intake.ran(1)  # an older wave's changes nothing, nor the engine's own runs
    intake.ran(0)
    assert intake.empty_waves == 1
    intake.wave(Wave(candidates=[Candidate("lr 0.02", "", knobs={"LR": 0.02})], source="test"))  # a duplicate
    assert intake.empty_waves == 2


@pytest.mark.parametrize("replace", ["LR = 0.01" + "+0" * 9000 + "\n", "LR = " + "-" * 19000 + "0.01\n"])
def test_a_proposal_the_parser_gives_up_on_is_failed_with_its_reason(tmp_path: Path, replace: str) -> None:
    """ast.parse raises RecursionError or MemoryError, not SyntaxError, for an expression nested or
    chained too deeply: such a proposal is refused like any that does not parse, not a crash."""
    intake = open_intake(tmp_path)
    deep = Candidate("deep", "", edits=[Edit("LR = 0.01\n", replace)])
    intake.wave(Wave(rationale="deep", candidates=[deep], source="test"))
    (trial,) = intake.ledger.all()
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["reason"].startswith("edited train.py does not parse: the parser gave up (")


SETTABLE = "a knob must be one module-level assignment, NAME = value, for the engine to set it"


@pytest.mark.parametrize(
    ("replace", "reason"),
    [
        ("LR = 0.02\n", ""),
        ("LR = 0.01\nLR = LR * 4\n", f"knob LR is assigned 2 times in train.py: {SETTABLE}"),
        ("LR = 0.01\nLR *= 4\n", f"knob LR is bound again after its assignment in train.py: {SETTABLE}"),
        (
            "LR, SPARE = 0.01, 1\n",
            f"knob LR is not a module-level constant (NAME = value) of train.py: {SETTABLE}",
        ),
    ],
)
def test_an_edit_that_leaves_a_declared_knob_unsettable_is_refused(
    tmp_path: Path, replace: str, reason: str
) -> None:
    """Kept, `LR = LR * 4` after `LR = 0.01` made every later draw of LR invalid ("assigned 2
    times"): thousands of dead trials. It is refused before it runs, with the reason."""
    intake = open_intake(tmp_path)
    assert intake.precheck(Candidate("four times the lr", "", edits=[Edit("LR = 0.01\n", replace)])) == reason


@pytest.mark.parametrize(
    ("overrides", "replace", "reason"),
    [
        (
            [],
            'WIDTH = "64"\n',
            "knob WIDTH: the edits make train.py's WIDTH a str (line 13: WIDTH = \"64\"), where the frontier's "
            "is an int; it is a declared int knob: keep it an int",
        ),
        ([], "WIDTH = 64.5\n", "knob WIDTH: the edits make train.py's WIDTH a float"),
        (
            ["campaign.knobs.WIDTH.kind=categorical", "campaign.knobs.WIDTH.choices=[32,64]"],
            "WIDTH = 64.0\n",
            "(line 13: WIDTH = 64.0), where the frontier's is an int; it is a declared knob of choices [32, 64]",
        ),
    ],
)
def test_an_edit_that_retypes_a_declared_knobs_constant_is_failed_before_it_costs_a_slot(
    tmp_path: Path, overrides: list[str], replace: str, reason: str
) -> None:
    """The last guard, whatever proposed it: with `WIDTH = 64.5` kept, every later WIDTH drawn was
    written as a float; with `WIDTH = "64"`, a candidate that left WIDTH alone ran a str. An edit
    of its value alone is queued."""
    intake = open_intake(tmp_path, *overrides)
    retyped = Candidate("retyped", "", [Edit("WIDTH = 64\n", replace)])
    narrower = Candidate("narrower", "", [Edit("WIDTH = 64\n", "WIDTH = 32\n")])
    intake.wave(Wave(rationale="one", candidates=[retyped, narrower], source="t"))
    said = {
        t.user_attrs["description"]: (t.state, t.user_attrs.get("reason", "")) for t in intake.ledger.all()
    }
    assert said["narrower"] == (TrialState.WAITING, "")
    assert said["retyped"][0] == TrialState.FAIL and reason in said["retyped"][1]


def test_an_edit_is_not_blamed_for_a_knob_its_frontier_could_not_set_already(tmp_path: Path) -> None:
    """A frontier kept before the check (an older study) may have one; other edits still run."""
    intake = open_intake(tmp_path)
    source = intake.frontier.source().replace("LR = 0.01\n", "LR = 0.01\nLR = LR * 4\n")
    intake.frontier.advance(source, 3, "four times the lr")
    assert intake.precheck(Candidate("wider", "", edits=[Edit("WIDTH = 64\n", "WIDTH = 96\n")])) == ""
    twice = Candidate("wider twice", "", edits=[Edit("WIDTH = 64\n", "WIDTH = 64\nWIDTH = 96\n")])
    assert intake.precheck(twice) == f"knob WIDTH is assigned 2 times in train.py: {SETTABLE}"


@pytest.mark.parametrize(
    ("knobs", "reason"),
    [
        ({"LR": 0.02, "WIDTH": 128}, ""),
        ({"LR": 0.5, "WIDTH": 16}, ""),  # the bounds are in range
        ({"LR": "abc"}, "knob LR: 'abc' is not a number"),
        ({"LR": [0.02]}, "knob LR: [0.02] is not a number"),
        ({"LR": {"value": 0.02}}, "knob LR: {'value': 0.02} is not a number"),
        ({"LR": True}, "knob LR: True is not a number"),
        ({"WIDTH": 128.0}, "knob WIDTH: 128.0 is not an integer"),
        ({"LR": 0.9}, "knob LR: 0.9 is outside its range [0.001, 0.5]"),
        ({"WIDTH": 4096}, "knob WIDTH: 4096 is outside its range [16, 1024]"),
    ],
)
def test_a_knob_value_its_spec_cannot_take_is_refused_before_it_is_queued(
    tmp_path: Path, knobs: dict[str, object], reason: str
) -> None:
    """Optuna would fail a value of the wrong type at launch, and run one out of range after a
    warning of many lines: the proposer is told in one line instead."""
    assert open_intake(tmp_path).precheck(Candidate("set", "", knobs=knobs)) == reason


@pytest.mark.parametrize(
    ("validate_apart", "seeds", "runs"), [(False, 2, False), (True, 0, False), (True, 2, True)]
)
def test_a_proposal_on_the_validate_tier_runs_only_where_that_tier_has_baselines(
    tmp_path: Path, validate_apart: bool, seeds: int, runs: bool, open_campaign: Callable[..., Campaign]
) -> None:
    """Baselines run on the validate tier only where it confirms changes (a partition of its own,
    validate_seeds > 0): elsewhere a change run there would have nothing to be judged by, and
    would be discarded once it had cost its slot."""
    campaign = open_campaign(tmp_path, [], f"campaign.validate_seeds={seeds}", validate_apart=validate_apart)
    on_validate = Candidate("wider on validate", "", knobs={"WIDTH": 128}, tier="validate")
    reason = campaign.intake.precheck(on_validate)
    assert reason == (
        ""
        if runs
        else (
            "tier 'validate' has no baselines to judge a change by in this campaign (only a validate tier "
            "on a partition of its own, with validate_seeds > 0, has): propose it on the screen tier"
        )
    )
    assert campaign.intake.precheck(Candidate("wider", "", knobs={"WIDTH": 128})) == ""


def test_a_new_frontiers_runs_are_owed_to_no_decision(tmp_path: Path) -> None:
    """After a budget stop only owed runs launch: a promoted change's re-runs, not the runs that
    measure a kept one as the new frontier (no decision waits for those)."""
    intake = open_intake(tmp_path)
    ledger = intake.ledger
    intake.add(Candidate("wider", "", knobs={"WIDTH": 128}), {"kind": "experiment", "seed": BASE_SEED})
    assert ledger.claim(ledger.trial(0))  # promoted, awaiting its verdict
    intake.reruns(0, "validate", 2, "wider")
    reruns = ledger.queued_for("validates", 0)
    assert ledger.owed() == reruns and len(reruns) == 2
    for t in reruns:
        assert ledger.claim(t)
        ledger.complete(t.number, 1.0, {"status": "rerun"})
    ledger.complete(0, 1.0, {"status": "keep"})
    intake.new_frontier(0, "validate")  # confirmed on the validate tier: measured on the screen tier too
    measuring = [t for t in ledger.waiting() if t.user_attrs.get("validates") == 0]
    assert sorted(t.user_attrs["seed"] for t in measuring) == [BASE_SEED, 43, 44]
    assert ledger.owed() == [] and ledger.queue() == measuring  # still first while budget is left


def test_a_lost_fix_queued_again_is_one_attempt_not_two(tmp_path: Path) -> None:
    """A retry keeps its run's fix_of (it stands for that run), and the limit counted it as a second
    attempt: a fix lost to the cluster left the agent no second try at the default limit of 2."""
    intake = open_intake(tmp_path)
    assert intake.cfg.agent.max_fix_attempts == 2
    intake.add(Candidate("broken", "", knobs={"LR": 0.05}), {"kind": "experiment"})
    intake.wave(Wave(rationale="fix", candidates=[Candidate("repaired", "", knobs={"LR": 0.06}, fix_of=0)]))
    claimed_and_failed(intake, 1)  # the fix, lost to the cluster, is queued again as it was
    assert intake.retry(intake.ledger.trial(1)) == ""
    again = Candidate("repaired again", "", knobs={"LR": 0.07}, fix_of=0)
    intake.wave(Wave(rationale="second try", candidates=[again]))
    by_description = {
        t.user_attrs["description"]: t for t in intake.ledger.all() if "retry_of" not in t.user_attrs
    }
    assert by_description["repaired again"].state == TrialState.WAITING, by_description[
        "repaired again"
    ].user_attrs


def test_a_wave_of_fixes_reads_the_study_once_whatever_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each fix candidate read the whole study again to count the repairs of its crash: a wave of
    repairs on a long campaign's study cost a read each. The wave reads it once, and the repairs
    earlier in the same wave still count towards the limit."""
    intake = open_intake(tmp_path, "agent.max_fix_attempts=3")
    intake.add(Candidate("broken", "", knobs={"LR": 0.05}), {"kind": "experiment"})
    claimed_and_failed(intake, 0, status="crash")
    storage = intake.ledger.study._storage
    reads: list[tuple] = []
    read_all = storage.get_all_trials

    def counted(*args: object, **kwargs: object) -> object:
        reads.append(args)
        return read_all(*args, **kwargs)

    monkeypatch.setattr(storage, "get_all_trials", counted)

    def reads_of(lrs: list[float]) -> int:
        before = len(reads)
        fixes = [Candidate(f"repaired, LR={lr}", "", knobs={"LR": lr}, fix_of=0) for lr in lrs]
        intake.wave(Wave(rationale="fix", candidates=fixes))
        return len(reads) - before

    assert reads_of([0.06]) == reads_of([0.07, 0.08, 0.09, 0.02]) >= 1
    by_lr = {t.user_attrs["description"]: t for t in intake.ledger.all()}
    assert [by_lr[f"repaired, LR={lr}"].state for lr in (0.06, 0.07, 0.08)] == [TrialState.WAITING] * 3
    assert by_lr["repaired, LR=0.09"].user_attrs["reason"] == (
        "trial 0 already had 1 fix attempts, and this wave repairs it 2 time(s) before (limit 3)"
    )
    assert by_lr["repaired, LR=0.02"].user_attrs["status"] == "invalid"


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (
            Candidate("crash", "", knobs={"CRASH": 1}),
            "knob CRASH: 1 is an int, but train.py's CRASH is a bool (line 15)",
        ),
        (
            Candidate("slow", "", knobs={"SECONDS": "1"}),
            "knob SECONDS: '1' is a str, but train.py's SECONDS is a float (line 14)",
        ),
        (
            Candidate("wait", "", knobs={"HOLD": [1]}),
            "knob HOLD: [1] is a list, but train.py's HOLD is a str (line 20)",
        ),
        (Candidate("longer", "", knobs={"SECONDS": 1}), ""),  # an int serves for a float
        (  # (with a change of its own: an edit HOLD=1 writes over alone is refused for that)
            Candidate(
                "retyped",
                "",
                edits=[Edit("HOLD = ", "HOLD = 0 or "), Edit("SECONDS = 0.2", "SECONDS = 0.3")],
                knobs={"HOLD": 1},
            ),
            "",
        ),
    ],
)
def test_a_value_of_another_type_than_its_constants_is_failed_before_it_costs_a_slot(
    tmp_path: Path, candidate: Candidate, reason: str
) -> None:
    """The last guard, whatever proposed it: an undeclared constant has no spec to check a value
    by, and one of another type crashed its run."""
    intake = open_intake(tmp_path)
    intake.wave(Wave(rationale="one", candidates=[candidate], source="test"))
    (trial,) = intake.ledger.all()
    assert trial.state == (TrialState.FAIL if reason else TrialState.WAITING)
    assert trial.user_attrs.get("reason", "") == (f"{reason}: give a value of its type" if reason else "")


@pytest.mark.parametrize(
    ("value", "reason"), [(32.0, "knob WIDTH: 32.0 is not one of its choices [32, 64]"), (32, "")]
)
def test_a_declared_choice_of_another_type_is_failed_though_python_finds_them_equal(
    tmp_path: Path, value: object, reason: str
) -> None:
    """32.0 == 32, so `32.0 in [32, 64]` passed, and train.py was given `WIDTH = 32.0`."""
    intake = open_intake(
        tmp_path, "campaign.knobs.WIDTH.kind=categorical", "campaign.knobs.WIDTH.choices=[32,64]"
    )
    assert intake.precheck(Candidate("narrower", "", knobs={"WIDTH": value})) == reason
