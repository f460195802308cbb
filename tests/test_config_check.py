"""Configs that compose but cannot run are refused in one line, before anything is written."""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import (
    REPO,
    campaign_command,
    compose_config,
    compose_toy,
    run_campaign,
    run_scripted,
    scripted_campaign,
)
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution

from autoresearch.campaign import CampaignError
from autoresearch.config import AutoresearchConfig, KnobConfig
from autoresearch.config_check import ConfigError, check_config, config_problems, resume_problems
from autoresearch.proposals import Candidate
from autoresearch.study import StudyUnavailable, load_study, open_study


@pytest.fixture(autouse=True)
def _from_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # campaign paths are relative to the folder a command runs in


GROUPS = {
    group: sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
    for group in ("cluster", "agent", "tracking")
}


@pytest.mark.parametrize(
    ("campaign", "cluster", "agent", "tracking"),
    list(itertools.product(["demo", "gpt2", "toy"], GROUPS["cluster"], GROUPS["agent"], GROUPS["tracking"])),
)
def test_every_shipped_combination_passes(campaign: str, cluster: str, agent: str, tracking: str) -> None:
    cfg = compose_config(
        f"+campaign={campaign}", f"cluster={cluster}", f"agent={agent}", f"tracking={tracking}"
    )
    assert config_problems(cfg) == []


def test_the_gpt2_campaign_is_proposed_by_claude_and_tracked_by_wandb_unless_told_otherwise() -> None:
    """`+campaign=gpt2` is the real thing, as the README gives it; the command line still chooses."""
    real = compose_config("+campaign=gpt2")
    assert (real.agent.kind, real.tracking.kind) == ("claude", "wandb")
    plain = compose_config("+campaign=gpt2", "agent=offline", "tracking=none")
    assert (plain.agent.kind, plain.tracking.kind) == ("offline", "none")
    demo = compose_config("+campaign=demo")
    assert (demo.agent.kind, demo.tracking.kind) == ("offline", "none")


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (["campaign.baseline_seeds=0"], "campaign.baseline_seeds must be at least 1, not 0"),
        (["campaign.wave_size=0"], "campaign.wave_size must be at least 1, not 0"),
        (
            ["campaign.wave_size=17"],
            "campaign.wave_size=17 is above campaign.max_wave=16, the cap on a wave: no wave would hold "
            "more than 16 experiments; raise max_wave to 17, or lower wave_size",
        ),
        (["campaign.min_delta=-0.1"], "campaign.min_delta must be at least 0, not -0.1"),
        (["campaign.budget.max_dollars=-1"], "campaign.budget.max_dollars must be at least 0, not -1.0"),
        (["campaign.time_budget=0"], "campaign.time_budget must be positive, not 0.0 (seconds, or null"),
        (["campaign.time_budget=nan"], "campaign.time_budget must be a finite number, not nan"),
        (["campaign.min_delta=nan"], "campaign.min_delta must be a finite number, not nan"),
        (["campaign.keep_z=nan"], "campaign.keep_z must be a finite number, not nan"),
        (["campaign.budget.max_wall_hours=inf"], "campaign.budget.max_wall_hours must be a finite number"),
        (["cluster.poll_seconds=nan"], "cluster.poll_seconds must be a finite number, not nan"),
        (["cluster.partitions.local.mem_gb=nan"], "cluster.partitions.local.mem_gb must be a finite number"),
        (["campaign.knobs.WIDTH.high=nan"], "campaign.knobs.WIDTH.high must be a finite number, not nan"),
        (["campaign.knobs.WIDTH.high=wide"], "campaign.knobs.WIDTH.high must be a finite number, not 'wide'"),
        (["campaign.knobs.WIDTH.low=true"], "campaign.knobs.WIDTH.low must be a finite number, not True"),
        (
            ["campaign.knobs.WIDTH.low=16.5"],
            "campaign.knobs.WIDTH.low=16.5: an int knob's bounds must be whole numbers",
        ),
        (  # a bound left out, as in a knob given choices but not kind: categorical
            ["campaign.knobs.WIDTH.high=null"],
            "campaign.knobs.WIDTH: an int knob needs low and high, and high is not set (a knob of choices "
            "is kind: categorical)",
        ),
        (
            ["campaign.knobs.LR.low=null", "campaign.knobs.LR.high=null"],
            "campaign.knobs.LR: a float knob needs low and high, and low and high are not set",
        ),
        (["campaign.seed=-1"], "campaign.seed must be from 0 to 4294967295 (what the samplers take), not -1"),
        (["campaign.seed=99999999999"], "campaign.seed must be from 0 to 4294967295"),
        (["campaign.scale=big"], "campaign.scale must be one of gpt2, cpu, not 'big'"),
        (["campaign.data=web"], "campaign.data must be one of climbmix, offline, not 'web'"),
        (["campaign.name=a/b"], "campaign.name must be a folder name"),
        (["campaign.train_py=missing.py"], "campaign.train_py: no file missing.py"),
        (
            ["campaign.knobs.LR.low=1", "campaign.knobs.LR.high=0.1"],
            "campaign.knobs.LR: low=1 is above high=0.1: swap them",
        ),
        (
            ["campaign.knobs.LR.low=0"],
            "campaign.knobs.LR: low=0, but a log-scale float knob needs low above 0: raise low, or set log: false",
        ),
        (
            ["campaign.knobs.WIDTH.low=0"],
            "campaign.knobs.WIDTH: low=0, but a log-scale int knob needs low at least 1: raise low, or set log: "
            "false",
        ),
        (["campaign.knobs.LR.kind=complex"], "campaign.knobs.LR.kind must be one of float, int, categorical"),
        (  # the search draws from low to high: the choices were dropped without a word
            ["campaign.knobs.WIDTH.choices=[16,64]"],
            "campaign.knobs.WIDTH: an int knob draws from low to high and never from choices: drop choices, or "
            "make it kind: categorical (without low and high)",
        ),
        (
            ["campaign.knobs.WIDTH.kind=categorical", "campaign.knobs.WIDTH.choices=[16,64]"],
            "campaign.knobs.WIDTH: a categorical knob draws from its choices only: drop low and high and log",
        ),
        (
            [
                "campaign.knobs.WIDTH.kind=categorical",
                "campaign.knobs.WIDTH.choices=[16,64,64]",
                "campaign.knobs.WIDTH.low=null",
                "campaign.knobs.WIDTH.high=null",
                "campaign.knobs.WIDTH.log=false",
            ],
            "campaign.knobs.WIDTH: choice 64 is given twice, and would be drawn twice as often: give it once",
        ),
        (
            ["campaign.train_py=trainer/train.py", "~campaign.knobs.LR"],
            "campaign.knobs.WIDTH: trainer/train.py has no module-level constant WIDTH: name one it assigns, "
            "NAME = value, or add it there",
        ),
        (
            ["campaign.keep_z=95"],
            "campaign.keep_z=95 asks a change to beat the frontier by 95 times the seed noise, which none "
            "will: it counts standard deviations, not a percentage (2 is about 98% sure); give at most 10",
        ),
        (["campaign.promote_z=50"], "campaign.promote_z=50 asks a change to beat the frontier by 50 times"),
        (["cluster.cpu_slots=0"], "cluster.cpu_slots must be at least 1, not 0"),
        (["cluster.worker_start_tries=0"], "cluster.worker_start_tries must be at least 1, not 0"),
        (["cluster.poll_seconds=0"], "cluster.poll_seconds must be positive, not 0.0"),
        (
            ["cluster.tiers.screen=h100"],
            "cluster.tiers.screen names partition 'h100'; cluster.partitions has local",
        ),
        (["+cluster.tiers.final=local"], "cluster.tiers: unknown tier 'final'"),
        (
            ["cluster=slurm", "cluster.partitions.h100.mode=pool"],
            "cluster.partitions.h100.mode must be one of array, workers",
        ),
        (
            ["cluster=slurm", "cluster.partitions.h200.time_limit_min=0"],
            "cluster.partitions.h200.time_limit_min must be at least 1",
        ),
        (
            ["cluster=slurm", "cluster.partitions.h100.slots=0"],
            "cluster.partitions.h100.slots=0, but the screen tier runs there and would wait for ever: "
            "give it at least 1",
        ),
        (
            ["cluster=slurm", "cluster.partitions.h200.slots=0"],
            "cluster.partitions.h200.slots=0, but the validate tier runs there and would wait for ever: "
            "to confirm on the screen partition instead, set cluster.tiers.validate=h100",
        ),
        (["cluster.kind=kubernetes"], "cluster.kind must be one of local, slurm, not 'kubernetes'"),
        (["cluster.devices=gpu"], "cluster.devices must be one of auto, cpu, not 'gpu'"),
        (
            ["cluster=slurm", "cluster.kind=local"],
            "cluster.kind=local takes exactly one partition (its slots), not 2; a Slurm cluster's file sets "
            "kind: slurm",
        ),
        (["storage=notaurl"], "storage=notaurl is not a database URL"),
        (["storage=postgresql://me:hunter2@db.example/runs"], "storage: keep the password out of the URL"),
        (["storage='postgresql://me@db.example/runs?password=hunter2'"], "storage: keep the password out"),
        (["storage='postgresql://me@db.example/runs?PWD=hunter2'"], "storage: keep the password out"),
        (
            ["storage=postgresql://me@db.example:abc/runs"],
            "storage=postgresql://me@db.example:abc/runs: the port",
        ),
        (
            ["cluster=slurm", "cluster.partitions.h100.gres=gpu:h100:2"],
            "cluster.partitions.h100: gres gpu:h100:2 asks for 2 GPUs per experiment; an experiment trains on one",
        ),
        (
            ["cluster=slurm", "cluster.partitions.h200.gres=''", "cluster.partitions.h200.gpus_per_node=4"],
            "cluster.partitions.h200: gpus_per_node asks for 4 GPUs per experiment",
        ),
        (
            ["cluster=slurm", "campaign.require_gpu=true", "cluster.partitions.h200.gres=''"],
            "cluster.partitions.h200 asks Slurm for no GPU (gres and gpus_per_node unset), and this campaign "
            "trains on GPUs (campaign.require_gpu): set its gres",
        ),
        (
            ["cluster=slurm", "cluster.partitions.h100.gpus_per_node=1"],
            "cluster.partitions.h100: gres=gpu:h100:1 and gpus_per_node=1 both ask for the GPU; set one",
        ),
        (["storage=sqlite://"], "storage=sqlite:// is an in-memory SQLite database, gone when"),
        (["storage=sqlite:///"], "storage=sqlite:/// is an in-memory SQLite database"),
        (["storage=sqlite:///:memory:"], "storage=sqlite:///:memory: is an in-memory SQLite database"),
        (["storage='sqlite:///file:db?mode=memory&uri=true'"], "storage=sqlite:///file:db?mode=memory"),
        (["storage=sqlite:///study.db"], "storage=sqlite:///study.db is a SQLite file relative to the "),
        (
            ["storage='sqlite:///file:runs/db?uri=true'"],
            "storage=sqlite:///file:runs/db?uri=true is a SQLite",
        ),
        (["agent.base_url=https://me:hunter2@gateway.example"], "agent.base_url: keep credentials"),
        (["agent.base_url=https://sk-ant-x@gateway.example"], "agent.base_url: keep credentials"),
        (["agent.base_url='https://gateway.example/?key=sk-ant-x'"], "agent.base_url: keep credentials"),
        (["agent.base_url=localhost:8080"], "agent.base_url must be an http(s) URL with a host"),
        (
            ["agent=claude", "campaign.program_md=trainer/progam.md"],
            "campaign.program_md: no file trainer/progam.md",
        ),
        (
            ["cluster=slurm", "campaign.time_budget=1800", "cluster.partitions.h200.time_limit_min=90"],
            "cluster.partitions.h100.time_limit_min=60 leaves 3480 s for an experiment (Slurm signals "
            "120 s before the limit), less than its deadline of 3900 s (2 x time budget + "
            "cluster.grace_seconds): give it at least 67",
        ),
        (["agent.kind=gpt"], "agent.kind must be one of offline, claude, not 'gpt'"),
        (["tracking.kind=mlflow"], "tracking.kind must be one of none, wandb, not 'mlflow'"),
        (
            ["tracking=wandb", "tracking.mode=dryrun"],
            "tracking.mode must be one of online, offline, not 'dryrun'",
        ),
        (["agent.failures_before_fallback=0"], "agent.failures_before_fallback must be at least 1, not 0"),
        (["tracking.plot_every=0"], "tracking.plot_every must be at least 1, not 0"),
        (
            ["agent=claude", "agent.thinking_budget=500"],
            "agent.thinking_budget=500 must be at least 1024 and below agent.max_tokens=16000",
        ),
        (["agent=claude", "agent.max_tokens=0"], "agent.max_tokens must be positive, not 0"),  # said once
    ],
)
def test_a_config_that_cannot_run_is_named(overrides: list[str], problem: str) -> None:
    problems = config_problems(compose_config("+campaign=toy", *overrides))
    assert len(problems) == 1 and problems[0].startswith(problem), problems


@pytest.mark.parametrize(
    "asks",
    ["cluster.partitions.h200.gpus_per_node=1", "+cluster.partitions.h200.extra_sbatch.gpus_per_task=1"],
)
def test_a_gpu_campaigns_partition_may_ask_for_its_gpu_any_way_sbatch_takes(asks: str) -> None:
    cfg = compose_config("+campaign=gpt2", "cluster=slurm", "cluster.partitions.h200.gres=''", asks)
    assert config_problems(cfg) == []


def test_a_tier_partition_with_negative_slots_is_named_with_the_slots_it_was_given() -> None:
    """A typo (slots=-2) is said as typed, not as slots=0, which the command line never held."""
    problems = config_problems(
        compose_config("+campaign=toy", "cluster=slurm", "cluster.partitions.h100.slots=-2")
    )
    assert problems == [
        "cluster.partitions.h100.slots=-2, but the screen tier runs there and would wait for ever: "
        "give it at least 1",
        "cluster.partitions.h100.slots must be at least 0, not -2",
    ]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://me:hunter2@db.example:abc/runs",  # the port refused, before the password
        "postgresql//me:hunter2@db.example/runs",  # no URL at all
        "postgresql//me:hun/ter2@db.example/runs",
        "postgresql//me@db.example/runs?Password=hunter2",
        "postgresql://me://hunter2@db.example:abc/runs",  # a password that begins with //
        "postgresql://me@db.example:abc/runs?%70assword=hunter2",  # the driver reads 'password'
    ],
)
def test_a_storage_url_refused_for_another_fault_does_not_show_its_password(url: str) -> None:
    problems = config_problems(compose_config("+campaign=toy", f"storage='{url}'"))
    assert len(problems) == 1 and "hunter2" not in problems[0] and "ter2" not in problems[0], problems


def test_a_knob_the_engine_could_not_set_is_named(tmp_path: Path) -> None:
    """A knob is set by writing over its one assignment: assigned twice, every trial that sets or
    samples it would fail, each one invalid."""
    train_py = tmp_path / "train.py"
    train_py.write_text(
        (REPO / "tests/fixtures/toy/train.py").read_text().replace("LR = 0.01\n", "LR = 0.01\nLR = LR * 4\n")
    )
    problems = config_problems(compose_config("+campaign=toy", f"campaign.train_py={train_py}"))
    assert problems == [
        f"campaign.knobs.LR: knob LR is assigned 2 times in train.py ({train_py}): a knob must be one "
        "module-level assignment, NAME = value, for the engine to set it"
    ]


def test_a_resumed_campaigns_knobs_are_those_of_its_frontier(tmp_path: Path) -> None:
    """A resume goes on from frontier/train.py, not from campaign.train_py: a knob the frontier
    lacks would make every draw of it invalid, whatever the configured file has."""
    frontier = tmp_path / "toy" / "frontier" / "train.py"
    frontier.parent.mkdir(parents=True)
    frontier.write_text((REPO / "tests/fixtures/toy/train.py").read_text().replace("LR = 0.01\n", ""))
    problems = config_problems(compose_config("+campaign=toy", f"runs_dir={tmp_path}"))
    assert problems == [
        f"campaign.knobs.LR: {frontier} has no module-level constant LR: name one it assigns, NAME = value, "
        "or add it there"
    ]


def test_an_empty_validate_partition_is_fine_when_nothing_is_confirmed() -> None:
    overrides = ["cluster=slurm", "cluster.partitions.h200.slots=0"]
    assert config_problems(compose_config("+campaign=toy", *overrides, "campaign.validate_seeds=0")) == []


def test_the_cli_refuses_in_one_line_and_keeps_the_campaign(tmp_path: Path) -> None:
    campaign = tmp_path / "toy"
    campaign.mkdir()
    existing = OmegaConf.to_yaml(compose_config("+campaign=toy", f"runs_dir={tmp_path}"))
    (campaign / "config.yaml").write_text(existing)
    proc = run_campaign(tmp_path, "campaign.baseline_seeds=0", "cluster.cpu_slots=0")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: bad config: campaign.baseline_seeds must be at least 1, not 0; "
        "cluster.cpu_slots must be at least 1, not 0"
    ]
    assert [p.name for p in campaign.iterdir()] == ["config.yaml"]
    assert (campaign / "config.yaml").read_text() == existing
    proc = subprocess.run(
        campaign_command(tmp_path, "--cfg", "job"), cwd=REPO, capture_output=True, timeout=60
    )
    assert proc.returncode == 0  # printing a config checks nothing: it runs nothing


def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    proc = run_campaign(tmp_path, f"storage=sqlite:///{tmp_path}/no/such/folder/study.db")
    assert proc.returncode == 2
    said = " ".join((proc.stdout + proc.stderr).split())  # the log wraps long lines
    assert "error: cannot open the study at storage=sqlite:///" in said
    assert "unable to open database file" in said and "Traceback" not in said


@pytest.mark.skipif(importlib.util.find_spec("pg8000") is not None, reason="needs a missing driver")
def test_a_missing_database_driver_is_named(tmp_path: Path) -> None:
    with pytest.raises(StudyUnavailable, match=r"No module named 'pg8000' \(install the database driver"):
        open_study(tmp_path, "x", "postgresql+pg8000://me@127.0.0.1/runs")


def test_a_resumed_campaign_must_measure_as_it_started(tmp_path: Path) -> None:
    proc = run_campaign(tmp_path, "campaign.budget.max_experiments=2")
    assert proc.returncode == 0
    said = " ".join(proc.stdout.split())  # the log wraps long lines
    assert "campaign.budget.max_experiments=2: the 3 baseline runs use it all" in said
    saved = (tmp_path / "toy" / "config.yaml").read_text()
    refused = {
        "campaign.time_budget=2": f"seconds of training per experiment: {tmp_path / 'toy'} started with "
        "1.0, this command says 2.0 (results measured otherwise cannot be compared: keep it, or choose "
        "a new campaign.name)",
        "campaign.knobs.LR.log=false": f"campaign.knobs.LR: {tmp_path / 'toy'} searched it as float on "
        "a log scale, this command says float, and its study cannot take a knob's kind, log scale or "
        "choices changed (bounds may change): keep them, leave the knob out of campaign.knobs, or "
        "choose a new campaign.name",
        f"storage=sqlite:///{tmp_path}/other.db": f"storage: {tmp_path / 'toy'} keeps its study in its "
        f"folder's study.journal (storage unset), this command says 'sqlite:///{tmp_path}/other.db', "
        "which does not hold it (the campaign would start over there, beside this folder's frontier): "
        "keep the storage, or choose a new campaign.name",
    }
    for override, said in refused.items():
        proc = run_campaign(tmp_path, override, "campaign.budget.max_experiments=2")
        assert proc.returncode == 2
        assert proc.stderr.splitlines() == [f"error: bad config: {said}"]
        assert (tmp_path / "toy" / "config.yaml").read_text() == saved
    proc = run_campaign(tmp_path, "campaign.budget.max_experiments=3")  # a budget may grow
    assert proc.returncode == 0, proc.stderr
    assert "baseline runs use it all" not in proc.stdout  # said on a first start only
    (tmp_path / "toy" / "config.yaml").write_text("not a config\n")
    proc = run_campaign(tmp_path)
    assert proc.returncode == 2 and "cannot be read as a campaign's config (no campaign.name" in proc.stderr


CATEGORICAL_WIDTH = (
    "campaign.knobs.WIDTH.kind=categorical",
    "campaign.knobs.WIDTH.low=null",
    "campaign.knobs.WIDTH.high=null",
    "campaign.knobs.WIDTH.log=false",
)


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_a_campaign_that_searched_a_choice_given_twice_resumes_with_it_given_once(
    tmp_path: Path, storage: str
) -> None:
    """Before a repeated choice was refused, a campaign could search WIDTH from [16, 64, 64], and
    its study holds that list for good. The refusal says to give it once, and a resume so goes on
    where the campaign was: each new trial recorded in the study's list (Optuna refuses another),
    no experiment failed for it."""
    url = None if storage == "journal" else f"sqlite:///{tmp_path}/study.db"
    width = (*CATEGORICAL_WIDTH, *([f"storage={url}"] if url else []))
    repeated, once = "campaign.knobs.WIDTH.choices=[16,64,64]", "campaign.knobs.WIDTH.choices=[16,64]"
    # the first start, as a version without the refusal made it (a scripted start skips the config check)
    run_scripted(tmp_path, [Candidate("WIDTH 16", knobs={"WIDTH": 16})], *width, repeated)
    searched = CategoricalDistribution([16, 64, 64])
    before = load_study(tmp_path / "toy", "toy", url).trials
    assert [t.distributions["WIDTH"] for t in before if "WIDTH" in t.params] == [searched]

    proc = run_campaign(tmp_path, *width, repeated)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: bad config: campaign.knobs.WIDTH: choice 64 is given twice, and would be drawn twice as "
        "often: give it once, choices: [16, 64] (a campaign that searched it with the repeat resumes with "
        "it so, each result kept)"
    ]
    proc = run_campaign(tmp_path, *width, once, "campaign.budget.max_experiments=12")
    assert proc.returncode == 0, proc.stderr
    after = load_study(tmp_path / "toy", "toy", url).trials[len(before) :]
    widths = [t for t in after if "WIDTH" in t.params]
    assert widths and all(t.distributions["WIDTH"] == searched for t in widths)
    assert not [t.user_attrs["reason"] for t in after if t.user_attrs.get("status") == "invalid"]


@pytest.mark.parametrize(
    "damage", ["cut short", "not text", "a list", "a price in words", "a mapping for a list"]
)
def test_a_damaged_saved_config_is_one_line_for_the_controller_status_and_report(
    tmp_path: Path, open_campaign: Any, damage: str
) -> None:
    """A config.yaml cut short (written in place by a controller killed part-way, before it was
    written whole), or made something else by hand: each reader says which file and what to do."""
    saved = open_campaign(tmp_path, []).dir / "config.yaml"
    text = saved.read_text()
    priced = text.replace("price_per_gpu_hour: 0.0", "price_per_gpu_hour: cheap", 1)
    mapped = text.replace("setup: []", "setup: {module: cuda}", 1)  # (OmegaConf's error names no key)
    assert priced != text and mapped != text
    damaged = {
        "cut short": text[: len(text) // 2].encode(),
        "not text": b"\xff\xfe",
        "a list": b"- 1\n",
        "a price in words": priced.encode(),
        "a mapping for a list": mapped.encode(),
    }
    saved.write_bytes(damaged[damage])
    (problem,) = resume_problems(compose_toy(tmp_path), saved)
    assert problem.startswith(f"{saved} cannot be read as a campaign's config (")
    if damage == "a price in words":
        assert ".price_per_gpu_hour: Value 'cheap' of type 'str' could not be converted to Float)" in problem
    assert problem.endswith(
        "remove it and run the campaign's command again, which writes it anew (the study keeps the "
        "scale, data and training seconds a resume is checked against, unless it began before it "
        "kept them: then give the ones it started with)"
    )
    for tool in ("status", "report"):
        command = [sys.executable, "-m", f"autoresearch.{tool}", str(saved.parent)]
        out = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        assert (out.returncode, out.stderr.splitlines()) == (2, [f"error: {problem}"])


@pytest.mark.parametrize("fails_on", ["storage", "data"])
def test_a_start_that_measured_nothing_binds_no_setting(tmp_path: Path, fails_on: str) -> None:
    """A first start refused by a mistyped storage URL or by its data step measured nothing: the
    corrected command may change what a resumed campaign could not."""
    if fails_on == "storage":
        broken, error = f"storage=sqlite:///{tmp_path}/no/such/folder/study.db", StudyUnavailable
    else:
        (tmp_path / "prepare.py").write_text("raise SystemExit(1)\n")
        broken, error = f"campaign.prepare_py={tmp_path / 'prepare.py'}", CampaignError
    with pytest.raises(error):
        scripted_campaign(tmp_path, [], broken, "campaign.prepare_data=true").run()
    corrected = compose_toy(tmp_path, "campaign.time_budget=2", f"storage=sqlite:///{tmp_path}/study.db")
    assert resume_problems(corrected, tmp_path / "toy" / "config.yaml") == []


@pytest.mark.parametrize(
    "started",
    ["postgresql://ana:s3cret@db.example/study", "postgresql://ana@db.example/study?password=s3cret"],
)
def test_a_storage_password_left_out_since_names_the_same_database_and_is_never_shown(
    tmp_path: Path, started: str
) -> None:
    """A config.yaml that kept a password in the storage URL (an older version took one in the
    query; a hand edit): the command must now leave it out, which is the same database, not a
    refusal; and a refusal for another storage masks the saved password."""
    saved = tmp_path / "toy" / "config.yaml"
    saved.parent.mkdir()
    cfg = compose_toy(tmp_path)
    cfg.storage = started
    saved.write_text(OmegaConf.to_yaml(cfg))
    same = compose_toy(tmp_path, "storage=postgresql://ana@db.example/study")
    assert resume_problems(same, saved) == []
    (problem,) = resume_problems(compose_toy(tmp_path, "storage=postgresql://ana@db.example/other"), saved)
    assert "s3cret" not in problem and "***" in problem, problem


def _with_categorical(cfg: AutoresearchConfig) -> AutoresearchConfig:
    """The toy config with a categorical knob as well (Hydra cannot add one on the command line)."""
    cfg.campaign.knobs["BS"] = KnobConfig(kind="categorical", choices=[16, 32])
    return cfg


@pytest.mark.parametrize(
    ("knob", "change", "searched"),
    [
        ("LR", {"low": 0.0001, "high": 0.1}, None),  # Optuna takes new bounds
        ("WIDTH", {"low": 8, "high": 64}, None),
        ("LR", {"log": False}, "float on a log scale, this command says float,"),
        ("WIDTH", {"kind": "float"}, "int on a log scale, this command says float on a log scale,"),
        (
            "BS",
            {"choices": [16, 32, 64]},
            "categorical [16, 32], this command says categorical [16, 32, 64],",
        ),
        ("BS", {"choices": [32, 16]}, "categorical [16, 32], this command says categorical [32, 16],"),
    ],
)
def test_a_resumed_knob_keeps_what_its_study_fixed(
    tmp_path: Path, knob: str, change: dict[str, Any], searched: str | None
) -> None:
    """Optuna fixes a param's kind, log scale and choices at its first trial and fails every later
    trial that asks otherwise (the inner sampler's 20 on each frontier, every proposal that sets
    it); its bounds may move."""
    saved = tmp_path / "toy" / "config.yaml"
    saved.parent.mkdir()
    saved.write_text(OmegaConf.to_yaml(_with_categorical(compose_toy(tmp_path))))
    resumed = _with_categorical(compose_toy(tmp_path))
    for field, value in change.items():
        setattr(resumed.campaign.knobs[knob], field, value)
    problems = resume_problems(resumed, saved)
    if searched is None:
        assert problems == []
    else:
        assert len(problems) == 1, problems
        assert problems[0].startswith(f"campaign.knobs.{knob}: {saved.parent} searched it as {searched}")


def test_an_infinite_bound_of_a_resumed_int_knob_is_named(tmp_path: Path) -> None:
    """On a resume the knobs are compared with the saved config's too, where int(inf) overflowed."""
    saved = tmp_path / "toy" / "config.yaml"
    saved.parent.mkdir()
    saved.write_text(OmegaConf.to_yaml(compose_toy(tmp_path)))
    with pytest.raises(ConfigError) as refused:
        check_config(compose_toy(tmp_path, "campaign.knobs.WIDTH.high=1e999"), saved)
    assert str(refused.value) == "campaign.knobs.WIDTH.high must be a finite number, not inf"


@pytest.mark.parametrize("refused", ["+campaign.wave_sise=3", "campaign.wave_size=0"])
def test_a_refused_command_writes_nothing(tmp_path: Path, refused: str) -> None:
    """Neither a misspelt key nor a value the checks refuse leaves a runs folder behind (Hydra made
    its run folder, which was runs_dir, before either check)."""
    proc = subprocess.run(
        [sys.executable, "-m", "autoresearch", "+campaign=demo", refused],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: bad config: ")
    assert list(tmp_path.iterdir()) == []


TYPED_TRAIN_PY = """
DEPTH = 8 if SCALE == "gpt2" else 2
BATCH = 2**19 if SCALE == "gpt2" else 2**11
LR = 0.01
WINDOWS = "SSSL"
USE_BIAS = False
WIDTH: float = 64
WINDOW: int | None = 256
BETAS = (0.9, 0.95)
STEPS = compute_steps()
"""


@pytest.mark.parametrize(
    ("knob", "problem"),
    [
        (KnobConfig(kind="categorical", choices=[2, 4]), None),
        (
            KnobConfig(kind="categorical", choices=["2", "4"]),
            "choice '2' is a str, but train.py's DEPTH is an int",
        ),
        (
            KnobConfig(kind="categorical", choices=[2, 4.5]),
            "choice 4.5 is a float, but train.py's DEPTH is an int",
        ),
        (
            KnobConfig(kind="categorical", choices=[True, 4]),
            "choice True is a bool, but train.py's DEPTH is an int",
        ),
        (
            KnobConfig(kind="categorical", choices=[None, 4]),
            "choice None is null, but train.py's DEPTH is an int",
        ),
        (KnobConfig(kind="int", low=1, high=4), None),
        (
            KnobConfig(kind="float", low=1, high=4),
            "a float knob draws floats, but train.py's DEPTH is an int",
        ),
    ],
)
def test_a_knob_whose_values_train_py_could_not_use_is_named(
    tmp_path: Path, knob: KnobConfig, problem: str | None
) -> None:
    """A knob's value is written over its constant and used as train.py used that: a string for
    an int constant passed the start and failed in every experiment, at run time."""
    train_py = tmp_path / "train.py"
    train_py.write_text(TYPED_TRAIN_PY)
    cfg = compose_config("+campaign=toy", f"campaign.train_py={train_py}")
    cfg.campaign.knobs = {"DEPTH": knob}
    problems = config_problems(cfg)
    if problem is None:
        assert problems == []
    else:
        said = f"campaign.knobs.DEPTH: {problem} ({train_py} line 2): "
        assert len(problems) == 1 and problems[0].startswith(said), problems


@pytest.mark.parametrize(
    ("name", "knob", "problem"),
    [
        ("BATCH", KnobConfig(kind="categorical", choices=[1024, 2048]), None),  # 2**11: an int
        ("BATCH", KnobConfig(kind="categorical", choices=[1024.0]), "choice 1024.0 is a float, but"),
        ("LR", KnobConfig(kind="categorical", choices=[0, 0.1]), None),  # an int serves for a float
        ("LR", KnobConfig(kind="int", low=0, high=1), None),
        ("WINDOWS", KnobConfig(kind="categorical", choices=["L", "SL"]), None),
        (
            "WINDOWS",
            KnobConfig(kind="int", low=1, high=4),
            "an int knob draws ints, but train.py's WINDOWS is a str",
        ),
        (
            "USE_BIAS",
            KnobConfig(kind="categorical", choices=[0.0, 1.0]),
            "choice 0.0 is a float, but train.py's USE_BIAS is a bool",
        ),
        (
            "USE_BIAS",
            KnobConfig(kind="int", low=0, high=1),
            "an int knob draws ints, but train.py's USE_BIAS is a bool",
        ),
        ("WIDTH", KnobConfig(kind="float", low=32, high=64), None),  # its annotation says float
        ("STEPS", KnobConfig(kind="categorical", choices=["x"]), None),  # a call: its type unknown
        ("WINDOW", KnobConfig(kind="categorical", choices=[None, 128]), None),  # annotated so
        (
            "BETAS",
            KnobConfig(kind="categorical", choices=[[0.8, 0.95]]),
            "choice [0.8, 0.95] is a list; a choice must be",
        ),
    ],
)
def test_a_knob_is_judged_by_the_type_train_py_gives_its_constant(
    tmp_path: Path, name: str, knob: KnobConfig, problem: str | None
) -> None:
    """The type is read from the syntax alone: arithmetic on literals, an annotation; what it cannot
    tell (a call) is not judged. A list choice is refused for any constant: Optuna stores none."""
    train_py = tmp_path / "train.py"
    train_py.write_text(TYPED_TRAIN_PY)
    cfg = compose_config("+campaign=toy", f"campaign.train_py={train_py}")
    cfg.campaign.knobs = {name: knob}
    problems = config_problems(cfg)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(f"campaign.knobs.{name}: {problem}"), problems
