"""The offline proposer: deterministic, inside the declared ranges, and its edits fit train.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
from trainer_helpers import TRAINER_DIR

from autoresearch.knobs import read_knobs
from autoresearch.proposers.base import CampaignContext, ExperimentRecord, KnobSpec
from autoresearch.proposers.offline import STRUCTURAL_EDITS, OfflineProposer
from autoresearch.workspace import build_source

TRAIN_PY = (TRAINER_DIR / "train.py").read_text()
KNOBS = [
    KnobSpec("MATRIX_LR", "float", 0.005, 0.08, log=True),
    KnobSpec("DEPTH", "int", 1, 6),
    KnobSpec("WINDOW_PATTERN", "categorical", choices=("L", "SL", "SSSL")),
]


def context(history: list[ExperimentRecord], commit: str = "abc") -> CampaignContext:
    return CampaignContext(
        frontier_source=TRAIN_PY,
        frontier_val_bpb={"screen": 2.0},
        lineage=[],
        history=history,
        knobs=KNOBS,
        knob_values=read_knobs(TRAIN_PY),
        noise_std=None,
        budget_left={},
        tiers={"screen": "cpu x2"},
        wave_size=8,
        max_wave=16,
        frontier_commit=commit,
    )


def test_same_seed_and_state_give_the_same_wave_and_another_seed_does_not() -> None:
    a = OfflineProposer(seed=1).propose(context([]))
    b = OfflineProposer(seed=1).propose(context([]))
    c = OfflineProposer(seed=2).propose(context([]))
    assert [x.key() for x in a.candidates] == [x.key() for x in b.candidates]
    assert [x.key() for x in a.candidates] != [x.key() for x in c.candidates]


def test_moves_stay_inside_declared_ranges_and_skip_what_was_tried_on_this_frontier() -> None:
    wave = OfflineProposer(seed=0).propose(context([]))
    moves = [c for c in wave.candidates if c.knobs and None not in c.knobs.values()]
    assert moves, wave
    for cand in moves:
        ((name, value),) = cand.knobs.items()
        spec = next(k for k in KNOBS if k.name == name)
        if spec.kind == "categorical":
            assert value in spec.choices
        else:
            assert spec.low <= value <= spec.high
    tried = [
        ExperimentRecord(i, c.description, "discard", 2.1, "screen", c.knobs, parent="abc")
        for i, c in enumerate(moves)
    ]
    again = OfflineProposer(seed=0).propose(context(tried))
    assert not {c.key() for c in again.candidates} & {c.key() for c in moves}
    # On a new frontier the same moves are worth trying again.
    fresh = OfflineProposer(seed=0).propose(context(tried, commit="def"))
    assert {c.key() for c in fresh.candidates} & {c.key() for c in moves}


def test_a_move_cut_to_a_bound_of_the_other_type_keeps_the_knobs_type() -> None:
    """A campaign file may give a float knob int bounds (`high: 1`) and an int knob float ones
    (`high: 100.0`): a move cut to such a bound is still the knob's type, else an int knob's
    `100.0` is refused as not an integer and the candidate is wasted."""
    knobs = [KnobSpec("EMBEDDING_LR", "float", 0, 1), KnobSpec("ASPECT_RATIO", "int", 16.0, 100.0, log=True)]
    wave = OfflineProposer(seed=0).propose(replace(context([]), knobs=knobs))
    moves = sorted(
        (name, value) for c in wave.candidates if len(c.knobs) == 1 for name, value in c.knobs.items()
    )
    # down: halved; up: doubled (0.6 -> 1.2, 64 -> 128) past `high`, so cut to it
    assert moves == [
        ("ASPECT_RATIO", 32),
        ("ASPECT_RATIO", 100),
        ("EMBEDDING_LR", 0.3),
        ("EMBEDDING_LR", 1.0),
    ]
    assert [type(value) for _, value in moves] == [int, int, float, float]


def test_after_single_moves_it_proposes_a_grid_over_the_two_knobs_whose_moves_paid_off_best() -> None:
    history = [
        ExperimentRecord(1, "a", "discard", 1.99, "screen", {"MATRIX_LR": 0.08}, parent="abc"),
        ExperimentRecord(2, "b", "discard", 1.995, "screen", {"WINDOW_PATTERN": "L"}, parent="abc"),
        ExperimentRecord(3, "c", "discard", 1.999, "screen", {"MATRIX_LR": 0.02}, parent="abc"),
        # DEPTH's frontier value is an expression (per scale): no grid cell could restore it
        ExperimentRecord(4, "d", "discard", 1.98, "screen", {"DEPTH": 3}, parent="abc"),
    ]
    wave = OfflineProposer(seed=0).propose(context(history))
    assert len(wave.grids) == 1
    assert wave.grids[0].factors == {"MATRIX_LR": [0.04, 0.08], "WINDOW_PATTERN": ["SSSL", "L"]}


def test_a_constant_set_to_an_expression_is_left_out_of_grids_declared_or_not() -> None:
    """SHORT_WINDOW = MAX_SEQ_LEN // 2 is not a knob, but Claude may have moved it: a grid cell
    must not set it to the expression's text as a string (a broken train.py)."""
    history = [
        ExperimentRecord(1, "a", "discard", 1.97, "screen", {"SHORT_WINDOW": 64}, parent="abc"),
        ExperimentRecord(2, "b", "discard", 1.98, "screen", {"SOFTCAP": 20.0}, parent="abc"),
        ExperimentRecord(3, "c", "discard", 1.99, "screen", {"MATRIX_LR": 0.08}, parent="abc"),
    ]
    wave = OfflineProposer(seed=0).propose(context(history))
    assert [g.factors for g in wave.grids] == [{"SOFTCAP": [15.0, 20.0], "MATRIX_LR": [0.04, 0.08]}]


def test_moves_that_made_things_worse_are_not_combined() -> None:
    history = [  # the frontier measures 2.0 on the screen tier
        ExperimentRecord(1, "a", "discard", 1.99, "screen", {"MATRIX_LR": 0.08}, parent="abc"),
        ExperimentRecord(2, "b", "discard", 2.01, "screen", {"WINDOW_PATTERN": "L"}, parent="abc"),
        ExperimentRecord(3, "c", "discard", 2.30, "screen", {"WINDOW_PATTERN": "SL"}, parent="abc"),
    ]
    wave = OfflineProposer(seed=0).propose(context(history))
    assert wave.grids == []
    assert len(wave.candidates) == 8  # the wave is filled with other candidates instead


@pytest.mark.parametrize("edit", STRUCTURAL_EDITS, ids=lambda e: e.description)
def test_every_structural_edit_applies_to_train_py(edit) -> None:
    wave = OfflineProposer(seed=0, edits=(edit,)).propose(context([]))
    cand = next(c for c in wave.candidates if c.description == edit.description)
    source = build_source(TRAIN_PY, cand.edits, {})
    assert source != TRAIN_PY
