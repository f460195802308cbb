"""Grids, de-duplication, knob rewriting and every way a candidate can be refused before it runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autoresearch.knobs import KnobError, read_knobs, set_knobs
from autoresearch.proposals import Candidate, Edit, Grid, Wave, wave_from_dict
from autoresearch.proposers.offline import STRUCTURAL_EDITS
from autoresearch.workspace import InvalidCandidate, build_source, create_workspace, sha256_file

SOURCE = """import prepare

LR = 0.04  # matrix learning rate
DEPTH = 8
WINDOW = "SSSL"
ACT = "relu2"


def forward(x):
    return x * LR
"""


def test_grid_expands_every_combination_in_order() -> None:
    grid = Grid("lr x depth", {"LR": [0.02, 0.04, 0.08], "DEPTH": [4, 8]}, shared_edits=[Edit("a", "b")])
    cells = list(grid.expand())
    assert grid.size() == 6 and len(cells) == 6
    assert [c.knobs for c in cells[:2]] == [{"LR": 0.02, "DEPTH": 4}, {"LR": 0.02, "DEPTH": 8}]
    assert all(c.edits == [Edit("a", "b")] for c in cells)
    assert "LR=0.08, DEPTH=8" in cells[-1].description


def test_wave_deduplicates_against_the_study_and_within_itself_and_caps() -> None:
    wave = Wave(
        candidates=[Candidate("a", knobs={"LR": 0.02}), Candidate("a again", knobs={"LR": 0.02})],
        grids=[Grid("g", {"LR": [0.02, 0.08], "DEPTH": [4]})],
    )
    seen = {Candidate("old", knobs={"DEPTH": 4, "LR": 0.08}).key()}
    accepted, dropped = wave.expand(seen, cap=10)
    assert [c.knobs for c in accepted] == [{"LR": 0.02}, {"LR": 0.02, "DEPTH": 4}]
    assert len(dropped) == 2 and all("duplicate" in d for d in dropped)
    accepted, dropped = Wave(grids=[Grid("big", {"LR": list(range(50))})]).expand(set(), cap=16)
    assert len(accepted) == 16 and dropped == ["over the wave cap of 16: big [LR=16] and 33 more"]


def test_a_grid_of_a_trillion_cells_is_cut_at_the_cap_without_being_built() -> None:
    """Cells are made one at a time: a proposal's grid size is a product the engine must not
    materialise (12 factors of 10 levels is a short tool input)."""
    huge = Grid("huge", {f"K{i}": list(range(10)) for i in range(12)})
    wave = Wave(candidates=[Candidate("one", knobs={"K0": 1})], grids=[huge])
    assert wave.size() == 1 + 10**12
    accepted, dropped = wave.expand(set(), cap=4)
    assert [c.description for c in accepted][:2] == [
        "one",
        "huge [" + ", ".join(f"K{i}=0" for i in range(12)) + "]",
    ]
    assert len(accepted) == 4 and len(dropped) == 1 and dropped[0].endswith(f"and {10**12 - 4} more")


def test_wave_from_dict_refuses_unknown_tiers_and_empty_grids() -> None:
    with pytest.raises(ValueError, match="tier"):
        wave_from_dict({"candidates": [{"description": "x", "tier": "gold"}]}, "t")
    with pytest.raises(ValueError, match="factor"):
        wave_from_dict({"grids": [{"description": "g", "factors": {"LR": []}}]}, "t")


def test_knobs_are_read_and_rewritten_through_the_syntax_tree() -> None:
    assert read_knobs(SOURCE) == {"LR": 0.04, "DEPTH": 8, "WINDOW": "SSSL", "ACT": "relu2"}
    out = set_knobs(SOURCE, {"LR": 0.08, "WINDOW": "SL"})
    assert "LR = 0.08  # matrix learning rate" in out
    assert read_knobs(out)["WINDOW"] == "SL" and read_knobs(out)["DEPTH"] == 8
    with pytest.raises(KnobError, match="not a module-level constant"):
        set_knobs(SOURCE, {"MISSING": 1})
    with pytest.raises(KnobError, match="assigned 2 times"):
        set_knobs(SOURCE + "DEPTH = 4\n", {"DEPTH": 2})
    with pytest.raises(KnobError, match="NaN"):
        set_knobs(SOURCE, {"LR": float("nan")})


def test_knob_values_written_anywhere_a_knob_is_assigned_always_parse_back() -> None:
    """What lets build_source skip checking a train.py again after setting its knobs."""
    source = (
        "import prepare\n"
        "A = 1; B = (2,\n     3)  # é, a multi-byte comment\n"
        "C: float = -0.5\n"
        "D = 8 if prepare.X else 2\n"
        "E = 'x'\n"
        "def f():\n    return A\n"
    )
    values = [0, -3, 1e-9, 2**70, True, None, 'it\'s "quoted"\nand two lines', (1, "a"), [0.5, -1]]
    for value in values:
        settings = {name: value for name in "ABCDE"}
        out = set_knobs(source, settings)
        assert read_knobs(out) == settings, value
        assert "def f():\n    return A\n" in out


def test_knobs_are_set_on_the_lines_the_parser_counts() -> None:
    """A form feed or a Unicode line separator is no line break to Python's parser: splitting at
    them put a knob's new value on the wrong line."""
    for odd in ("\x0c", "\x1c", "\x85", "\u2028", "\u2029"):
        source = f"# section{odd}\nNOTE = 'a{odd}b'\nLR = 0.01\nWIDTH = 64\n"
        out = set_knobs(source, {"LR": 0.02, "WIDTH": 128})
        assert out == source.replace("0.01", "0.02").replace("64", "128"), repr(odd)


def test_a_constant_that_literal_eval_refuses_with_a_type_error_is_read_as_its_source_text() -> None:
    """`{[1]: 2}` parses, but evaluating it raises TypeError (an unhashable key), not ValueError:
    a value that is not a literal, not a crash of the controller."""
    source = "TABLE = {[1]: 2}\nSEEN = {[1]}\nLR = 0.01\n"
    assert read_knobs(source) == {"TABLE": "{[1]: 2}", "SEEN": "{[1]}", "LR": 0.01}
    assert "LR = 0.02" in build_source(source, [], {"LR": 0.02})


@pytest.mark.parametrize(
    ("edits", "knobs", "reason"),
    [
        ([Edit("LR = 0.05", "LR = 0.1")], {}, "does not occur"),
        ([Edit("LR", "lr")], {}, "occurs 2 times"),
        ([Edit("", "x")], {}, "empty search"),
        ([Edit("DEPTH = 8", "DEPTH = 8")], {"LR": 0.02}, "edit 1 replaces a text by itself"),
        ([Edit("DEPTH = 8", "DEPTH = 4", path="prepare.py")], {}, "may only change train.py"),
        ([Edit("DEPTH = 8", "DEPTH = 4", path="../train.py")], {}, "may only change train.py"),
        ([Edit("DEPTH = 8", "DEPTH = 4", path="/etc/train.py")], {}, "may only change train.py"),
        ([Edit("DEPTH = 8", "DEPTH = (4")], {}, "does not parse"),
        ([Edit("DEPTH = 8", "DEPTH = 8" + "+0" * 9000)], {}, "does not parse: the parser gave up"),
        ([Edit("DEPTH = 8", "DEPTH = " + "-" * 19000 + "8")], {}, "does not parse: the parser gave up"),
        ([Edit("DEPTH = 8", "x" * 30_000)], {}, "too large"),
        ([Edit("DEPTH = 8", "DEPTH = 8\nprepare.evaluate_bpb = lambda *a: 0.5")], {}, "harness"),
        ([Edit("import prepare", "import prepare as p\nsetattr(p, 'X', 1)")], {}, "harness"),
        ([], {"NOT_A_KNOB": 3}, "unknown knob"),
        ([], {"LR": float("nan")}, "NaN"),
    ],
)
def test_every_invalid_candidate_is_refused_with_its_reason(edits, knobs, reason) -> None:
    with pytest.raises(InvalidCandidate, match=reason):
        build_source(SOURCE, edits, knobs)


def test_valid_candidate_builds_a_workspace_with_diff_and_harness_copy(tmp_path: Path) -> None:
    harness = tmp_path / "prepare.py"
    harness.write_text("# the harness\n")
    source = build_source(SOURCE, [Edit('ACT = "relu2"', 'ACT = "gelu"')], {"DEPTH": 4})
    ws = create_workspace(tmp_path / "exp", SOURCE, source, harness)
    assert (ws.path / "train.py").read_text() == source
    assert ws.harness_sha256 == sha256_file(harness) == sha256_file(ws.path / "prepare.py")
    assert '-ACT = "relu2"' in ws.diff and "+DEPTH = 4" in ws.diff


def test_a_folder_left_at_the_workspace_path_is_cleared_first(tmp_path: Path) -> None:
    """An earlier campaign of the same name, removed to start over, whose runner ended late, left
    its outcome.json at this trial's path: the new run's runner skipped the workspace as run, and
    the controller took that outcome as the new run's."""
    harness = tmp_path / "prepare.py"
    harness.write_text("# the harness\n")
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "outcome.json").write_text('{"status": "crash"}')
    ws = create_workspace(tmp_path / "exp", SOURCE, SOURCE, harness)
    assert sorted(p.name for p in ws.path.iterdir()) == ["prepare.py", "train.diff", "train.py"]


def test_candidates_with_free_knobs_are_fresh_draws_never_duplicates() -> None:
    free = Candidate("inner sampler", knobs={"LR": None})
    accepted, dropped = Wave(candidates=[free, free]).expand({free.key()}, cap=10)
    assert len(accepted) == 2 and not dropped


WITH_RESULT = SOURCE + "\nscore = prepare.evaluate_bpb(None, 1)\nprepare.write_result({'val_bpb': score})\n"


@pytest.mark.parametrize(
    ("search", "replace", "gone"),
    [
        ("prepare.write_result({'val_bpb': score})", "print(score)", "write_result"),
        ("prepare.write_result(", "# prepare.write_result(", "write_result"),
        ("score = prepare.evaluate_bpb(None, 1)", "score = 0.5", "evaluate_bpb"),
    ],
)
def test_edits_that_remove_the_call_writing_the_result_are_refused(
    search: str, replace: str, gone: str
) -> None:
    """Such a run trained for its whole budget and crashed with no result, a slot spent on a
    train.py that could never give one; refused, it costs none."""
    with pytest.raises(InvalidCandidate, match=f"remove train.py's call of prepare.{gone}"):
        build_source(WITH_RESULT, [Edit(search, replace)], {})


def test_a_result_call_reached_another_way_is_not_refused() -> None:
    """An import of the function itself, a call through getattr, or a frontier with no such call
    (the toy's train.py has no evaluate_bpb): the run may still write its result."""
    imported = "from prepare import write_result as save\nsave({'val_bpb': score})"
    got = "getattr(prepare, 'write_result')({'val_bpb': score})"
    for replace in (imported, got):
        build_source(WITH_RESULT, [Edit("prepare.write_result({'val_bpb': score})", replace)], {})
    build_source(SOURCE, [Edit("DEPTH = 8", "DEPTH = 9")], {})


GUARD = 'if __name__ == "__main__":\n    main()\n'
WITH_MAIN = (
    SOURCE
    + "\n\ndef finish(score):\n    prepare.write_result({'val_bpb': score})\n\n\n"
    + "def main():\n    finish(prepare.evaluate_bpb(None, 1))\n\n\n"
    + GUARD
)


@pytest.mark.parametrize(
    "replace",
    [
        "",
        'if __name__ == "__main__":\n    pass\n',
        "def run():\n    main()\n",
        "print(1)\n",
        'if __name__ == "__foo__":\n    main()\n',
        'if "__mian__" == __name__:\n    main()\n',
        'if __name__ != "__main__":\n    main()\n',
        "if False:\n    main()\n",
        "if 0:\n    main()\n",
        'if not __name__ == "__main__":\n    main()\n',
        'main() if __name__ == "__mian__" else None\n',
    ],
    ids=[
        "guard deleted",
        "guard emptied",
        "called from an uncalled function",
        "something else",
        "guard misspelt",
        "guard reversed and misspelt",
        "guard negated",
        "if False",
        "if 0",
        "guard under not",
        "a conditional expression",
    ],
)
def test_edits_that_leave_the_result_call_unreachable_are_refused(replace: str) -> None:
    """With `if __name__ == "__main__": main()` gone, train.py's run defined its functions and
    ended with no result, a crash charged to its change; refused, it costs no slot."""
    with pytest.raises(
        InvalidCandidate, match=r"call of prepare.evaluate_bpb in main\(\), which nothing run"
    ):
        build_source(WITH_MAIN, [Edit(GUARD, replace)], {})


@pytest.mark.parametrize(
    "replace",
    [
        "def run():\n    main()\n\n\nrun()\n",
        "import atexit\natexit.register(main)\n",
        "import threading\nthreading.Thread(target=main).start()\n",
        'globals()["ma" + "in"]()\n',
        'eval("main()")\n',
        "class Trainer:\n    def go(self):\n        main()\n\n\nTrainer().go()\n",
        'if "__main__" == __name__:\n    main()\n',
        'if __name__ != "__foo__":\n    main()\n',
        'if __name__ == "__foo__":\n    pass\nelse:\n    main()\n',
        "if True:\n    main()\n",
        "import os\nif os.environ.get('RUN'):\n    main()\n",
        '__name__ = "__foo__"\nif __name__ == "__foo__":\n    main()\n',
        "def run():\n    if False:\n        return\n    main()\n\n\nrun()\n",
    ],
    ids=[
        "through a called function",
        "atexit",
        "a thread's target",
        "globals",
        "eval",
        "a method",
        "guard reversed",
        "guard by inequality",
        "guard's else",
        "if True",
        "a condition only the run knows",
        "__name__ bound by train.py",
        "a dead branch in a function",
    ],
)
def test_a_result_call_reached_from_module_level_or_dynamically_is_not_refused(replace: str) -> None:
    """Only statically resolvable module-level paths are followed; anything that may reach main()
    (a callback, a method, a call by a computed name) passes, and the run is the judge."""
    build_source(WITH_MAIN, [Edit(GUARD, replace)], {})


MAIN_CALL = "    finish(prepare.evaluate_bpb(None, 1))\n"
FINISH_CALL = "    prepare.write_result({'val_bpb': score})\n"


@pytest.mark.parametrize(
    ("search", "replace", "where"),
    [
        (MAIN_CALL, "    if False:\n    " + MAIN_CALL, "evaluate_bpb in main()"),
        (MAIN_CALL, "    if 0:\n        pass\n    elif 0:\n    " + MAIN_CALL, "evaluate_bpb in main()"),
        (MAIN_CALL, '    if __name__ != "__main__":\n    ' + MAIN_CALL, "evaluate_bpb in main()"),
        (MAIN_CALL, MAIN_CALL.rstrip() + " if False else None\n", "evaluate_bpb in main()"),
        (FINISH_CALL, "    if not True:\n    " + FINISH_CALL, "write_result in finish()"),
    ],
    ids=["if False", "if 0 and elif 0", "__name__ in a function", "a conditional expression", "if not True"],
)
def test_a_result_call_under_a_condition_never_true_in_a_called_function_is_refused(
    search: str, replace: str, where: str
) -> None:
    """`if False:` over the result call in main(), which the guard calls, passed: only module-level
    conditions were evaluated, so its run trained and ended with no result, a crash charged to its
    change. Refused, naming the function, not as one nothing calls."""
    with pytest.raises(InvalidCandidate, match=re.escape(f"{where} only under a condition never true")):
        build_source(WITH_MAIN, [Edit(search, replace)], {})


@pytest.mark.parametrize(
    "replace",
    [
        "    if DEBUG:\n    " + MAIN_CALL,
        "    if not DEBUG:\n        pass\n    else:\n    " + MAIN_CALL,
        "    if True:\n    " + MAIN_CALL,
        "    if False:\n        pass\n    else:\n    " + MAIN_CALL,
        '    if __name__ == "__main__":\n    ' + MAIN_CALL,
        "    if DEBUG and False:\n        pass\n" + MAIN_CALL,
        "    try:\n        pass\n    except ValueError as __name__:\n        pass\n"
        '    if __name__ == "x":\n    ' + MAIN_CALL,
    ],
    ids=[
        "a knob",
        "a knob's else",
        "if True",
        "if False's else",
        "__name__ in a function",
        "a dead branch beside",
        "__name__ bound by except",
    ],
)
def test_a_result_call_under_a_condition_a_run_may_take_is_not_refused(replace: str) -> None:
    """`if DEBUG:` over the result call, DEBUG a knob a run may set either way, is not refused:
    only constants and __name__ compared with a string are evaluated, in a function as at module
    level."""
    frontier = WITH_MAIN.replace("import prepare\n", "import prepare\nDEBUG = False\n")
    build_source(frontier, [Edit(MAIN_CALL, replace)], {"DEBUG": True})


def test_the_shipped_trainer_and_the_offline_proposers_edits_keep_their_result_reachable() -> None:
    trainer = (Path(__file__).parent.parent / "trainer" / "train.py").read_text()
    build_source(trainer, [], {})
    applied = [e for e in STRUCTURAL_EDITS if trainer.count(e.search) == 1]
    assert applied
    for edit in applied:
        build_source(trainer, [Edit(edit.search, edit.replace)], {})
    with pytest.raises(InvalidCandidate, match="which nothing run at module level calls"):
        build_source(trainer, [Edit(GUARD, "")], {})


def test_a_frontier_that_calls_dynamically_counts_only_the_calls_it_names() -> None:
    """A frontier that may call anything (getattr) reaches only the harness functions it names:
    an edit of it that calls statically is not refused for a call the frontier never had."""
    dynamic = SOURCE + "\nname = getattr(prepare, 'SEED')\nprepare.write_result({'val_bpb': 1.0})\n"
    build_source(dynamic, [Edit("getattr(prepare, 'SEED')", "prepare.SEED")], {})


def test_a_getattr_of_a_written_out_name_does_not_let_an_unreached_result_call_pass() -> None:
    """`getattr(x, "name", default)` at module level was taken for a call by a computed name that
    might reach anything, so deleting the guard of such a train.py passed and its run ended with no
    result. Its name is a string counted as reached; only a getattr of a computed name passes."""
    frontier = WITH_MAIN.replace("import prepare\n", 'import prepare\nSEED = getattr(prepare, "SEED", 0)\n')
    with pytest.raises(InvalidCandidate, match=r"evaluate_bpb in main\(\), which nothing run"):
        build_source(frontier, [Edit(GUARD, "")], {})
    for reached in ('getattr(prepare, "main")()\n', 'getattr(prepare, "ma" + "in")()\n'):
        build_source(frontier, [Edit(GUARD, reached)], {})


@pytest.mark.parametrize(
    "method",
    ["model = torch.compile(model)", "params = list(model.modules())", "args = some.vars"],
    ids=["torch.compile", "a module's modules()", "an attribute named vars"],
)
def test_a_method_named_like_a_builtin_that_calls_by_name_does_not_let_an_orphaned_call_pass(
    method: str,
) -> None:
    """The shipped train.py's main() calls torch.compile: an attribute named like the builtin
    compile() was taken for a call by a computed name, so that anything main() reached might be
    called, and an edit that moved the result call into a function nothing calls passed, its run
    ending with no result. Only the builtins themselves (and sys.modules, importlib, runpy) are."""
    frontier = WITH_MAIN.replace("def main():\n", f"def main():\n    {method}\n")
    moved = Edit("def finish(score):\n", "def finish(score):\n    return score\n\n\ndef save(score):\n")
    with pytest.raises(
        InvalidCandidate, match=r"call of prepare.write_result in save\(\), which nothing run"
    ):
        build_source(frontier, [moved], {})
    trainer = (Path(__file__).parent.parent / "trainer" / "train.py").read_text()
    line = '    prepare.write_result({**summary, "tokens_per_second": timed_tokens / training_time})\n'
    orphaned = Edit(line, f"\n\ndef save(summary, timed_tokens, training_time):\n{line}")
    with pytest.raises(
        InvalidCandidate, match=r"call of prepare.write_result in save\(\), which nothing run"
    ):
        build_source(trainer, [orphaned], {})
