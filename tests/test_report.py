"""report.html: what a campaign found and what it cost, derived from the study and its folder."""

from __future__ import annotations

import html
import io
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import optuna
import pytest
from anthropic.types import Usage
from engine_helpers import (
    INTAKE_NOW,
    REPO,
    add_run,
    compose_toy,
    confirming,
    load,
    lucky_seeds_study,
    open_intake,
    read_tsv,
    run_campaign,
    run_scripted,
)
from rich.console import Console

from autoresearch.agent.usage import UsageLedger
from autoresearch.budget import PRICE_ATTR
from autoresearch.files import replacing, write_atomic
from autoresearch.plot import plot_title, progress_figure, screen_points
from autoresearch.proposals import Candidate, Edit, Wave
from autoresearch.report import Speedup, build_report, busy_hours, write_report
from autoresearch.report_html import render_html
from autoresearch.report_text import headline
from autoresearch.results import compare, rows
from autoresearch.study import finished
from autoresearch.thresholds import THRESHOLDS_ATTR

TOY_THRESHOLDS = {"min_delta": 0.0005, "promote_z": 1.0, "keep_z": 2.0}  # conf's, as the toy leaves them


def test_busy_hours_is_the_union_of_the_intervals() -> None:
    # Two overlapping runs (0-1.5 h together), a gap, one more half hour; one run inside another.
    spans = [(0, 3600), (1800, 5400), (7200, 9000), (100, 200)]
    assert busy_hours(spans) == 2.0
    assert busy_hours([]) == 0.0


def test_a_finished_campaign_ends_with_a_report_of_its_keeps_and_costs(tmp_path: Path) -> None:
    price = "cluster.partitions.local.price_per_gpu_hour=5000"  # seconds of toy runs: dollars to see
    out = run_campaign(tmp_path, "campaign.budget.max_experiments=8", price)
    assert out.returncode == 0, out.stderr
    campaign = tmp_path / "toy"
    page = (campaign / "report.html").read_text()
    assert (
        str(campaign / "report.html") in (campaign / "controller.log").read_text()
    )  # the last lines say where
    why = json.loads((campaign / "controller.json").read_text())["why"]  # written after the page
    assert why.startswith("experiments budget") and "Controller: stopped " in page
    assert f": {html.escape(why)}.\n" in page  # why it ended, as `status` says it

    study = load(campaign)
    report = build_report(study, campaign, compose_toy(tmp_path, price))
    table = read_tsv(campaign / "results.tsv")
    kept = [r for r in table if r["status"] == "keep"]
    assert [k.trial for k in report.kept] == [int(r["trial"]) for r in kept]
    for k in report.kept:  # each keep with the diff it ran with
        assert k.diff == (campaign / "experiments" / f"{k.trial:05d}" / "train.diff").read_text()
        assert html.escape(k.description) in page
        assert html.escape(k.diff.splitlines()[-1]) in page

    # Launched and ended (the toy loses none to infrastructure): rejected proposals never ran.
    ran = [t.user_attrs for t in finished(study) if "exp_dir" in t.user_attrs]
    hours = (
        sum(a["ended_at"] - a["started_at"] for a in ran) / 3600
    )  # the study's times, not the tsv's rounded ones
    assert report.ran == len(ran) == len([r for r in table if r["started_at"]])
    assert report.speedup.sequential_hours == pytest.approx(hours)
    assert report.gpu_dollars == pytest.approx(5000 * hours)
    repriced = build_report(study, campaign, compose_toy(tmp_path))  # config.yaml's price since 0
    assert repriced.gpu_dollars == pytest.approx(5000 * hours)  # each hour at its launch price
    assert f"${report.gpu_dollars:,.2f}" in page
    assert "CPU-hours / tokens" in page  # the toy's slots are CPU processes, not GPUs
    # Two local slots: in flight no longer than the runs took back to back, and no more than twice as fast.
    assert 0 < report.speedup.factor <= 2.0 + 1e-6
    baselines = [float(r["val_bpb"]) for r in table if r["status"] == "baseline"]
    screen = report.tiers[0]
    assert screen.tier == "screen" and screen.baseline == pytest.approx(baselines, abs=1e-6)
    # The frontier on the screen tier: the last keep's re-runs, the two that confirmed it (one local
    # tier) and its run at its screening seed if the budget left room for it.
    assert kept, table
    reruns = [float(r["val_bpb"]) for r in table if r["validates"] == kept[-1]["trial"]]
    assert screen.frontier == pytest.approx(reruns, abs=1e-6)
    assert len(confirming(study.trials, int(kept[-1]["trial"]))) == 2
    assert screen.frontier_trial == int(kept[-1]["trial"])
    assert 'src="data:image/png;base64,' in page  # the plot travels inside the page
    decided = [t.user_attrs for t in finished(study) if t.user_attrs.get("status") in ("keep", "discard")]
    assert decided and all(a[THRESHOLDS_ATTR] == TOY_THRESHOLDS for a in decided)
    assert "changed" not in report.settings["keep rule"]  # (one rule throughout: none to name)
    assert "val_bpb: validation bits per byte, lower is better; ± is the standard deviation" in page


def test_two_writers_of_one_file_at_once_each_replace_it_whole(tmp_path: Path) -> None:
    """`autoresearch report` redraws progress.png and report.html while the controller redraws
    them too: each writer has a temporary of its own. They shared one, so one's rename published
    the other's half-written file and the other's then failed (FileNotFoundError: in the
    controller, the end of the campaign)."""
    path = tmp_path / "progress.png"
    with replacing(path) as tmp:
        tmp.write_bytes(b"A" * 1000)
        other = threading.Thread(target=write_atomic, args=(path, b"B"))  # another writer's whole
        other.start()  # write, in the middle of this one
        other.join()
        assert path.read_bytes() == b"B"
    assert path.read_bytes() == b"A" * 1000
    assert list(tmp_path.glob("*.tmp")) == []


def test_a_rejected_proposal_is_no_experiment_that_ran(tmp_path: Path) -> None:
    """A proposal the intake rejects never ran: it adds no experiment, no slot-hours, no pool
    (a CPU-only campaign stays in CPU-hours) and no result time."""
    intake = open_intake(tmp_path)
    study = intake.ledger.study
    add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen", run_key="start")
    add_run(study, 1.9, 100.0, 60.0, status="discard", tier="screen", run_key="b")
    nowhere = Candidate("nowhere", "", knobs={"LR": 0.03}, tier="h200")
    intake.wave(Wave(rationale="", candidates=[nowhere], source="test"))
    assert study.trials[-1].user_attrs["ended_at"] == INTAKE_NOW  # rejected after both runs ended

    report = build_report(study, intake.campaign_dir, intake.cfg)
    assert report.counts == {"baseline": 1, "discard": 1, "invalid": 1}
    assert report.ran == 2
    assert report.gpu_hours == {"local": pytest.approx(120 / 3600)}
    assert report.gpu_types == {"local": ("cpu",)}
    assert report.last_result_at == 161.0
    page = render_html(report, None)
    assert "CPU-hours / tokens" in page and "these 2 experiments" in page
    assert "in a single slot (one CPU slot), these 2" in page  # (not "one GPU": none ran on one)


def test_the_plot_counts_the_experiments_the_report_counts(tmp_path: Path) -> None:
    """A run lost or cancelled before it started on a node (its job never left the queue) has no
    start: no experiment that ran, in the plot's title as in the report's speed-up."""
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen", partition="local")
    add_run(study, None, 100.0, 5.0, status="crash", tier="screen", partition="local", reason="exit 1")
    for status in ("lost", "cancelled"):  # as `Campaign._slot_held` records one never started
        add_run(study, None, 200.0, 0.0, status=status, tier="screen", partition="local", started_at=None)
    report = build_report(study, tmp_path, compose_toy(tmp_path))
    assert report.ran == 2 and sum(report.counts.values()) == 4
    assert plot_title(rows(study), "toy") == "toy: 2 experiments, 1 crashed"


def test_a_report_before_any_experiment_ran_says_so_instead_of_a_speed_up(tmp_path: Path) -> None:
    """A report written while the first baselines wait in the queue said "these 0 experiments need
    0.00 h ... a speed-up of 0.0x", as if the campaign were slower than a sequential loop."""
    study = optuna.create_study(study_name="toy")
    add_run(study, None, 200.0, 0.0, status="lost", tier="screen", partition="local", started_at=None)
    page = render_html(build_report(study, tmp_path, compose_toy(tmp_path)), None)
    speedup = page.split("Speed-up against a sequential loop</h2>")[1].split("<h2>")[0]
    assert speedup.strip() == "<p>No experiment has run yet.</p>"


def test_a_campaign_slower_than_a_sequential_loop_says_so_and_why(tmp_path: Path) -> None:
    """Two experiments that each waited ten minutes in a queue before their one-minute run: the
    wall time they were in flight is longer than their runs back to back. The page said "a
    speed-up of 0.1x" and nothing more, a loss with no explanation; it now says the campaign was
    slower and what made it so."""
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 100.0, 60.0, status="baseline", tier="screen", started_at=700.0, ended_at=760.0)
    add_run(study, 1.9, 800.0, 60.0, status="discard", tier="screen", started_at=1400.0, ended_at=1460.0)
    report = build_report(study, tmp_path, compose_toy(tmp_path))
    assert report.speedup.factor == pytest.approx(120 / 1320)
    assert report.speedup.waiting_hours == pytest.approx(1200 / 3600)
    page = render_html(report, None)
    speedup = page.split("Speed-up against a sequential loop</h2>")[1].split("<h2>")[0]
    assert "a speed-up of" not in speedup
    assert "in flight for <b>0.37 h</b>, longer: <b>0.09x, slower than the sequential loop</b>" in speedup
    assert headline(report)[1].endswith(
        ": 0.09x, slower than the sequential loop; they waited 0.33 h between launch and start (report.html says more)"
    )
    assert "waited 0.33 h in all between their launch and their start" in speedup
    assert "few experiments" in speedup


def test_the_plot_places_each_result_among_the_experiments_that_ran(tmp_path: Path) -> None:
    """The x axis counts experiments as the title does: a skipped candidate (it never ran) takes no
    place, so the last point is at the title's count, not beyond it (the demo's 25 experiments were
    drawn out to 26 past two skips)."""
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen", partition="local")
    add_run(study, None, 70.0, 0.0, status="skip", tier="screen", partition="", started_at=None)
    add_run(study, 1.9, 100.0, 60.0, status="discard", tier="screen", partition="local")
    add_run(study, 1.8, 200.0, 60.0, status="keep", tier="screen", partition="local", version="v1")
    table = rows(study)
    assert [(n, r["status"]) for n, r in screen_points(table)] == [
        (1, "baseline"),
        (2, "discard"),
        (3, "keep"),
    ]
    assert plot_title(table, "toy") == "toy: 3 experiments, 0 crashed"
    fig = progress_figure(table, "toy")
    try:  # experiments are whole: no tick at 2.5 on an axis of 3 (the demo's plot had them)
        low, high = fig.axes[0].get_xlim()
        assert [t for t in fig.axes[0].get_xticks() if low <= t <= high] == [1, 2, 3]
    finally:
        plt.close(fig)


def test_the_report_counts_llm_tokens_and_dollars_from_the_ledger(tmp_path: Path) -> None:
    cfg = compose_toy(tmp_path, "agent.price_input=3", "agent.price_output=15")
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen")
    ledger = UsageLedger(tmp_path, cfg.agent)
    for wave in (1, 2):
        usage = Usage(
            input_tokens=1_000_000,
            output_tokens=100_000,
            cache_read_input_tokens=50_000,
            cache_creation_input_tokens=None,
        )
        ledger.record(model="claude-test", call=f"c{wave}", usage=usage, wave=wave, turn=0)
    ledger.record_error(model="claude-test", call="c3", wave=3, turn=0, error="overloaded")

    report = build_report(study, tmp_path, cfg)
    assert report.llm["input_tokens"] == 2_000_000 and report.llm["output_tokens"] == 200_000
    dollars = 2 * (3 + 0.1 * 15 + 0.05 * cfg.agent.price_cache_read)
    assert abs(report.llm["dollars"] - dollars) < 1e-9
    page = render_html(report, None)
    assert "2,000,000 input, 200,000 output" in page and f"${dollars:,.2f}" in page
    assert "2 API calls in 3 waves, 1 failed" in page


def test_validation_on_other_hardware_is_reported_with_its_seeds(tmp_path: Path) -> None:
    cfg = compose_toy(tmp_path)
    study = optuna.create_study(study_name="toy")
    for i, value in enumerate((2.00, 2.02)):
        add_run(study, value, 10.0 * i, 60.0, status="baseline", tier="screen", run_key="start")
        add_run(
            study,
            value - 0.10,
            10.0 * i,
            90.0,
            status="baseline",
            tier="validate",
            pool="h200",
            run_key="start",
        )
    kept = {"commit": "abc123", "description": "wider MLP", "run_key": "wider"}
    add_run(study, 1.95, 100.0, 60.0, status="keep", tier="screen", **kept)
    waiting = next(t for t in build_report(study, tmp_path, cfg).tiers if t.tier == "validate")
    assert waiting.frontier == [1.90, 1.92] and waiting.frontier_trial is None  # not yet re-run on h200
    for value in (1.88, 1.86):
        rerun = {"validates": 4, "pool": "h200", "run_key": "wider"}
        add_run(study, value, 200.0, 90.0, status="rerun", tier="validate", **rerun)
    # then the new frontier on the screen tier's GPUs, where its values are of another scale
    add_run(study, 1.97, 250.0, 60.0, status="rerun", tier="screen", validates=4, run_key="wider")
    add_run(study, None, 300.0, 5.0, status="crash", tier="screen", reason="exit 1: NaN loss")

    report = build_report(study, tmp_path, cfg)
    assert [k.reruns for k in report.kept] == [{"screen": [1.97], "validate": [1.88, 1.86]}]
    validate = next(t for t in report.tiers if t.tier == "validate")
    assert [t.tier for t in report.tiers] == ["screen", "validate"]
    assert validate.baseline == [1.90, 1.92] and validate.frontier == [1.88, 1.86]
    assert validate.frontier_trial == 4 and validate.change == pytest.approx(1.87 - 1.91)
    assert report.gpu_hours == pytest.approx({"local": (4 * 60.0 + 5.0) / 3600, "h200": 4 * 90.0 / 3600})
    assert report.failure_reasons == [("exit 1: NaN loss", 1)]
    page = render_html(report, None)
    assert f"on validate: {statistics.fmean([1.88, 1.86]):.6f} ± " in page and "(2 seeds)" in page
    assert "on screen: 1.970000;" in page


def test_hours_on_a_partition_config_yaml_no_longer_names_are_not_priced_as_free(tmp_path: Path) -> None:
    """A campaign resumed on other partitions: hours run on an old one cost the price they were
    launched at; those launched before prices were recorded have no price in config.yaml, and
    the page says so rather than $0.00."""
    cfg = compose_toy(tmp_path, "cluster.partitions.local.price_per_gpu_hour=2")
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 3600.0, status="baseline", tier="screen")
    add_run(study, 1.9, 0.0, 1800.0, status="baseline", tier="validate", pool="h200", gpu_type="H200")
    add_run(
        study,
        1.8,
        0.0,
        7200.0,
        status="discard",
        tier="validate",
        pool="a100",
        gpu_type="A100",
        **{PRICE_ATTR: 3.0},
    )
    report = build_report(study, tmp_path, cfg)
    assert report.gpu_hours == pytest.approx({"local": 1.0, "h200": 0.5, "a100": 2.0})
    assert report.gpu_dollars == 8.0  # the a100's hours at the price they were launched at
    page = render_html(report, None)
    assert "<td>h200 (H200)</td><td class=num>0.50</td><td class=num>? (no price" in page
    assert "<td>a100 (A100)</td><td class=num>2.00</td><td class=num>$6.00</td>" in page
    assert "<td>local (cpu)</td><td class=num>1.00</td><td class=num>$2.00</td>" in page
    assert "<b>$8.00 + ? for 0.50 GPU-hours on H200</b>" in page  # (which hours: as status says)


def test_a_partly_priced_pool_shows_the_priced_dollars_and_which_hours_have_no_price(tmp_path: Path) -> None:
    """A partition config.yaml no longer names, with runs launched at a recorded price and runs an
    older version launched without one: its whole cost read "?", though most of its hours had a
    price. It now shows those dollars, and the hours left unpriced with the GPU type they ran on."""
    cfg = compose_toy(tmp_path, "cluster.partitions.local.price_per_gpu_hour=2")
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 100.0, 3600.0, status="baseline", tier="screen")
    older = {"status": "baseline", "tier": "validate", "pool": "a100"}
    add_run(study, 1.9, 100.0, 1800.0, gpu_type="H100", **older)  # (no price recorded)
    priced = {"status": "discard", "tier": "validate", "pool": "a100", PRICE_ATTR: 3.0}
    add_run(study, 1.8, 200.0, 7200.0, gpu_type="A100", **priced)
    report = build_report(study, tmp_path, cfg)
    assert report.unpriced_hours == {"a100": {"H100": pytest.approx(0.5)}}
    page = render_html(report, None)
    assert (
        "<td>a100 (H100, A100)</td><td class=num>2.50</td><td class=num>$6.00 + ? for 0.50 GPU-hours "
        "on H100 (no price: launched before prices were recorded, on a partition config.yaml no "
        "longer names)</td>"
    ) in page
    assert "<b>$8.00 + ? for 0.50 GPU-hours on H100</b>" in page


def test_a_pool_that_ran_on_several_gpu_types_is_labelled_with_each(tmp_path: Path) -> None:
    """A partition whose gpu_type changed between its runs (on a resume): its cost row named only
    the GPU type of its last run, as if every hour had been on it."""
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 100.0, 3600.0, status="baseline", tier="screen", pool="h100", gpu_type="A100")
    add_run(study, 1.9, 200.0, 3600.0, status="discard", tier="screen", pool="h100", gpu_type="H100")
    add_run(study, 1.8, 300.0, 3600.0, status="discard", tier="screen", pool="h100", gpu_type="A100")
    report = build_report(study, tmp_path, compose_toy(tmp_path))
    assert report.gpu_types == {"h100": ("A100", "H100")}
    page = render_html(report, None)
    assert "<td>h100 (A100, H100)</td><td class=num>3.00</td>" in page
    assert "GPU-hours / tokens" in page and "(one GPU)" in page


def test_a_campaign_whose_baselines_all_crashed_says_so(tmp_path: Path) -> None:
    """Crashed baselines finished, with no result: the page must not say none has finished, and
    the speed-up and cost count them (their slots were held)."""
    study = optuna.create_study(study_name="toy")
    for i in range(3):
        add_run(study, None, 10.0 * i, 5.0, status="crash", tier="screen", kind="baseline", reason="exit 1")
    report = build_report(study, tmp_path, compose_toy(tmp_path))
    assert report.tiers == [] and report.counts == {"crash": 3} and report.ran == 3
    assert report.gpu_hours == pytest.approx({"local": 15 / 3600})
    assert report.failure_reasons == [("exit 1", 3)]
    page = render_html(report, None)
    assert "No baseline has a result yet (those that failed are under Failures)." in page
    assert "has finished" not in page and "3 finished trials: 3 crash." in page
    fresh = render_html(
        build_report(optuna.create_study(study_name="toy"), tmp_path, compose_toy(tmp_path)), None
    )
    assert (
        "No baseline has a result yet.</p>" in fresh and "Failures" not in fresh
    )  # (none failed: none to point to)


def test_thresholds_a_resume_changed_are_said_with_the_trials_each_judged(tmp_path: Path) -> None:
    """The report stated today's min_delta, promote_z and keep_z as the rule of every decision,
    though a resume had changed them: the decisions before were judged by others."""
    study = optuna.create_study(study_name="toy")
    looser = {**TOY_THRESHOLDS, "min_delta": 0.002}
    for number, numbers in enumerate([looser, looser, None, TOY_THRESHOLDS]):  # (None: not recorded)
        judged = {} if numbers is None else {THRESHOLDS_ATTR: numbers}
        add_run(study, 1.0, 10.0 * number, 5.0, status="discard", tier="screen", reason="-0.001", **judged)
    rule = build_report(study, tmp_path, compose_toy(tmp_path)).settings["keep rule"]
    assert rule.startswith("promoted when its one run beats the frontier")
    assert rule.endswith(
        "(today's config); the thresholds changed during the campaign; decisions were judged by "
        "trials 0-1: min_delta 0.002, promote_z 1, keep_z 2; trial 3: min_delta 0.0005, promote_z 1, keep_z 2"
    )
    assert "decisions were judged by trials 0-1: min_delta 0.002" in html.unescape(
        render_html(build_report(study, tmp_path, compose_toy(tmp_path)), None)
    )


def test_a_resume_that_changed_min_delta_is_said_in_its_campaigns_report(tmp_path: Path) -> None:
    """End to end: each decision records the numbers it was judged by, across a resume."""
    first = run_campaign(tmp_path, "campaign.budget.max_experiments=4", "campaign.min_delta=0.002")
    assert first.returncode == 0, first.stderr
    assert run_campaign(tmp_path, "campaign.budget.max_experiments=8").returncode == 0
    study = load(tmp_path / "toy")
    judged = [
        t.user_attrs[THRESHOLDS_ATTR]["min_delta"] for t in finished(study) if THRESHOLDS_ATTR in t.user_attrs
    ]
    assert judged[0] == 0.002 and judged[-1] == 0.0005, judged
    rule = build_report(study, tmp_path / "toy", compose_toy(tmp_path)).settings["keep rule"]
    assert "the thresholds changed during the campaign" in rule
    assert rule.index("min_delta 0.002") < rule.index("min_delta 0.0005, promote_z 1, keep_z 2")


def test_what_the_agent_wrote_is_escaped_not_rendered(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen")
    evil = '<script>alert("x")</script>'
    exp = tmp_path / "experiments" / "00001"
    exp.mkdir(parents=True)
    (exp / "train.diff").write_text(f"--- a\n+++ b\n@@ -1 +1 @@\n-x = 1\n+x = 2  # {evil}\n")
    add_run(
        study,
        1.9,
        70.0,
        60.0,
        status="keep",
        tier="screen",
        description=evil,
        hypothesis=evil,
        exp_dir="experiments/00001",
    )
    add_run(study, None, 140.0, 5.0, status="crash", tier="screen", reason=evil)
    page = render_html(build_report(study, tmp_path, compose_toy(tmp_path)), None)
    assert "<script" not in page
    assert page.count(html.escape(evil)) == 4  # description, hypothesis, diff line, crash reason


def test_a_report_embeds_only_the_plot_it_drew(tmp_path: Path) -> None:
    """A campaign with no results yet draws no plot: a progress.png already in the folder the
    report is written to (another campaign's, reported to the same --out) is not embedded."""
    cfg = compose_toy(tmp_path)
    out = tmp_path / "reports"
    out.mkdir()
    (out / "progress.png").write_bytes(b"\x89PNG another campaign's plot")
    write_report(optuna.create_study(), tmp_path / "toy", cfg, out)
    page = (out / "report.html").read_text()
    assert "data:image/png" not in page


def test_the_report_command_rewrites_the_page_and_refuses_other_folders(tmp_path: Path) -> None:
    assert run_campaign(tmp_path, "campaign.budget.max_experiments=3").returncode == 0
    campaign = tmp_path / "toy"
    (campaign / "report.html").unlink()
    cfg = compose_toy(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "autoresearch.report", str(campaign)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == str(campaign / "report.html")

    def page(path: Path) -> list[str]:  # all but the line that says when it was written
        return [line for line in path.read_text().splitlines() if not line.startswith("Written ")]

    by_command = page(campaign / "report.html")  # from config.yaml, as saved
    assert any(line.startswith("Controller: stopped ") for line in by_command)  # from controller.json
    write_report(load(campaign), campaign, cfg)
    assert page(campaign / "report.html") == by_command  # from the config itself
    refused = subprocess.run(
        [sys.executable, "-m", "autoresearch.report", str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "not a campaign folder" in refused.stderr
    # a folder the report cannot be written in (here its place taken by a folder; a read-only
    # mount alike): one line, exit 2, the campaign's files as they were, no temporary left; and
    # --out writes the same report elsewhere
    (campaign / "report.html").unlink()
    (campaign / "report.html").mkdir()
    journal = (campaign / "study.journal").read_bytes()

    def report(*args: str, largest_file: int | None = None) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "autoresearch.report", str(campaign), *args]
        limit = (
            (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (largest_file,) * 2)) if largest_file else None
        )
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, preexec_fn=limit)

    refused = report()
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        f"error: cannot write the report in {campaign}: Is a directory ({campaign / 'report.html'}); "
        "write it elsewhere with --out DIR"
    ]
    assert (campaign / "study.journal").read_bytes() == journal
    assert sorted(p.name for p in campaign.glob("*.tmp")) == []  # the failed write's temporary removed
    elsewhere = tmp_path / "mine" / "toy-report"
    out = report("--out", str(elsewhere))
    assert out.returncode == 0 and out.stdout.splitlines()[0] == str(elsewhere / "report.html"), out.stderr
    assert page(elsewhere / "report.html") == by_command and (elsewhere / "progress.png").is_file()
    (campaign / "progress.png").unlink()
    (campaign / "progress.png").mkdir()
    refused = report("--out", str(campaign))
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        f"error: cannot write the report in {campaign}: Is a directory ({campaign / 'progress.png'}); "
        "choose another --out DIR"
    ]
    assert sorted(p.name for p in campaign.glob("*.tmp*")) == []  # the plot's temporary removed too
    # an --out that names a file: said to be no folder (mkdir's "File exists" read as if the page did)
    refused = report("--out", str(campaign / "config.yaml"))
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        f"error: cannot write the report in {campaign / 'config.yaml'}: Not a directory; choose another --out DIR"
    ]
    # a write whose system error names no file (a full disk; here a file-size limit): the file it
    # was writing named all the same, no "(None)"
    full = tmp_path / "full"
    refused = report("--out", str(full), largest_file=2000)
    [line] = refused.stderr.splitlines()
    assert refused.returncode == 2 and re.fullmatch(
        f"error: cannot write the report in {full}: File too large \\({full}/(report.html|progress.png)\\); "
        "choose another --out DIR",
        line,
    ), line
    assert list(full.iterdir()) == []  # the temporary removed


def test_a_run_that_ended_with_a_nan_val_bpb_is_not_said_to_be_ok_among_the_failures(tmp_path: Path) -> None:
    """A train.py that diverged ends well and prints val_bpb nan: it is a crash, and its reason read
    "ok: val_bpb is nan" in results.tsv, the report's Failures and W&B, a success among failures."""
    nan = Candidate("diverges", edits=[Edit('print("---")', 'val_bpb = float("nan")\nprint("---")')])
    campaign = run_scripted(tmp_path, [nan], "campaign.budget.max_experiments=4")
    (row,) = [r for r in read_tsv(tmp_path / "toy" / "results.tsv") if r["description"] == "diverges"]
    assert (row["status"], row["reason"]) == ("crash", "ran to its end with no result: val_bpb is nan")
    page = render_html(build_report(campaign.study, tmp_path / "toy", campaign.cfg), None)
    assert "<td>ran to its end with no result: val_bpb is nan</td><td class=num>1</td>" in page


def test_a_description_longer_than_the_page_breaks_instead_of_widening_it(tmp_path: Path) -> None:
    """A kept change's description, a failure's reason or a campaign name without spaces (a path, a
    URL) is a heading or a cell as wide as itself: the page grew past its max-width, scrolled
    sideways. Each element that holds such text may break a word where it must."""
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen")
    add_run(study, 1.9, 70.0, 60.0, status="keep", tier="screen", description="x" * 300)
    page = render_html(build_report(study, tmp_path, compose_toy(tmp_path)), None)
    assert f"<h3>trial 1: {'x' * 300}</h3>" in page
    rule = re.search(r"([^{}]*)\{ overflow-wrap: anywhere; \}", page)
    assert rule and {"h1", "h3", "p", "td"} <= {s.strip() for s in rule.group(1).split(",")}


def test_a_stopped_campaigns_queued_trials_are_said_to_wait_for_no_controller(tmp_path: Path) -> None:
    """A budget stop leaves trials queued in the study: the report says that nothing launches
    them now, and says nothing of the kind while a controller runs."""
    cfg = compose_toy(tmp_path)
    study = optuna.create_study()
    study.enqueue_trial({})
    campaign = tmp_path / "toy"
    campaign.mkdir(exist_ok=True)
    stopped = render_html(build_report(study, campaign, cfg, ended="wall hours budget reached"), None)
    assert "1 queued (no controller launches them now)." in stopped
    assert "Controller: stopped " in stopped and ": wall hours budget reached." in stopped
    beat = {"pid": os.getpid(), "host": socket.gethostname(), "seen_at": time.time(), "state": "running"}
    (campaign / "controller.json").write_text(json.dumps(beat))
    running = render_html(build_report(study, campaign, cfg), None)
    assert "1 queued." in running and "Controller: running: " in running


def test_hours_of_no_recorded_gpu_type_are_said_so_not_labelled_a_question_mark(tmp_path: Path) -> None:
    """An older version's runs recorded no GPU type: their partition's cost row read "old (?)" and
    its unpriced hours "? for 0.50 GPU-hours on ?", a sign no user could read; and a partition with
    recorded runs beside them named only the recorded type, as if every hour had run on it."""
    cfg = compose_toy(tmp_path, "cluster.partitions.local.price_per_gpu_hour=2")
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 3600.0, status="baseline", tier="screen")
    add_run(study, 1.9, 0.0, 1800.0, status="baseline", tier="validate", pool="old", gpu_type="")
    add_run(study, 1.8, 0.0, 1800.0, status="discard", tier="validate", pool="old", gpu_type="A100")
    report = build_report(study, tmp_path, cfg)
    assert report.gpu_types == {"local": ("cpu",), "old": ("an unrecorded GPU type", "A100")}
    page = render_html(report, None)
    assert (
        "<td>old (an unrecorded GPU type, A100)</td><td class=num>1.00</td><td class=num>? (no price" in page
    )
    assert "<b>$2.00 + ? for 1.00 GPU-hours on an unrecorded GPU type, A100</b>" in page
    assert "(?)" not in page and "on ?" not in page
    assert "CPU-hours / tokens" not in page  # (hours not known to be a CPU's are not called CPU-hours)


def test_a_campaign_ends_with_its_cost_and_speed_up_in_plain_text_as_the_report_command_prints(
    tmp_path: Path,
) -> None:
    """The controller's last lines said what a campaign found but not what it cost or how much
    faster than a sequential loop it ran, which only report.html said: a user over SSH had to copy
    the page to see them. They now end the controller's log, and `autoresearch report` prints them
    after the page's path, in the figures and words of the page."""
    price = "cluster.partitions.local.price_per_gpu_hour=5000"
    assert run_campaign(tmp_path, "campaign.budget.max_experiments=6", price).returncode == 0
    campaign = tmp_path / "toy"
    report = build_report(load(campaign), campaign, compose_toy(tmp_path, price))
    lines = headline(report)
    hours = sum(report.gpu_hours.values())
    assert lines[0] == f"cost: {hours:.2f} CPU-hours (${report.gpu_dollars:,.2f})"  # no LLM ran: none said
    assert lines[1].startswith(f"{report.ran} experiments in flight for {report.speedup.busy_hours:.2f} h")
    assert (
        report.speedup.said() in lines[1] and report.speedup.said() in (campaign / "report.html").read_text()
    )
    log = (campaign / "controller.log").read_text().splitlines()
    said = [line.split(" INFO ", 1)[-1] for line in log]
    assert said[said.index(lines[0]) + 1] == lines[1] and said[-1].startswith("kept changes: ")
    out = subprocess.run(
        [sys.executable, "-m", "autoresearch.report", str(campaign)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.splitlines() == [str(campaign / "report.html"), *lines]


def test_the_headline_says_llm_cost_unpriced_hours_and_a_speed_up_in_the_pages_words(tmp_path: Path) -> None:
    """The plain-text lines, as the page: the agent's tokens and dollars, hours without a price
    said as hours (not $0), a total; a speed-up above 1x; and no speed-up before anything ran."""
    cfg = compose_toy(tmp_path, "cluster.partitions.local.price_per_gpu_hour=2", "agent.price_input=3")
    study = optuna.create_study(study_name="toy")
    assert headline(build_report(study, tmp_path, cfg)) == [
        "cost: no experiment has run yet",
        "speed-up: none to say, no experiment has run yet",
    ]
    add_run(study, 2.0, 0.0, 3600.0, status="baseline", tier="screen")
    add_run(study, 1.9, 0.0, 3600.0, status="discard", tier="screen", pool="h200", gpu_type="H200")
    usage = Usage(input_tokens=1_000_000, output_tokens=0, cache_read_input_tokens=0)
    UsageLedger(tmp_path, cfg.agent).record(model="claude-test", call="c1", usage=usage, wave=1, turn=0)
    report = build_report(study, tmp_path, cfg)
    cost, speedup = headline(report)
    assert cost == (
        "cost: 2.00 GPU-hours ($2.00 + ? for 1.00 GPU-hours on H200); LLM (claude-test) 1,000,000 input, "
        "0 output, 0 read from and 0 written to the prompt cache ($3.00); $5.00 + ? for 1.00 GPU-hours "
        "on H200 in all"
    )
    assert "<b>$5.00 + ? for 1.00 GPU-hours on H200</b>" in render_html(report, None)  # the page's total
    UsageLedger(tmp_path, cfg.agent).start(model="claude-test", wave=2, turn=0, input_tokens=10)  # (cut off)
    assert (
        ", 1 call cut off by a stop (or still in flight), counted at its max);"
        in headline(build_report(study, tmp_path, cfg))[0]
    )
    assert speedup == (
        "2 experiments in flight for 1.00 h, against 2.00 h of run time one after another in one slot "
        "(a sequential loop): a speed-up of 2.0x"
    )
    assert "<b>a speed-up of 2.0x</b>" in render_html(report, None)


def test_a_kept_diff_that_is_not_utf8_is_shown_with_its_damage_replaced(tmp_path: Path) -> None:
    """A kept change's train.diff holding bytes that are not UTF-8 (written under a Latin-1 locale,
    or damaged on disk) stopped the report with a UnicodeDecodeError traceback (the controller's
    last report reads it too, and catches only OSError); the diff now shows, each undecodable byte
    replaced."""
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen")
    exp = tmp_path / "experiments" / "00001"
    exp.mkdir(parents=True)
    (exp / "train.diff").write_bytes(b'--- a\n+++ b\n@@ -1 +1 @@\n-NAME = "caf\xe9"\n+NAME = "tea"\n')
    add_run(
        study, 1.9, 70.0, 60.0, status="keep", tier="screen", description="tea", exp_dir="experiments/00001"
    )
    page = render_html(build_report(study, tmp_path, compose_toy(tmp_path)), None)
    assert '<span class="del">-NAME = &quot;caf\ufffd&quot;</span>' in page
    assert '<span class="add">+NAME = &quot;tea&quot;</span>' in page


def test_the_report_commands_lines_piped_to_a_reader_that_stopped_end_quietly(tmp_path: Path) -> None:
    """`autoresearch report runs/x | head -1`, for the page's path alone: the reader gone, the
    command ended in a BrokenPipeError traceback and exit 1, though the page was written; it now
    ends quietly, as status does."""
    assert run_campaign(tmp_path, "campaign.budget.max_experiments=3").returncode == 0
    campaign = tmp_path / "toy"
    (campaign / "report.html").unlink()
    read, write = os.pipe()
    os.close(read)  # (the reader gone before a line came: every write meets a closed pipe)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "autoresearch.report", str(campaign)],
            cwd=REPO,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write)
    assert (out.returncode, out.stderr) == (0, "")
    assert (campaign / "report.html").is_file()


def test_a_campaign_that_cannot_go_on_still_ends_with_what_it_spent(tmp_path: Path) -> None:
    """A starting train.py whose every baseline crashed stops the campaign with an error: its last
    line said why, but not the hours it had spent, which the report written as it stopped says."""
    broken = tmp_path / "train.py"
    broken.write_text("raise RuntimeError('boom')\nLR = 0.1\nWIDTH = 64\n")
    price = "cluster.partitions.local.price_per_gpu_hour=5000"
    proc = run_campaign(tmp_path, f"campaign.train_py={broken}", price)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    campaign = tmp_path / "toy"
    report = build_report(load(campaign), campaign, compose_toy(tmp_path, price))
    assert report.ran >= 3 and report.gpu_dollars > 0  # (the baselines ran, and crashed)
    said = [line.split(" INFO ", 1)[-1].lstrip() for line in proc.stdout.splitlines()]
    assert "ERROR" in proc.stdout.splitlines()[-3] and said[-2:] == headline(report)


def test_a_kept_change_whose_attrs_are_of_other_types_is_shown_not_a_report_refused(tmp_path: Path) -> None:
    """A study written by another version, or edited, may hold a kept trial's words as a number or
    None, its delta as a string: the report ended in a traceback ("Unknown format code 'f' for
    object of type 'str'") and no page was written. Each is shown as it reads, a delta that is no
    number left out."""
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen")
    odd = {"description": 123, "hypothesis": None, "source": None, "commit": 5, "reason": ["beat it"]}
    add_run(study, 1.9, 70.0, 60.0, status="keep", tier="screen", delta="-0.1", **odd)
    add_run(study, 1.8, 140.0, 60.0, status="keep", tier="screen", delta=[1], description=None)
    write_report(study, tmp_path, compose_toy(tmp_path))
    page = (tmp_path / "report.html").read_text()
    assert "<h3>trial 1: 123</h3>" in page and "(-0.100000 against the frontier)" in page
    assert "<code>5</code>" in page and "proposed by ?" in page and html.escape("['beat it']") in page
    assert "<h3>trial 2: </h3>" in page and "val_bpb 1.800000;" in page


def test_experiments_that_ran_and_await_their_decision_are_counted_as_run_not_running(tmp_path: Path) -> None:
    """A promoted change stays a running trial until its re-runs decide it: a campaign whose only
    experiments were promoted (its budget spent, say) had a report saying "3 running", "no
    experiment has run yet" for its cost and speed-up, and no hours, though each had run."""
    study = optuna.create_study(study_name="toy")
    for number in range(3):  # each ran for a minute, its run ended, its decision not made
        times = {
            "launched_at": 100.0 * number,
            "started_at": 100.0 * number + 1,
            "ended_at": 100.0 * number + 61,
        }
        place = {"exp_dir": f"experiments/{number:05d}", "pool": "local", "gpu_type": "cpu", "tier": "screen"}
        study.enqueue_trial({}, user_attrs={**times, **place, "promoted": True, "val_bpb": 1.9})
        study.ask()
    study.enqueue_trial({}, user_attrs={"tier": "screen", "validates": 0})  # a re-run, running
    study.ask()
    report = build_report(study, tmp_path, compose_toy(tmp_path))
    assert (report.ran, report.running, report.awaiting) == (3, 1, 3)
    assert headline(report)[0] == "cost: 0.05 CPU-hours"
    assert headline(report)[1].startswith("3 experiments in flight for 0.05 h")
    page = render_html(report, None)
    assert "1 running, 0 queued, 3 ran and awaiting a decision." in page


def test_a_plot_of_one_experiment_has_one_tick_and_says_one_experiment(tmp_path: Path) -> None:
    """The first report of a campaign, its baseline alone: the axis around the one point was a
    tenth wide, so its ticks were 0.945, 0.960 ... (experiments are whole), and the title said
    "1 experiments"."""
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen", partition="local")
    table = rows(study)
    assert plot_title(table, "toy") == "toy: 1 experiment, 0 crashed"
    fig = progress_figure(table, "toy")
    try:
        low, high = fig.axes[0].get_xlim()
        assert [t for t in fig.axes[0].get_xticks() if low <= t <= high] == [1]
    finally:
        plt.close(fig)


def test_a_plot_of_the_baseline_alone_names_no_frontier_it_does_not_draw(tmp_path: Path) -> None:
    """A one-point plot (the baseline alone measured) listed "frontier" in its legend, though a step
    line through one point draws nothing; from the second result on, the line is drawn and named."""
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen", partition="local")

    def legend(table: list[dict[str, Any]]) -> tuple[list[str], int]:
        fig = progress_figure(table, "toy")
        try:
            ax = fig.axes[0]
            drawn = sum(1 for line in ax.get_lines() if len(line.get_xdata()) > 1)
            return [t.get_text() for t in ax.get_legend().get_texts()], drawn
        finally:
            plt.close(fig)

    assert legend(rows(study)) == (["baseline"], 0)
    add_run(study, 2.1, 70.0, 60.0, status="discard", tier="screen", partition="local")
    assert legend(rows(study)) == (["discard", "frontier", "baseline"], 1)


def test_a_change_that_is_no_number_is_said_so_not_shown_as_plus_nan(tmp_path: Path) -> None:
    """A kept trial's delta, or a tier's change, that is NaN (a study edited, or written by another
    version) read "+nan" on the page, as if it were a figure; it now says what happened."""
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen", run_key="v0")
    add_run(study, 2.0, 10.0, 60.0, status="baseline", tier="validate", run_key="v0", val_bpb=float("nan"))
    nan = float("nan")
    add_run(study, 1.9, 70.0, 60.0, status="keep", tier="screen", run_key="v1", delta=nan, description="x")
    page = render_html(build_report(study, tmp_path, compose_toy(tmp_path)), None)
    assert "+nan" not in page
    assert "val_bpb 1.900000 (n/a (val_bpb not a number) against the frontier)" in page
    picked = "the frontier's is the run that kept it, not re-run yet"
    assert (
        f"<td class=num>-0.100000 (-5.00%), means over all their runs: no seed ran both; {picked}</td>"
        in page
    )
    assert "<td class=num>n/a (val_bpb not a number)</td>" in page  # (the validate tier's)


def test_a_baseline_whose_tier_is_no_name_is_left_out_of_the_tier_table_not_the_report(
    tmp_path: Path,
) -> None:
    """A baseline whose tier attr is None or another type (a study edited, or written by another
    version) ended the report in a TypeError, sorting None with the tiers' names, or escaping a
    number; one without the attr was a tier of no name. Each is left out of the tier table."""
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen")
    add_run(study, 2.1, 10.0, 60.0, status="baseline", tier="validate")
    add_run(study, 1.9, 20.0, 60.0, status="keep", tier="screen", description="x")
    for odd in ({"tier": None}, {"tier": 5}, {}):
        add_run(study, 2.2, 30.0, 60.0, status="baseline", **odd)
        add_run(study, 1.9, 40.0, 60.0, status="rerun", validates=2, **odd)
    add_run(study, 1.95, 50.0, 60.0, status="rerun", tier="validate", validates=2)
    write_report(study, tmp_path, compose_toy(tmp_path))
    page = (tmp_path / "report.html").read_text()
    result = page[page.index("<h2>Result</h2>") : page.index("<h2>Cost</h2>")]
    assert re.findall(r"<tr><td>([^<]*)</td>", result) == ["screen", "validate"]
    assert "10 finished trials: 5 baseline, 1 keep, 4 rerun." in page
    assert re.findall(r"re-runs on other seeds on ([^:]*):", page) == ["validate"]


def test_a_campaign_a_little_slower_than_the_loop_is_not_said_to_be_1_00x_slower(tmp_path: Path) -> None:
    """One slot running one experiment at a time, its launch a second before its start, is a
    hair slower than the loop (0.999x): the headline and the page said "1.00x, slower than the
    sequential loop", a figure that reads as no loss beside words that say one."""
    study = optuna.create_study(study_name="toy")
    add_run(study, 2.0, 100.0, 998.0, status="baseline", tier="screen")
    report = build_report(study, tmp_path, compose_toy(tmp_path))
    assert "(a sequential loop): 0.99x, slower than the sequential loop;" in headline(report)[1]
    assert "<b>0.99x, slower than the sequential loop</b>" in render_html(report, None)


@pytest.mark.parametrize(
    ("sequential", "said"), [(0.29, "0.29x"), (0.57, "0.57x"), (0.58, "0.58x"), (0.999, "0.99x")]
)
def test_a_factor_below_one_is_rounded_down_to_its_own_hundredth(sequential: float, said: str) -> None:
    """Rounded down in floats, 0.29 read 0.28x (0.29 * 100 is 28.999999999999996)."""
    speedup = Speedup(sequential_hours=sequential, busy_hours=1.0, waiting_hours=0.0)
    assert speedup.said() == f"{said}, slower than the sequential loop"


def test_a_results_tsv_given_a_column_by_hand_is_kept_aside_not_overwritten(tmp_path: Path) -> None:
    """A user who added a column of notes to results.tsv lost them, unsaid, at the controller's
    next rewrite from the study; the edited file is now moved aside, said in a warning, each time
    another such edit would go."""
    first = run_campaign(tmp_path, "campaign.budget.max_experiments=3")
    assert first.returncode == 0, first.stdout + first.stderr
    results = tmp_path / "toy" / "results.tsv"
    lines = results.read_text().splitlines()
    edited = (
        "\n".join([f"{lines[0]}\tnotes", *(f"{line}\tmy note {n}" for n, line in enumerate(lines[1:]))])
        + "\n"
    )
    for budget, aside in ((4, "results.edited.tsv"), (5, "results.edited.1.tsv")):
        results.write_text(edited)
        again = run_campaign(tmp_path, f"campaign.budget.max_experiments={budget}")
        assert again.returncode == 0, again.stdout + again.stderr
        assert (tmp_path / "toy" / aside).read_text() == edited
        assert (
            f"WARNING  results.tsv had column(s) it is not written with (notes), an edit by hand: kept "
            f"as {aside}, as results.tsv is rebuilt from the study"
        ) in again.stdout
        assert len(read_tsv(results)) > len(lines) - 1 and "notes" not in results.read_text()
    quiet = run_campaign(tmp_path, "campaign.budget.max_experiments=6")  # (its own file: nothing aside)
    assert "an edit by hand" not in quiet.stdout and not (tmp_path / "toy" / "results.edited.2.tsv").exists()


def test_the_closing_line_status_and_report_compare_the_start_and_frontier_on_the_same_seeds(
    tmp_path: Path,
) -> None:
    """The baseline ran at seeds 42-45 and the kept change was measured at 43-45 and 1042, with a
    seed's luck larger than the change: the plain means (1.990 -> 1.9825) showed a quarter of the
    -0.03 the keep was decided on seed for seed. The closing line, status and the report now
    compare the two on the seeds both ran, and say so."""
    from autoresearch.__main__ import done_line
    from autoresearch.campaign import Summary
    from autoresearch.status import render

    study = lucky_seeds_study(tmp_path)
    table = rows(study)

    compared = compare(table)
    assert compared is not None and compared.seeds == 3
    assert (compared.baseline, compared.frontier) == pytest.approx((2.0, 1.97))
    summary = Summary(experiments=9, kept=1, crashed=0, compared=compared, stop_reason="finished")
    assert done_line(summary).endswith("; val_bpb 2.000000 -> 1.970000 (means over the same 3 seeds)")
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(render(study, tmp_path))
    said = r"val_bpb +2\.000000 \(baseline\) -> 1\.970000 \(means over the same 3 seeds\)"
    assert re.search(said, console.export_text())
    screen = build_report(study, tmp_path, compose_toy(tmp_path)).tiers[0]
    assert screen.change == pytest.approx(-0.03)


def test_a_frontier_not_re_run_yet_is_said_to_be_the_run_that_kept_it(tmp_path: Path) -> None:
    """A campaign stopped right after a keep, before its re-runs: the frontier's only figure is the
    keep's own run at seed 42, picked for being low (1.93, the seed's luck -0.04 in it), and the
    closing line said 'means over the same 1 seed' as if it were a measurement like the baseline's.
    Each of the closing line, status and the report now says it is the run that kept it."""
    from autoresearch.__main__ import done_line
    from autoresearch.campaign import Summary
    from autoresearch.status import render

    study = optuna.create_study(study_name="toy")
    for seed in (42, 43, 44, 45):
        add_run(study, 2.0, 0.0, 60.0, status="baseline", tier="screen", run_key="v0", seed=seed)
    add_run(study, 1.93, 70.0, 60.0, status="keep", tier="screen", run_key="v1", seed=42, description="x")
    compared = compare(rows(study))
    picked = "the frontier's is the run that kept it, not re-run yet"
    assert compared is not None and compared.over() == f"means over the same 1 seed; {picked}"
    summary = Summary(experiments=5, kept=1, crashed=0, compared=compared, stop_reason="finished")
    assert done_line(summary).endswith(
        f"; val_bpb 2.000000 -> 1.930000 (means over the same 1 seed; {picked})"
    )
    console = Console(record=True, width=300, file=io.StringIO())
    console.print(render(study, tmp_path))
    assert picked in console.export_text()
    page = render_html(build_report(study, tmp_path, compose_toy(tmp_path)), None)
    assert f"means over the same 1 seed; {picked}</td>" in page
    add_run(study, 1.96, 140.0, 60.0, status="rerun", tier="screen", run_key="v1", seed=1042, validates=4)
    re_run = compare(rows(study))  # (its first re-run, at the next screening seed: no seed shared)
    assert re_run is not None and re_run.over() == "means over all their runs: no seed ran both"
