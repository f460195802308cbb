"""The rendered prompt: what it says, and that its size does not grow with the campaign."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from autoresearch.agent.fakeapi import sample_context
from autoresearch.agent.prompt import default_program_md, estimate_tokens, keep_margin, render_prompt
from autoresearch.config import AgentConfig
from autoresearch.delta_text import signed
from autoresearch.policy import NoiseAwarePolicy
from autoresearch.proposers.base import ExperimentRecord, KeepRule
from autoresearch.workspace import MAX_EDIT_CHARS, MAX_TRAIN_PY_CHARS

ROOT = Path(__file__).resolve().parents[1]


def test_prompt_holds_every_part_of_the_context() -> None:
    context = sample_context(40)
    prompt = render_prompt(context, AgentConfig(max_fix_attempts=3), "MY PROGRAM")
    stable, frontier = (b["text"] for b in prompt.system)
    assert stable.startswith("MY PROGRAM")
    assert "screen: h100 x13" in stable and "validate: h200 x3" in stable
    assert "LR: float in [0.001, 0.1] (log scale)" in stable and "fixed at most 3 times" in stable
    assert "val_bpb" in stable and "logits" in stable
    assert 'ACTIVATION = "relu2"' in frontier and "#35" in frontier  # train.py and the lineage
    user = prompt.user
    assert "screen 0.998000" in user and "0.00110" in user  # frontier value and measured noise
    assert "experiments 200" in user and "dollars 12" in user  # budget left
    assert "WARMUP=0.1" in user and 'ACTIVATION="relu2" (declared)' in user
    assert "RuntimeError: shape mismatch" in user and "#33" in user  # crashes with reasons
    assert "search text not found" in user  # the engine's rejections
    assert "about 8 experiments" in user


def test_prompt_states_the_limits_the_tool_refuses_by() -> None:
    """What propose_wave refuses is said before the model proposes: the size of train.py, and how
    often each crash shown was repaired already (each may be only max_fix_attempts times)."""
    context = sample_context(40, fix_attempts={33: 2, 13: 1})
    prompt = render_prompt(context, AgentConfig(max_fix_attempts=2), "P")
    stable, frontier = (b["text"] for b in prompt.system)
    assert f"train.py may hold at most {MAX_TRAIN_PY_CHARS:,} characters" in stable
    assert f"at most {MAX_EDIT_CHARS:,}" in stable and "fixed at most 2 times" in stable
    lines = len(context.frontier_source.splitlines())
    assert (
        f"# The current frontier train.py ({len(context.frontier_source):,} characters, {lines} lines)"
        in frontier
    )
    crashes = prompt.user.split("## Recent crashes", 1)[1].split("\n## ", 1)[0]
    assert "Repairs proposed so far (fix_of): #33 2, #13 1" in crashes
    assert "Repairs proposed" not in render_prompt(sample_context(40), AgentConfig(), "P").user


def test_stable_blocks_do_not_change_when_only_results_do() -> None:
    cfg = AgentConfig()
    before = render_prompt(sample_context(40), cfg, "P")
    context = sample_context(40)
    context.history.append(
        ExperimentRecord(99, "new result", "discard", 0.9999, "screen", {"LR": 0.02}, delta=0.0019)
    )
    context.noise_std = 0.0015
    after = render_prompt(context, cfg, "P")
    assert [b["text"] for b in after.system] == [b["text"] for b in before.system]  # cache still hits
    assert after.user != before.user


def test_size_is_bounded_however_long_the_campaign() -> None:
    cfg = AgentConfig()
    full = render_prompt(sample_context(1_000), cfg, "P").chars()  # every table at its cap
    huge_context = sample_context(10_000, rejected=[f"rejection number {i}" for i in range(10_000)])
    huge = render_prompt(huge_context, cfg, "P").chars()
    assert huge < 1.1 * full
    assert estimate_tokens(huge) < cfg.max_context_tokens * 0.7


def test_a_tight_token_bound_shrinks_the_tables() -> None:
    context = sample_context(2_000)
    roomy = render_prompt(context, AgentConfig(max_context_tokens=60_000), "P")
    tight = render_prompt(context, AgentConfig(max_context_tokens=3_000), "P")
    assert tight.chars() < roomy.chars()
    assert estimate_tokens(tight.chars()) <= 3_000 * 0.7


def test_long_descriptions_and_newlines_stay_on_one_line() -> None:
    context = sample_context(5)
    context.history[-1] = dataclasses.replace(
        context.history[-1], description="line one\nline two " + "x" * 1000
    )
    prompt = render_prompt(context, AgentConfig(), "P")
    row = next(line for line in prompt.user.splitlines() if line.startswith("#4 "))
    assert "line one line two" in row and len(row) < 400


def _record(number: int, description: str, status: str = "discard", **fields: object) -> ExperimentRecord:
    val = None if status in ("crash", "invalid", "queued") else 1.0 - number * 1e-6  # the newest best
    return ExperimentRecord(number, description, status, val, "screen", {}, source="claude", **fields)  # type: ignore[arg-type]


def test_ideas_that_scrolled_out_of_the_tables_are_still_listed() -> None:
    """On 160 GPUs 300 to 400 experiments are in flight: the model must see them all, and the ideas
    that finished long ago, or it proposes them again (waves the engine drops as duplicates)."""
    finished = [_record(n, f"idea number {n}") for n in range(200)]
    engine = [dataclasses.replace(_record(300, "re-run trial 7: idea number 7"), source="engine")]
    flying = [_record(n, f"idea number {n}", "queued") for n in range(301, 450)]
    context = sample_context(0, history=finished + engine + flying, lineage=[])
    user = render_prompt(context, AgentConfig(), "P").user
    assert "idea number 3\n" in user  # finished long ago, beyond the recent and best tables
    assert "idea number 320\n" in user  # in flight, beyond the 12 the in-flight table shows
    assert "re-run trial 7" not in user.split("## Other ideas")[1]  # the engine's, not an idea


def test_one_description_at_other_settings_is_other_ideas() -> None:
    """The list kept one idea per description: "tune LR" tried at three values showed one of them,
    and the model could not see that the other two were tried."""
    tries = [
        dataclasses.replace(_record(n, "tune LR"), knobs={"MADE_UP_LR": lr})
        for n, lr in enumerate((0.01, 0.02, 0.03, 0.03))
    ]
    filler = [_record(n, f"idea number {n}") for n in range(10, 60)]  # push the tries out of the tables
    context = sample_context(0, history=tries + filler, lineage=[])
    listed = render_prompt(context, AgentConfig(), "P").user.split("## Other ideas")[1]
    assert all(f"MADE_UP_LR={lr}" in listed for lr in (0.01, 0.02, 0.03))
    assert listed.count("MADE_UP_LR=0.03") == 1  # the same idea twice is listed once


def test_why_a_trial_gave_no_result_is_shown_whole_enough_to_act_on() -> None:
    over = (
        "crash: exit 1: prepare.OverBudget: train.py trained for 391.2 s by the harness's count "
        "(2400 training batches in 600 steps, stalls over 0.42 s left out), over the 300 s budget "
        "(at most 337.8 s is allowed): its val_bpb 0.991000 is not a result"
    )
    crash = _record(1, "warm-up steps outside the timer", "crash", reason=over)
    invalid = _record(2, "gelu MLP", "invalid", reason="edit 1: search block does not occur in train.py")
    context = sample_context(0, history=[crash, invalid], lineage=[])
    user = render_prompt(context, AgentConfig(), "P").user
    assert "over the 300 s budget" in user
    assert "search block does not occur" in user


def test_a_change_that_is_no_number_is_said_so_as_the_report_says_it() -> None:
    """A study edited, or written by another version, can hold a delta that is NaN: Claude was shown
    "+nan", which reads as a figure, where report.html says it is not a number."""
    best = dataclasses.replace(_record(1, "the best result", delta=float("nan")), val_bpb=0.5)  # in a table
    listed = _record(2, "an idea scrolled out of the tables", delta=float("nan"))
    filler = [_record(n, f"idea number {n}") for n in range(10, 60)]  # push #2 out of the tables
    user = render_prompt(
        sample_context(0, history=[best, listed, *filler], lineage=[]), AgentConfig(), "P"
    ).user
    assert "nan" not in user.replace(signed(float("nan")), "")
    assert signed(float("nan")) in _section_rows(user, "Best results per tier")[0]
    assert f"#2 discard {signed(float('nan'))}: an idea scrolled out" in user.split("## Other ideas")[1]


def _section_rows(user: str, title: str) -> list[str]:
    """The rows of one table of the prompt (its header line left out)."""
    body = user.split(f"## {title}\n", 1)[1].split("\n\n", 1)[0]
    return body.splitlines()[1:]


def test_most_recent_results_are_those_that_came_in_last_and_measured_something() -> None:
    """On a fleet trials end out of order, and skipped re-runs and twins end in a batch: the table
    must show the latest measurements, not the highest numbers."""
    quick = [_record(n, f"quick idea {n}", ended_at=1000.0 + n) for n in range(10, 40)]
    slow = [_record(n, f"slow idea {n}", ended_at=5000.0 + n) for n in range(10)]  # long runs, last in
    skipped = [
        dataclasses.replace(
            _record(
                n, f"re-run trial {n - 40}: quick idea", "skip", ended_at=9000.0 + n, reason="not needed"
            ),
            val_bpb=None,
            source="engine",
        )
        for n in range(40, 60)
    ]
    twin = dataclasses.replace(
        _record(60, "wider MLP", "skip", ended_at=9100.0, reason="twin of trial 12"), val_bpb=None
    )
    context = sample_context(0, history=quick + slow + skipped + [twin], lineage=[])
    user = render_prompt(context, AgentConfig(), "P").user
    rows = _section_rows(user, "Most recent results")
    numbers = [int(row.split()[0].lstrip("#")) for row in rows]
    assert numbers[:10] == list(range(9, -1, -1))  # the slow runs came in last
    assert numbers[10:] == list(range(39, 24, -1))  # then the quick ones, newest first
    assert not any(" skip " in row for row in rows)  # no measurement: not a result
    assert "#60 skip: wider MLP  [twin of trial 12]" in user.split("## Other ideas")[1]  # listed, and why


def test_knob_values_are_shown_to_four_significant_digits_and_a_draw_names_them_once() -> None:
    """The sampler's floats printed whole cost 17 digits each, and an inner-sampler row listed its
    knobs' names in the description, then again with their values."""
    drawn = {"EMBEDDING_LR": 0.5568500963984383, "MATRIX_LR": 0.041234123412, "WARMUP": 0.1, "DEPTH": 9}
    draw = dataclasses.replace(
        _record(1, "inner sampler: " + ", ".join(drawn), ended_at=2.0), knobs=drawn, source="inner-sampler"
    )
    grid = dataclasses.replace(
        _record(2, "lr x wd [MATRIX_LR=0.041234123412, WD=0.1]", ended_at=1.0),
        knobs={"MATRIX_LR": 0.041234123412, "WD": 0.1},
    )
    moved = _record(3, "EMBEDDING_LR 0.6 -> 0.5568500963984383", ended_at=0.5)
    context = sample_context(0, history=[draw, grid, moved], lineage=[])
    context.knob_values = {"EMBEDDING_LR": 0.6123456789, "MATRIX_LR": 0.04, "WARMUP": 0.1, "DEPTH": 8}
    user = render_prompt(context, AgentConfig(), "P").user
    rows = _section_rows(user, "Most recent results")
    assert rows[0].endswith("inner sampler  {EMBEDDING_LR=0.5569, MATRIX_LR=0.04123, DEPTH=9}")
    assert rows[1].endswith("lr x wd [MATRIX_LR=0.04123, WD=0.1]")  # its setting named once
    assert rows[2].endswith("EMBEDDING_LR 0.6 -> 0.5569")
    assert "\nEMBEDDING_LR=0.6123\n" in user  # the frontier's value
    assert "0.55685" not in user and "0.0412341" not in user and "0.612345" not in user


def test_the_keep_rule_is_told_with_the_campaigns_numbers() -> None:
    """The agent aims at what can be kept: the engine's min_delta, z's and re-runs, not a fixed
    "twice the noise" (min_delta alone decides while the noise is unknown)."""
    rule = KeepRule(min_delta=0.0031, promote_z=1.5, keep_z=2.5, validate_seeds=3, confirm_tier="screen")
    prompt = render_prompt(sample_context(keep_rule=rule), AgentConfig(), "P")
    stable = prompt.system[0]["text"]
    assert "min_delta 0.0031" in stable and "1.5 x the standard deviation" in stable
    assert "3 other seeds on the screen tier" in stable and "2.5 standard errors" in stable
    unknown = render_prompt(sample_context(keep_rule=rule, noise_std=None), AgentConfig(), "P").user
    assert (
        "not known yet; until it is, a change must beat the frontier by more than min_delta 0.0031" in unknown
    )
    at_once = KeepRule(validate_seeds=0, confirm_tier=None)
    stable = render_prompt(sample_context(keep_rule=at_once), AgentConfig(), "P").system[0]["text"]
    assert "kept at once, on its one run" in stable and "other seeds" not in stable


@pytest.mark.parametrize(
    ("rule", "noise"),
    [
        (KeepRule(), 0.0011),
        (KeepRule(keep_z=3.0, validate_seeds=4), 0.002),
        (KeepRule(), 0.0001),  # min_delta decides
        (KeepRule(promote_z=1.5, validate_seeds=0, confirm_tier=None), 0.0011),  # kept on screening
    ],
)
def test_the_margin_the_prompt_states_is_the_policys(rule: KeepRule, noise: float) -> None:
    """A change whose runs beat the frontier's by just over the stated margin is kept by the
    engine's own policy, and one just under it is not: re-runs against as many frontier runs, or
    where nothing is confirmed, one screening run against one."""
    prompt = render_prompt(sample_context(keep_rule=rule, noise_std=noise), AgentConfig(), "P")
    margin = keep_margin(rule, noise)
    assert f"more than about {margin:.5f}" in prompt.user
    policy = NoiseAwarePolicy(rule.min_delta, rule.promote_z, rule.keep_z)

    def kept(gain: float) -> bool:
        if rule.confirm_tier:
            runs = rule.validate_seeds
            return policy.confirm([1.0 - gain] * runs, [1.0] * runs, noise).better
        return policy.screen(1.0 - gain, [1.0], noise).better

    assert kept(1.01 * margin) and not kept(0.99 * margin)


def test_the_harness_calls_program_md_says_to_keep_are_those_train_py_makes() -> None:
    """A run without them has no result (the runner's crash "the harness wrote no result"): the
    agent is told which they are, so the list must follow train.py."""
    named = set(re.findall(r"`prepare\.(\w+)`", default_program_md())) - {"py"}  # (the file)
    called = set(re.findall(r"\bprepare\.(\w+)\(", (ROOT / "trainer" / "train.py").read_text()))
    assert {"evaluate_bpb", "write_result"} <= named <= called


def test_program_md_says_an_equal_result_is_discarded_as_the_policy_does() -> None:
    """It once called removing code for an equal result "a win": the engine discards it."""
    assert "for an equal\n  result, is discarded" in default_program_md()
    policy = NoiseAwarePolicy(KeepRule().min_delta)
    assert not policy.screen(1.0, [1.0, 1.0], noise=None).better
    assert not policy.screen(1.0, [1.0, 1.0], noise=0.001).better
