"""The campaign engine end to end on the toy trainer: a real CLI, a real study, real processes."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import (
    FIXTURE_CONF,
    REPO,
    TOY,
    CountingOffline,
    Killed,
    autoresearch_into_closed_pipe,
    campaign_command,
    compose_toy,
    confirming,
    controller_killed_mid_run,
    experiment_runs,
    killed_and_resumed,
    launched_within_budget,
    load,
    make_fleet,
    queue_run,
    read_tsv,
    release,
    run_campaign,
    run_scripted,
    scripted_campaign,
    trial_named,
    wait_for,
)
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState, create_trial

from autoresearch.budget import PRICE_ATTR, by_pool, measure
from autoresearch.campaign import (
    DATA_STEP_TERM_S,
    Campaign,
    CampaignError,
    Summary,
    disk_refusal,
    free_disk_refusal,
)
from autoresearch.cli import python_command
from autoresearch.config import CampaignConfig, backstop_grace, campaign_dir_of, deadline_seconds
from autoresearch.decisions import Decisions
from autoresearch.files import ENDED_WRITE_S, read_json, write_json_atomic
from autoresearch.fleet.base import Finished, JobSpec
from autoresearch.fleet.local import LocalFleet
from autoresearch.fleet.runner_pid import is_our_runner
from autoresearch.fleet.slurm_states import outcome_for_state
from autoresearch.frontier import Frontier
from autoresearch.heartbeat import controller_state
from autoresearch.intake import Intake
from autoresearch.launcher import MAX_DEAD_EXPLORATIONS
from autoresearch.ledger import MEASUREMENT_KINDS
from autoresearch.proposals import Candidate, Edit, Grid, Wave
from autoresearch.proposers.base import CampaignContext
from autoresearch.results import render, row_of, rows
from autoresearch.runner import OUTCOME_FILE, PID_FILE, REFUSED_FILE, STARTED_FILE
from autoresearch.status import NOT_COLLECTED, launch_state
from autoresearch.study import StudyTaken
from autoresearch.temporaries import SWEEP_FILE
from autoresearch.workspace import OVERWRITTEN_EDITS, experiment_dir


def test_toy_campaign_end_to_end(tmp_path: Path) -> None:
    proc = run_campaign(tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    campaign = tmp_path / "toy"
    study = load(campaign)
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    launched_within_budget(study, 12)
    rows = read_tsv(campaign / "results.tsv")
    assert {int(r["trial"]) for r in rows} == {t.number for t in done}
    assert list(rows[0])[:5] == ["commit", "val_bpb", "memory_gb", "status", "description"]
    statuses = Counter(r["status"] for r in rows)
    assert statuses["baseline"] == 3  # the screen tier's 2, and one at the screening seed
    assert statuses["keep"] >= 1, rows
    best_kept = min(float(r["val_bpb"]) for r in rows if r["status"] == "keep")
    baseline = min(float(r["val_bpb"]) for r in rows if r["status"] == "baseline")
    assert best_kept < baseline
    # Each keep is a commit of the frontier lineage, message = trial + description.
    log = subprocess.run(
        ["git", "log", "--format=%s"], cwd=campaign / "frontier", capture_output=True, text=True, check=True
    ).stdout.splitlines()
    kept = [r for r in rows if r["status"] == "keep"]
    assert len(log) == 1 + len(kept)
    assert {f"trial {r['trial']}: {r['description']}" for r in kept} <= set(log)
    assert (campaign / "progress.png").stat().st_size > 1000
    # It stopped at its budget, and says which setting goes on (a resume as it is stops at once).
    assert "to go on, run the same command with a larger campaign.budget.max_experiments\n" in proc.stdout
    # Each keep records how far below the frontier it landed (min_delta is 0.0005 by default).
    kept_trials = [t for t in done if t.user_attrs.get("status") == "keep"]
    assert kept_trials and all(t.user_attrs["delta"] <= -0.0005 for t in kept_trials)
    # Each keep was confirmed by two re-runs of its exact train.py with fresh seeds.
    for t in kept_trials:
        reruns = confirming(done, t.number)
        assert t.user_attrs["reason"].startswith("confirmed: ")
        assert [r.user_attrs["status"] for r in reruns] == ["rerun", "rerun"]
        assert {r.user_attrs["run_key"] for r in reruns} == {t.user_attrs["run_key"]}
        assert len({t.user_attrs["seed"], *(r.user_attrs["seed"] for r in reruns)}) == 3
    # Knob values are trial params; the edit is a file under the campaign folder.
    some = next(t for t in done if t.user_attrs.get("kind") == "experiment")
    assert (campaign / some.user_attrs["edit"]).is_file()
    # A proposed run that moved declared knobs alone is one the inner sampler may learn from.
    knobs_only = {}
    for t in (t for t in done if "exp_dir" in t.user_attrs):
        diff = (campaign / t.user_attrs["exp_dir"] / "train.diff").read_text().splitlines()
        changed = [line[1:] for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        moved_knobs = bool(changed) and all(line.startswith(("LR = ", "WIDTH = ")) for line in changed)
        knobs_only[t.number] = t.user_attrs["knobs_only"]
        assert knobs_only[t.number] == (moved_knobs and t.user_attrs["kind"] not in MEASUREMENT_KINDS)
    assert True in knobs_only.values() and False in knobs_only.values(), knobs_only


def test_resolved_config_and_typo_errors(tmp_path: Path) -> None:
    proc = subprocess.run(
        campaign_command(tmp_path, "--cfg", "job"), cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "name: toy" in proc.stdout and "max_experiments: 12" in proc.stdout
    # Hydra's several-line accounts of a bad override become one line and exit code 2.
    proc = run_campaign(tmp_path, "campaign.wave_sise=3")
    assert (proc.returncode, proc.stderr.splitlines()) == (
        2,
        [
            "error: bad config: Could not override 'campaign.wave_sise': no 'wave_sise' in campaign "
            "(did you mean wave_size?)"
        ],
    )
    # A value not of its setting's type says the type as a user says it, not OmegaConf's name for it.
    for override, said in [
        (
            "campaign.min_delta=lots",
            "campaign.min_delta takes a number, not 'lots': e.g. campaign.min_delta=0.5",
        ),
        (
            "campaign.budget.max_experiments=ten",
            "campaign.budget.max_experiments takes a whole number, not 'ten': e.g. "
            "campaign.budget.max_experiments=10",
        ),
        (
            "campaign.synchronous=maybe",
            "campaign.synchronous takes true or false, not 'maybe': e.g. campaign.synchronous=true",
        ),
    ]:
        proc = run_campaign(tmp_path, override)
        assert (proc.returncode, proc.stderr.splitlines()) == (2, [f"error: bad config: {said}"])
    proc = run_campaign(tmp_path, "campaign.wave_size=[")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "cannot read the override 'campaign.wave_size=['" in proc.stderr
    proc = run_campaign(tmp_path, "+campaign=nope")
    (line,) = proc.stderr.splitlines()
    assert proc.returncode == 2
    assert line.startswith("error: bad config: In 'config': Could not find 'campaign/nope' (one of: ")
    options = line.split("(one of: ")[1].rstrip(")").split(", ")
    campaigns = [
        p.stem for p in (*(REPO / "conf").glob("campaign/*.yaml"), *FIXTURE_CONF.glob("campaign/*.yaml"))
    ]
    assert sorted(options) == sorted(campaigns)  # the campaigns, and nothing else
    assert not (tmp_path / "toy").exists()  # refused before anything is written


def test_baselines_killed_at_a_deadline_too_short_name_the_setting_to_raise(tmp_path: Path) -> None:
    """A grace too short for start-up, compilation and evaluation (cluster.grace_seconds=0 and a
    short time budget) kills every baseline at its deadline: the stop says what to raise, not only
    "fix the cause", which for a train.py that is fine reads as a fault in it."""
    proc = run_campaign(tmp_path, "cluster.grace_seconds=0", env={"TOY_SECONDS": "5"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (said,) = [line for line in proc.stdout.splitlines() if "ERROR" in line]
    assert (
        "failed (trial 0, timeout: killed at the 2 s deadline); nothing can be judged against it: raise "
        in said
    )
    assert "cluster.grace_seconds (the deadline is 2 x the time budget + cluster.grace_seconds; " in said


def test_a_starting_train_py_that_crashes_ends_the_campaign(tmp_path: Path) -> None:
    """Nothing can be judged against a start that never ran: the campaign stops at once, with the
    crash in one line, instead of spending its budget on edits of a broken file."""
    broken = tmp_path / "train.py"
    broken.write_text("raise RuntimeError('boom: broken at the start')\nLR = 0.1\nWIDTH = 64\n")
    proc = run_campaign(tmp_path, f"campaign.train_py={broken}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # in one line, as the output is not a terminal (a pipe here; a Slurm job's file, nohup)
    (said,) = [line for line in proc.stdout.splitlines() if "ERROR" in line]
    assert "ERROR    every baseline run of the starting train.py failed (trial 0, crash: exit 1: " in said
    assert "RuntimeError: boom: broken at the start" in said and "Traceback" not in proc.stdout
    ended = controller_state(tmp_path / "toy") or ""
    assert re.fullmatch(
        r"stopped .*: every baseline run of the starting train\.py failed \(trial 0, .*", ended
    )
    study = load(tmp_path / "toy")
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    ran = [t for t in study.trials if "exp_dir" in t.user_attrs]
    baselines = [t for t in ran if t.user_attrs["kind"] == "baseline"]
    assert len(baselines) == 3 and all(t.state == TrialState.FAIL for t in baselines)
    # only slots that freed up before the controller learnt of the last baseline's failure took an
    # edit of the broken file (`ended_at` is the job's own clock, earlier than the controller hears)
    last_failure = max(t.datetime_complete.timestamp() for t in baselines)
    assert all(t.user_attrs["launched_at"] <= last_failure for t in ran), [
        (t.user_attrs["launched_at"], t.user_attrs["kind"]) for t in ran
    ]
    proc = run_campaign(tmp_path, f"campaign.train_py={broken}")  # the same command says the same
    assert proc.returncode == 2 and len(
        [t for t in load(tmp_path / "toy").trials if "exp_dir" in t.user_attrs]
    ) == len(ran)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a GPU listed that torch cannot use")
def test_a_gpu_campaign_whose_jobs_see_no_gpu_stops_with_the_reason(tmp_path: Path) -> None:
    """The real harness in jobs that need a GPU and see none (here one listed but unusable: a CPU
    build of torch, as with a driver older than the build): each stops at import, is recorded as
    lost and re-run, and once every baseline run is spent the campaign stops with the reason,
    not with hours of CPU training or a blamed train.py."""
    proc = run_campaign(
        tmp_path,
        "campaign.require_gpu=true",
        f"campaign.prepare_py={REPO / 'trainer' / 'prepare.py'}",
        "campaign.prepare_data=false",
        "campaign.max_retries=1",
        "cluster.devices=auto",
        env={"CUDA_VISIBLE_DEVICES": "0"},  # the local fleet sees one GPU; torch here cannot use it
    )
    said = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, said
    assert (
        "every baseline run of the starting train.py was cancelled or lost to the cluster "
        "(trial 0, lost: the node cannot run it: " in said
    )
    assert "run the command again to queue them again" in said and "start over" not in said
    assert "FAIL: this job needs a CUDA GPU and sees none" in said
    study = load(tmp_path / "toy")
    statuses = Counter(t.user_attrs.get("status") for t in study.trials if "exp_dir" in t.user_attrs)
    assert statuses == {"lost": 6}  # three baselines, each run again once, none blamed as a crash
    lost = [t.user_attrs for t in study.trials if "exp_dir" in t.user_attrs]
    assert all(a["node_unfit"] is True and a["node"] for a in lost)  # for a resumed fleet to keep out
    spec = json.loads((tmp_path / "toy" / study.trials[0].user_attrs["exp_dir"] / "spec.json").read_text())
    assert spec["env"]["AUTORESEARCH_REQUIRE_GPU"] == "1"


def test_a_gpu_campaign_is_refused_on_a_machine_without_gpus(tmp_path: Path) -> None:
    proc = run_campaign(
        tmp_path, "campaign.require_gpu=true", "cluster.devices=auto", env={"CUDA_VISIBLE_DEVICES": ""}
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(
        "error: this campaign trains on GPUs (campaign.require_gpu), and this machine shows no GPU"
    )
    assert "campaign.require_gpu=false" in line  # the way out, for a run on the CPU anyway
    assert not (tmp_path / "toy").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (["cluster=slurm"], "error: cluster=slurm, but sbatch, srun, sacct, scancel not found on PATH"),
        ([], "error: git is not on PATH"),
    ],
)
def test_missing_commands_are_named_in_one_line(tmp_path: Path, overrides: list[str], error: str) -> None:
    empty = tmp_path / "bin"  # processes start from sys.executable: nothing else is on PATH
    empty.mkdir()
    proc = run_campaign(tmp_path, *overrides, env={"PATH": str(empty)})
    assert proc.returncode == 2
    said = " ".join((proc.stdout + proc.stderr).split())
    assert error in said and "Traceback" not in said


CONSOLE_SCRIPT = str(Path(sys.executable).with_name("autoresearch"))


@pytest.mark.parametrize("command", [[sys.executable, "-m", "autoresearch"], [CONSOLE_SCRIPT]])
def test_a_missing_campaign_is_one_clear_line(tmp_path: Path, command: list[str]) -> None:
    """A first try without +campaign=... names the choice to make instead of a Hydra traceback,
    from the console script as from `python -m`, run from any folder."""
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [*command, f"runs_dir={runs}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: no campaign chosen: add +campaign=NAME (one of: demo, gpt2), "
        "e.g. python -m autoresearch +campaign=demo"
    ]
    # with campaigns of one's own (README: --config-dir), theirs are named too
    proc = subprocess.run(
        [*command, f"--config-dir={FIXTURE_CONF}", f"runs_dir={runs}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    names = sorted(
        {p.stem for p in (*(REPO / "conf").glob("campaign/*.yaml"), *FIXTURE_CONF.glob("campaign/*.yaml"))}
    )
    assert "toy" in names and proc.stderr.splitlines() == [
        f"error: no campaign chosen: add +campaign=NAME (one of: {', '.join(names)}), "
        "e.g. python -m autoresearch +campaign=demo"
    ]
    proc = run_campaign(tmp_path, "campaign.name=???")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: campaign.name has no value")
    assert not list(tmp_path.glob("*/*")), "a refused config must not create campaign folders"


def test_a_runs_dir_that_cannot_be_written_is_one_line_and_loses_nothing(tmp_path: Path) -> None:
    """runs_dir on a file (as on a read-only or vanished mount): the folder cannot be made, and the
    command says so and what to set, instead of ending in a traceback."""
    taken = tmp_path / "results.txt"
    taken.write_text("a researcher's notes\n")
    proc = run_campaign(taken)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: cannot write the campaign folder {taken / 'toy'}: Not a directory; "
        "set runs_dir=... to a folder you can write"
    ]
    assert taken.read_text() == "a researcher's notes\n"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["stauts", "runs/toy"],
            "error: unknown command 'stauts': did you mean `autoresearch status ...`? autoresearch status DIR, "
            "autoresearch report DIR, or a campaign: autoresearch [check] +campaign=NAME [key=value ...]",
        ),
        (
            ["campaign=demo"],
            "error: bad config: Could not override 'campaign'. No match in the defaults list: "
            "add it with a +, as in +campaign=NAME",
        ),
        (  # a + adds any key: a misspelt one would be dropped, and the campaign run without it
            ["+campaign=demo", "+campaign.budget.max_experimnts=1", "+foo=1", "runs_dir=/nonexistent"],
            "error: bad config: no such setting: foo; campaign.budget.max_experimnts (did you mean max_experiments?)",
        ),
        (  # a misspelt setting is named with the one meant, at any depth
            ["+campaign=demo", "campaign.budget.max_experimens=5"],
            "error: bad config: Could not override 'campaign.budget.max_experimens': no 'max_experimens' in "
            "campaign.budget (did you mean max_experiments?)",
        ),
        (  # a section's setting given without its section: named where it is
            ["+campaign=demo", "budget.max_experiments=5"],
            "error: bad config: Could not override 'budget.max_experiments': no setting 'budget' "
            "(did you mean campaign.budget?)",
        ),
        (  # a section's own name before a top-level one close to it, which is another setting
            ["+campaign=demo", "train_py=mine.py"],
            "error: bad config: Could not override 'train_py': no setting 'train_py' "
            "(did you mean campaign.train_py?)",
        ),
        (  # every section that has it, at any depth: naming one could name the wrong one
            ["+campaign=demo", "kind=slurm", "max_experiments=5"],
            "error: bad config: Could not override 'kind': no setting 'kind' "
            "(did you mean cluster.kind or agent.kind or tracking.kind?)",
        ),
        (  # in a section, the setting of that very name elsewhere before a name close to it here
            ["+campaign=demo", "campaign.max_experiments=5"],
            "error: bad config: Could not override 'campaign.max_experiments': no 'max_experiments' in "
            "campaign (did you mean campaign.budget.max_experiments?)",
        ),
        (
            ["+campaign=demo", "max_experiments=5"],
            "error: bad config: Could not override 'max_experiments': no setting 'max_experiments' "
            "(did you mean campaign.budget.max_experiments?)",
        ),
        (
            ["+campaign=demo", "runs_dri=elsewhere"],
            "error: bad config: Could not override 'runs_dri': no setting 'runs_dri' (did you mean runs_dir?)",
        ),
        (  # OmegaConf refuses a new entry in a typed map; say where it goes instead
            ["+campaign=demo", "+campaign.knobs.WEIGHT_DECAY={kind:float,low:0.0,high:0.2}"],
            "error: bad config: Error merging override +campaign.knobs.WEIGHT_DECAY={kind:float,low:0.0,high:0.2}: "
            "Hydra cannot add a knob or a partition on the command line; add it in a campaign or cluster "
            "file of your own (--config-dir, see docs/CAMPAIGNS.md)",
        ),
        (  # a field of a knob the campaign lacks: a misspelt name, or one meant to be added
            ["+campaign=demo", "campaign.knobs.DEPTHX.high=16"],
            "error: bad config: Could not override 'campaign.knobs.DEPTHX.high': no 'DEPTHX' in campaign.knobs "
            "(did you mean DEPTH?); Hydra cannot add a knob or a partition on the command line; add it in a "
            "campaign or cluster file of your own (--config-dir, see docs/CAMPAIGNS.md)",
        ),
        (
            ["+campaign=demo", "cluster.partitions.gpu.slots=3"],
            "error: bad config: Could not override 'cluster.partitions.gpu.slots': no 'gpu' in "
            "cluster.partitions (local); Hydra cannot add a knob or a partition on the command line; add it "
            "in a campaign or cluster file of your own (--config-dir, see docs/CAMPAIGNS.md)",
        ),
        (  # an sbatch option is added to the open extra_sbatch, as docs/SLURM.md has it: say how
            ["+campaign=demo", "cluster=slurm", "cluster.partitions.h100.extra_sbatch={reservation:maint}"],
            "error: bad config: Could not override 'cluster.partitions.h100.extra_sbatch': no 'reservation' in "
            "cluster.partitions.h100.extra_sbatch yet: add an sbatch option with a +, as in "
            "+cluster.partitions.h100.extra_sbatch.reservation=VALUE or "
            "+cluster.partitions.h100.extra_sbatch={reservation:VALUE}",
        ),
    ],
)
def test_a_mistyped_command_is_one_line_that_says_what_to_type(args: list[str], said: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "autoresearch", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and proc.stderr.splitlines() == [said]


@pytest.mark.parametrize(
    ("campaign_edit", "cluster_edit", "said"),
    [
        (
            ("\nbudget:", "\nbudegt:"),
            None,
            "error: bad config: In 'campaign/mine': no 'budegt' in campaign (did you mean budget?)",
        ),
        (
            ("max_experiments: 12", "max_experiments: twelve"),
            None,
            "error: bad config: In 'campaign/mine': campaign.budget.max_experiments takes a whole number, "
            "not 'twelve'",
        ),
        (
            None,
            ("    gres: gpu:a100:1", "    gress: gpu:a100:1"),
            "error: bad config: In 'cluster/mysite': no 'gress' in cluster.partitions.a100 (did you mean gres?)",
        ),
        (
            None,
            ("    slots: 8", "    slots: many"),
            "error: bad config: In 'cluster/mysite': cluster.partitions.a100.slots takes a whole number, "
            "not 'many'",
        ),
    ],
)
def test_a_bad_setting_in_a_file_of_ones_own_is_one_line_naming_it(
    tmp_path: Path, campaign_edit: tuple[str, str] | None, cluster_edit: tuple[str, str] | None, said: str
) -> None:
    """docs/CAMPAIGNS.md, "Your own campaign": a campaign or cluster file in a --config-dir. A setting
    Hydra refuses as it merges the file is named with the file and why, as one on the command line
    is, instead of Hydra's first line alone ("ConfigKeyError raised while composing config:")."""
    conf = tmp_path / "conf"
    (conf / "campaign").mkdir(parents=True)
    (conf / "cluster").mkdir()
    campaign = (FIXTURE_CONF / "campaign" / "toy.yaml").read_text().replace("name: toy", "name: mine")
    cluster = (
        "kind: slurm\npartitions:\n  a100:\n    partition: gpu-a100\n    gres: gpu:a100:1\n"
        "    gpu_type: a100\n    slots: 8\n    price_per_gpu_hour: 1.8\ntiers:\n  screen: a100\n"
        "  validate: a100\n"
    )
    for text, edit, path in (
        (campaign, campaign_edit, "campaign/mine.yaml"),
        (cluster, cluster_edit, "cluster/mysite.yaml"),
    ):
        if edit:
            assert edit[0] in text
            text = text.replace(*edit)
        (conf / path).write_text(text)
    assert_refused_in_one_line(conf, tmp_path / "runs", said, "+campaign=mine", "cluster=mysite")


def assert_refused_in_one_line(conf: Path, runs: Path, said: str, *chosen: str) -> None:
    """The start and `check`, with config files of one's own (`conf`), each refuse in the one line
    `said`, exit code 2, and write nothing under `runs`."""
    for command in ([], ["check"]):
        args = [*command, f"--config-dir={conf}", *chosen, f"runs_dir={runs}"]
        proc = subprocess.run(
            [sys.executable, "-m", "autoresearch", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and proc.stderr.splitlines() == [said], proc.stderr
    assert not runs.exists()


def test_a_file_of_ones_own_that_is_not_yaml_is_one_line_naming_where(tmp_path: Path) -> None:
    """A campaign file with an unclosed brace, or a cluster file indented with a tab, ended the
    command in yaml's traceback, exit code 1: now one line naming the file, line and column."""
    conf = tmp_path / "conf"
    (conf / "campaign").mkdir(parents=True)
    (conf / "cluster").mkdir()
    toy = (FIXTURE_CONF / "campaign" / "toy.yaml").read_text()
    (conf / "campaign" / "mine.yaml").write_text(toy.replace("log: true}", "log: true", 1))
    (conf / "campaign" / "fine.yaml").write_text(toy.replace("name: toy", "name: fine"))
    (conf / "cluster" / "tabs.yaml").write_text("kind: local\npartitions:\n\tlocal:\n    slots: 2\n")
    for chosen, said in (
        (
            ["+campaign=mine"],
            f"error: bad config: {conf / 'campaign' / 'mine.yaml'} is not valid YAML: while parsing a flow "
            "mapping (line 11): expected ',' or '}', but got ':' at line 12, column 8",
        ),
        (
            ["+campaign=fine", "cluster=tabs"],
            f"error: bad config: {conf / 'cluster' / 'tabs.yaml'} is not valid YAML: found character '\\t' "
            "that cannot start any token at line 3, column 1",
        ),
    ):
        assert_refused_in_one_line(conf, tmp_path / "runs", said, *chosen)


def test_a_first_start_without_any_budget_says_it_runs_until_stopped(
    tmp_path: Path, open_campaign: Callable[..., Campaign], caplog: pytest.LogCaptureFixture
) -> None:
    """Each budget 0, as one may write for "nothing to spend", is no limit: the campaign ran, its
    agent paid for, until stopped, and the start said nothing of it."""
    caplog.set_level(logging.WARNING, logger="autoresearch")
    open_campaign(tmp_path, [], "campaign.budget.max_experiments=0")
    assert [r.getMessage() for r in caplog.records] == [
        "no budget set (campaign.budget's max_experiments, max_wall_hours, max_gpu_hours and max_dollars "
        "are all 0, which is no limit): the campaign runs until stopped (Ctrl-C) or its proposer has "
        "nothing new; set one to end it"
    ]
    caplog.clear()
    open_campaign(tmp_path / "bounded", [], "campaign.budget.max_wall_hours=0.5")
    assert caplog.records == []


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (
            (
                "WIDTH: {kind: int, low: 16, high: 1024, log: true}",
                "WIDTH: {kind: categorical, choices: ['16', '32']}",
            ),
            "campaign.knobs.WIDTH: choice '16' is a str, but train.py's WIDTH is an int "
            "(tests/fixtures/toy/train.py line 13): give choices of its type",
        ),
        (
            ("WIDTH: {kind:", "WIDHT: {kind:"),
            "campaign.knobs.WIDHT: tests/fixtures/toy/train.py has no module-level constant WIDHT: did you "
            "mean WIDTH?",
        ),
        (
            ("LR: {kind:", "lr: {kind:"),
            "campaign.knobs.lr: tests/fixtures/toy/train.py has no module-level constant lr: did you mean LR?",
        ),
        (
            ("low: 0.001, high: 0.5, log: true", "low: 0.0, high: 0.5, log: true"),
            "campaign.knobs.LR: low=0.0, but a log-scale float knob needs low above 0: raise low, or set "
            "log: false",
        ),
        (
            ("wave_size: 4", "wave_size: 4\nkeep_z: 99"),
            "campaign.keep_z=99 asks a change to beat the frontier by 99 times the seed noise, which none "
            "will: it counts standard deviations, not a percentage (2 is about 98% sure); give at most 10",
        ),
        (  # bounds given to a knob of choices
            ("WIDTH: {kind: int, low: 16", "WIDTH: {kind: categorical, low: 16"),
            "campaign.knobs.WIDTH: a categorical knob needs choices, and has none: give choices: [a, b, ...]",
        ),
        (  # to choose the agent's model, in the campaign's own file
            ("wave_size: 4", "wave_size: 4\nagent:\n  model: claude-opus-4-1"),
            "In 'campaign/mine': agent is not a campaign setting (a campaign file sets campaign.* only): give "
            "agent.SETTING=... on the command line, or choose an agent file of your own (agent/mine.yaml beside "
            "campaign/) in the campaign file's defaults list, as gpt2.yaml chooses its agent: - override "
            "/agent@_global_.agent: mine",
        ),
        (
            ("wave_size: 4", "wave_size: 4\nstorage: postgresql://me@db.example/runs"),
            "In 'campaign/mine': storage is not a campaign setting (a campaign file sets campaign.* only): "
            "give storage=... on the command line",
        ),
    ],
)
def test_a_researchers_mistake_in_a_campaign_file_is_refused_in_one_line(
    tmp_path: Path, edit: tuple[str, str], said: str
) -> None:
    """Mistakes a campaign file of one's own (docs/CAMPAIGNS.md) is likely to hold, each refused by
    the start and by `autoresearch check` in one line that names the setting and what to do."""
    conf = tmp_path / "conf"
    (conf / "campaign").mkdir(parents=True)
    toy = (FIXTURE_CONF / "campaign" / "toy.yaml").read_text().replace("name: toy", "name: mine")
    assert edit[0] in toy
    (conf / "campaign" / "mine.yaml").write_text(toy.replace(*edit))
    assert_refused_in_one_line(conf, tmp_path / "runs", f"error: bad config: {said}", "+campaign=mine")


@pytest.mark.parametrize("tool", ["status", "report"])
def test_python_m_autoresearch_runs_the_tools_as_the_console_script_does(tmp_path: Path, tool: str) -> None:
    """README: the console script is the same command as `python -m autoresearch`, tools included;
    usage and --help name the command as it was typed."""
    (tmp_path / "config.yaml").write_text("campaign:\n  name: early\nstorage: null\n")
    console_script = str(Path(sys.executable).with_name("autoresearch"))
    by_module_m, by_console = [sys.executable, "-m", "autoresearch"], [console_script]
    for args in ([tool, str(tmp_path)], [tool]):
        by_module, by_script = (
            subprocess.run([*command, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
            for command in (by_module_m, by_console)
        )
        as_typed = by_module.stderr.replace(f"python -m autoresearch {tool}", f"autoresearch {tool}")
        assert (by_module.returncode, by_module.stdout, " ".join(as_typed.split())) == (
            by_script.returncode,
            by_script.stdout,
            " ".join(by_script.stderr.split()),  # (the longer name wraps the usage line elsewhere)
        )
    assert by_module.stderr.startswith(f"usage: python -m autoresearch {tool} ")  # (no folder given)
    assert by_script.stderr.startswith(f"usage: autoresearch {tool} ")
    for command, typed in (
        ([*by_console, tool], f"autoresearch {tool}"),
        ([*by_module_m, tool], f"python -m autoresearch {tool}"),
        ([sys.executable, "-m", f"autoresearch.{tool}"], f"python -m autoresearch.{tool}"),
    ):
        helped = subprocess.run([*command, "--help"], cwd=tmp_path, capture_output=True, text=True)
        assert helped.returncode == 0 and helped.stdout.startswith(f"usage: {typed} "), helped.stdout
        assert helped.stdout.count("autoresearch") == 1, helped.stdout  # the command as typed, no other


DEAF_TO_TERM = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
STARTS_A_DEAF_CHILD = (
    "code = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'\n"
    "child = subprocess.Popen([sys.executable, '-c', code])\n"
    "open(os.environ['PREPARE_PID'] + '.child', 'w').write(str(child.pid))\n"
)


@pytest.mark.parametrize("ignores_term", [False, True])
def test_ctrl_c_while_the_data_is_prepared_stops_the_start_as_any_ctrl_c(
    tmp_path: Path, ignores_term: bool
) -> None:
    """A Ctrl-C (the terminal's SIGINT to the whole foreground group) while prepare.py runs: the
    controller ends the step and stops as it stops at any other time (exit 3, no error, nothing
    bound), instead of prepare.py dying of it in a traceback and the start failing with exit 2.
    A step deaf to SIGTERM (stuck in a native call) is killed after DATA_STEP_TERM_S, not waited
    for with the controller's exit held for ever, and what it started with it."""
    prepare, started = tmp_path / "prepare.py", tmp_path / "prepare.pid"
    prepare.write_text(
        "import os, signal, time\n"
        + (DEAF_TO_TERM + "import subprocess, sys\n" + STARTS_A_DEAF_CHILD if ignores_term else "")
        + "open(os.environ['PREPARE_PID'], 'w').write(str(os.getpid()))\n"
        + "while True:\n    time.sleep(0.05)\n"
    )
    command = campaign_command(tmp_path, "campaign.prepare_data=true", f"campaign.prepare_py={prepare}")
    env = {**os.environ, "PREPARE_PID": str(started)}
    controller = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    wait_for(lambda: started.is_file() and started.read_text(), 60, "prepare.py to start")
    os.killpg(controller.pid, signal.SIGINT)
    try:
        out, _ = controller.communicate(timeout=DATA_STEP_TERM_S + 60)
    finally:
        with contextlib.suppress(ProcessLookupError):  # (gone already where it was killed)
            os.kill(int(started.read_text()), signal.SIGKILL)
    assert controller.returncode == 3, out
    assert "Traceback" not in out and "ERROR" not in out, out
    assert "stopped while preparing the data" in out
    assert (f"did not end {DATA_STEP_TERM_S:.0f} s after SIGTERM: killed it" in out) == ignores_term, out
    if ignores_term:
        child = int(Path(f"{started}.child").read_text())
        alive = (
            Path(f"/proc/{child}").exists()
            and Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        )
        if alive:
            os.kill(child, signal.SIGKILL)
        assert not alive
    assert controller_state(tmp_path / "toy").startswith("stopped ")
    assert "error" not in controller_state(tmp_path / "toy")
    assert not (tmp_path / "toy" / "config.yaml").exists()  # the start bound nothing
    assert "started_at" not in load(tmp_path / "toy").user_attrs  # nor began the wall-clock budget
    assert "report:" not in out  # (an earlier run's report is not this one's)
    assert not Path(f"/proc/{started.read_text()}").exists()  # the step was ended


# The controller's last line after a second Ctrl-C or SIGTERM.
INTERRUPTED = "interrupted: running experiments stay, and a re-run re-attaches to them"


@pytest.mark.parametrize(("signals", "code"), [([signal.SIGINT], 3), ([signal.SIGINT, signal.SIGTERM], 130)])
def test_ctrl_c_stops_and_a_rerun_finishes_the_work(tmp_path: Path, signals: list[int], code: int) -> None:
    """One signal: no new experiments, exit 3; a second one: leave at once, exit 130, no
    traceback. Either way the running experiments go on and a re-run collects them."""
    campaign = tmp_path / "toy"
    run_log = tmp_path / "runs.log"
    env = {**os.environ, "TOY_RUN_LOG": str(run_log), "TOY_SECONDS": "2"}
    log_file = tmp_path / "controller.out"
    with log_file.open("w") as out:
        controller = subprocess.Popen(campaign_command(tmp_path), cwd=REPO, env=env, stdout=out, stderr=out)
        try:
            wait_for(lambda: any(campaign.glob("experiments/*/runner.pid")), 60, "a running experiment")
            for signum in signals:
                controller.send_signal(signum)
        finally:
            controller.wait(timeout=60)
    said = " ".join(log_file.read_text().split())
    assert controller.returncode == code, said
    # (the second signal can land while the first one's handler is still writing its line)
    stop_line = "stopping: no new experiments" if code == 3 else INTERRUPTED
    assert stop_line in said and "Traceback" not in said
    proc = subprocess.run(
        campaign_command(tmp_path), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    runs = experiment_runs(run_log)
    assert runs and max(runs.values()) == 1, runs  # nothing ran twice
    study = load(campaign)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    told = {t.user_attrs["exp_dir"] for t in study.trials if t.state == TrialState.COMPLETE}
    assert told <= {str(Path(p).relative_to(campaign)) for p in runs}


def test_a_stop_with_runs_in_flight_says_they_go_on_not_that_nothing_ran(tmp_path: Path) -> None:
    """A Ctrl-C while the baselines run (held): the closing lines count them as in flight, which
    the next run collects, where they read "0 experiments" and "no experiment has run yet"."""
    hold = tmp_path / "hold"  # (the toy's runs wait while it exists)
    hold.touch()
    env = {**os.environ, "TOY_HOLD": str(hold)}
    log_file = tmp_path / "controller.out"
    with log_file.open("w") as out:
        controller = subprocess.Popen(campaign_command(tmp_path), cwd=REPO, env=env, stdout=out, stderr=out)
        try:
            wait_for(lambda: any(tmp_path.glob("toy/experiments/*/started.json")), 60, "a run started")
            controller.send_signal(signal.SIGINT)
        finally:
            controller.wait(timeout=60)
    said = " ".join(log_file.read_text().split())
    assert controller.returncode == 3, said
    in_flight = re.search(r"0 crashed, (\d+) still in flight \(the same command collects them\)", said)
    assert in_flight and int(in_flight.group(1)) >= 1, said
    assert f"no experiment has ended yet ({in_flight.group(1)} in flight)" in said, said
    hold.unlink()  # the runs go on; the next run collects them and says nothing is in flight
    proc = subprocess.run(
        campaign_command(tmp_path), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "still in flight" not in proc.stderr + proc.stdout, (
        proc.stderr + proc.stdout
    )


# A controller that gets a Ctrl-C as it checks the start, before it hears stops.
# (Python's own Ctrl-C handler first: a process started in the background, as a CI job may be,
# inherits SIGINT ignored, and the Ctrl-C would never come.)
CTRL_C_AT_THE_CHECKS = """
import os, runpy, signal
signal.signal(signal.SIGINT, signal.default_int_handler)
import autoresearch.start_checks as checks
checking = checks.start_checks
def interrupted(cfg):
    os.kill(os.getpid(), signal.SIGINT)
    return checking(cfg)
checks.start_checks = interrupted
runpy.run_module("autoresearch", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    ("words", "again"),
    [([], "starts or resumes the campaign"), (["check"], "checks it again")],
    ids=["start", "check"],
)
def test_ctrl_c_while_the_controller_starts_is_one_line_and_exit_130(
    tmp_path: Path, words: list[str], again: str
) -> None:
    """A Ctrl-C in the seconds a start takes before the controller hears stops (imports, Hydra,
    the start's checks) ended it in a KeyboardInterrupt traceback of some 40 lines; and the same
    line of `autoresearch check`, which starts nothing, said the command starts the campaign."""
    command = campaign_command(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", CTRL_C_AT_THE_CHECKS, *words, *command[3:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 130, proc.stdout + proc.stderr
    assert proc.stderr == f"interrupted: nothing is lost; the same command {again}\n"
    assert not (tmp_path / "toy").exists()


# A controller with Python's own Ctrl-C handler, as a terminal gives it (see CTRL_C_AT_THE_CHECKS);
# in mode "second-at-report", a second Ctrl-C comes as the stop's report.html is written; in
# "ctrl-c-after-all-is-said", one comes as the controller leaves, once all is said.
CTRL_C_HANDLER = """
import os, runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
mode = sys.argv.pop(1)
if mode == "second-at-report":
    import autoresearch.campaign as campaign
    writing = campaign.write_report
    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return writing(*args, **kwargs)
    campaign.write_report = interrupted
try:
    runpy.run_module("autoresearch", run_name="__main__", alter_sys=True)
finally:
    if mode == "ctrl-c-after-all-is-said":
        os.kill(os.getpid(), signal.SIGINT)
        os.write(2, b"went on after a Ctrl-C that came once all was said\\n")
"""


def controller_with_ctrl_c(runs_dir: Path, out: Path, when: str = "once") -> subprocess.Popen:
    """The toy campaign's controller, its output in `out`, stopped by a Ctrl-C once it runs an
    experiment (its first: it has said `stopping: ...` when this returns); `when` another comes
    (CTRL_C_HANDLER's modes), if ever."""
    command = [sys.executable, "-c", CTRL_C_HANDLER, when, *campaign_command(runs_dir)[3:]]
    with out.open("w") as written:
        controller = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, "TOY_SECONDS": "2"}, stdout=written, stderr=written
        )

    def running() -> bool:
        return controller.poll() is not None or any(runs_dir.glob("toy/experiments/*/runner.pid"))

    wait_for(running, 60, "a running experiment")
    assert controller.returncode is None, out.read_text()
    controller.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping: no new experiments" in out.read_text(), 60, "the stop's line")
    return controller


def assert_the_stop_was_saved(campaign: Path) -> None:
    """What the first stop writes as it exits, each file whole: report.html, results.tsv,
    controller.json's last word, no temporary left."""
    assert "stopped by the user" in (campaign / "report.html").read_text()
    assert (campaign / "results.tsv").read_text().startswith("commit\t")
    assert controller_state(campaign).startswith("stopped ") and "by the user" in controller_state(campaign)
    assert not list(campaign.glob("*.tmp"))


def test_a_second_ctrl_c_while_the_stop_writes_its_report_waits_for_it_then_leaves_with_130(
    tmp_path: Path,
) -> None:
    """A second Ctrl-C while the controller wrote what its stop saves raised KeyboardInterrupt
    in the write: report.html, the stop's own account, was never written. It is held until that
    write is whole, then leaves as a second Ctrl-C does: one line, exit 130."""
    out = tmp_path / "controller.out"
    controller = controller_with_ctrl_c(tmp_path, out, when="second-at-report")
    controller.wait(timeout=60)
    said = out.read_text()
    assert controller.returncode == 130, said
    assert "Traceback" not in said
    assert said.splitlines()[-1].endswith(f"WARNING  {INTERRUPTED}"), said
    assert_the_stop_was_saved(tmp_path / "toy")


def test_a_ctrl_c_once_the_controller_has_said_all_is_ignored(tmp_path: Path) -> None:
    """A Ctrl-C once the controller had said all (a key pressed again as it exits) came, at worst,
    in Python's teardown, which gives a signal with a Python handler its default action back, and
    killed the process without a word (exit -2). Stops are ignored by then, and an ignored signal
    stays ignored to the end: the controller leaves with its own code."""
    out = tmp_path / "controller.out"
    controller = controller_with_ctrl_c(tmp_path, out, when="ctrl-c-after-all-is-said")
    controller.wait(timeout=60)
    said = out.read_text()
    assert controller.returncode == 3, said
    assert said.splitlines()[-1] == "went on after a Ctrl-C that came once all was said", said
    assert "Traceback" not in said and "KeyboardInterrupt" not in said
    assert_the_stop_was_saved(tmp_path / "toy")


# A controller sent Ctrl-C twice as it collects its first result, W&B's wait at its end marked
# by a file (`sent-to-wandb`) where it begins.
TWO_CTRL_C_IN_THE_LOOP = """
import os, runpy, signal, sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)
import autoresearch.campaign as campaign, autoresearch.tracking as tracking
marker, finishing, closing = Path(sys.argv.pop(1)), campaign.Campaign._finish, tracking.WandbTracker.close
def interrupted(self, done):
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)
    return finishing(self, done)
def waited(self, report):
    marker.touch()
    return closing(self, report)
campaign.Campaign._finish, tracking.WandbTracker.close = interrupted, waited
runpy.run_module("autoresearch", run_name="__main__", alter_sys=True)
"""


def test_a_second_ctrl_c_before_the_stop_is_heard_leaves_without_waiting_for_wandb(tmp_path: Path) -> None:
    """A second Ctrl-C that came before the loop had ended on the first went on to wait up to two
    minutes for W&B, with every later Ctrl-C ignored as no news; it now cuts that wait short, as
    one that comes while the stop's files are written does, and leaves with exit code 130."""
    marker = tmp_path / "sent-to-wandb"
    wandb = ("tracking=wandb", "tracking.mode=offline", "tracking.project=tests")
    command = [
        sys.executable,
        "-c",
        TWO_CTRL_C_IN_THE_LOOP,
        str(marker),
        *campaign_command(tmp_path, *wandb)[3:],
    ]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 130 and "Traceback" not in said, said
    assert not marker.exists(), said
    campaign = tmp_path / "toy"  # what the stop saves, saved all the same
    assert "interrupted: a second Ctrl-C or SIGTERM" in (campaign / "report.html").read_text()
    assert (campaign / "results.tsv").read_text().startswith("commit\t")


def test_a_write_the_disk_refuses_stops_the_controller_in_one_line_and_a_rerun_goes_on(
    tmp_path: Path,
) -> None:
    """A campaign folder that refuses a write mid-campaign (a full disk, a quota; here each file
    held under 30 kB by RLIMIT_FSIZE, which progress.png or study.journal outgrows) ended the
    controller in two tracebacks, the second from writing results.tsv as it closed. It is one
    line, exit code 2, and the same command, once the disk takes writes again, finishes the
    campaign, nothing run twice. The line names the file it could not write, which the system's
    error for a full disk or an oversized file does not."""
    run_log = tmp_path / "runs.log"
    env = {"TOY_RUN_LOG": str(run_log)}

    def files_under_30_kb() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    refused = run_campaign(tmp_path, env=env, preexec_fn=files_under_30_kb)
    said = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "Traceback" not in said, said
    [line] = [line for line in said.splitlines() if " ERROR " in line]
    said_file = re.search(
        f"ERROR +cannot write the campaign folder {tmp_path / 'toy'}: File too large \\((.+)\\); free "
        "space there \\(or make it writable\\), then run the same command again: the study keeps what ran$",
        line,
    )
    assert said_file, line
    assert Path(said_file[1]).parent.is_dir() and (tmp_path / "toy") in Path(said_file[1]).parents, line
    proc = run_campaign(tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = experiment_runs(run_log)
    assert runs and max(runs.values()) == 1, runs
    assert all(t.state.is_finished() or t.state == TrialState.WAITING for t in load(tmp_path / "toy").trials)


# Run in a mount namespace of its own: a 1 MiB disk (tmpfs) at argv[1], filled by another writer,
# then results.tsv written there as the controller writes its files; prints how the refusal is said.
A_WRITE_ON_A_FULL_DISK = """
import os, subprocess, sys
from pathlib import Path
from autoresearch.files import write_atomic, write_failure
disk = Path(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
room = os.statvfs(disk)
(disk / "others").write_bytes(os.urandom(room.f_bavail * room.f_frsize))
try:
    write_atomic(disk / "results.tsv", "trial\\tval_bpb\\n")
except OSError as err:
    print(write_failure(err, disk))
"""


def test_a_write_a_full_disk_refuses_says_how_much_room_is_left(tmp_path: Path) -> None:
    """A campaign stopped by a full disk named the file it could not write, not how much room its
    disk had left, so the user could not tell how much to free; the line now says it (statvfs)."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespace for an unprivileged user here (unshare -rm)")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = [sys.executable, "-c", A_WRITE_ON_A_FULL_DISK, str(disk)]
    done = subprocess.run(["unshare", "-rm", *script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"No space left on device ({disk / 'results.tsv'}, 0 KiB free on its disk)"


@pytest.mark.parametrize("finished_before_kill", [0, 3, 7, "promoted", "kept"])
def test_sigkill_and_resume_loses_and_repeats_nothing(
    tmp_path: Path, finished_before_kill: int | str
) -> None:
    campaign = tmp_path / "toy"
    run_log = tmp_path / "runs.log"
    env = {**os.environ, "TOY_RUN_LOG": str(run_log), "TOY_SECONDS": "0.6"}
    controller = subprocess.Popen(
        campaign_command(tmp_path), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        if finished_before_kill == 0:
            wait_for(lambda: any(campaign.glob("experiments/*/runner.pid")), 60, "a running experiment")
        elif finished_before_kill == "promoted":  # a change waits for the re-runs that confirm it
            journal = campaign / "study.journal"
            wait_for(
                lambda: journal.exists() and '"promoted"' in journal.read_text(),
                60,
                "a promotion",
                every=0.02,
            )
        elif finished_before_kill == "kept":  # the frontier's commit of a keep, its tell about to come
            lineage = campaign / "frontier" / ".git" / "logs" / "HEAD"
            wait_for(
                lambda: lineage.exists() and len(lineage.read_text().splitlines()) > 1,
                60,
                "a keep's commit",
                every=0.002,
            )
        else:
            wait_for(
                lambda: len(list(campaign.glob("experiments/*/outcome.json"))) >= finished_before_kill,
                60,
                f"{finished_before_kill} results",
            )
        controller.send_signal(signal.SIGKILL)
    finally:
        controller.wait(timeout=30)
    gone = controller_state(campaign)  # at once, on the host it ran on
    assert gone is not None and gone.startswith(f"gone: pid {controller.pid} on "), gone
    proc = subprocess.run(
        campaign_command(tmp_path), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout

    study = load(campaign)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    # No workspace ran twice; every run that finished is in the study.
    runs = experiment_runs(run_log)
    assert runs and max(runs.values()) == 1, runs
    told = {t.user_attrs["exp_dir"] for t in study.trials if t.state == TrialState.COMPLETE}
    assert told <= {str(Path(p).relative_to(campaign)) for p in runs}
    # No experiment completed twice: keys of completed experiments are unique.
    completed = [
        t
        for t in study.trials
        if t.state == TrialState.COMPLETE and t.user_attrs["kind"] not in ("baseline", "validation")
    ]
    keys = Counter(t.user_attrs["run_key"] for t in completed)  # hash of the train.py that ran
    assert max(keys.values()) == 1, keys
    # results.tsv agrees with the study.
    rows = read_tsv(campaign / "results.tsv")
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    assert sorted(int(r["trial"]) for r in rows) == sorted(t.number for t in finished)
    for r in rows:
        t = study.trials[int(r["trial"])]
        if t.state == TrialState.COMPLETE:
            assert float(r["val_bpb"]) == pytest.approx(t.value, abs=1e-6)
    launched_within_budget(study, 12)
    # Every promoted change was decided once, on its two re-runs (fewer only when another keep
    # overtook it and its queued ones were dropped), none of them run twice.
    promoted = [t for t in study.trials if t.user_attrs.get("promoted")]
    assert promoted
    for t in promoted:
        assert t.state == TrialState.COMPLETE and t.user_attrs["status"] in ("keep", "discard")
        reruns = confirming(study.trials, t.number)
        complete = sum(r.state == TrialState.COMPLETE for r in reruns)
        dropped = sum(r.user_attrs.get("status") == "skip" for r in reruns)
        assert complete + dropped == 2, [(r.number, r.state, r.user_attrs.get("status")) for r in reruns]
    # The frontier holds each kept change once, and nothing else; nothing a killed writer left stays.
    kept = sorted(t.number for t in study.trials if t.user_attrs.get("status") == "keep")
    assert Frontier(campaign / "frontier", "").generation() == len(kept)
    assert [Frontier(campaign / "frontier", "").commit_of_trial(n) for n in kept] == [
        t.user_attrs["commit"] for t in study.trials if t.user_attrs.get("status") == "keep"
    ]
    assert not list(campaign.glob("**/*.tmp")) and not list(
        (campaign / "frontier" / ".git").glob("**/*.lock")
    )


def test_a_journal_left_mid_write_by_a_killed_controller_is_repaired_on_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = run_scripted(tmp_path, [Candidate("wider", knobs={"WIDTH": 128})], "campaign.validate_seeds=0")
    journal = first.dir / "study.journal"
    before = len(load(first.dir).trials)
    # What a SIGKILL inside Optuna's append leaves: its lock file, and half a line.
    Path(f"{journal}.lock").touch()
    torn = b'{"op_code":5,"worker_id":"dead'
    with journal.open("ab") as f:
        f.write(torn)
    caplog.set_level("INFO", logger="autoresearch")
    second = run_scripted(tmp_path, [Candidate("faster", knobs={"LR": 0.02})], "campaign.validate_seeds=0")
    said = caplog.text
    assert "removed the study journal's lock" in said
    assert f"dropped the torn last {len(torn)} bytes of the study journal" in said
    study = load(first.dir)  # plain Optuna reads all of it, the resumed run's trials included
    assert len(study.trials) > before
    assert any(t.user_attrs.get("description") == "faster" for t in study.trials)
    # The loop's budgets, counted as the resumed controller found them and as its trials launched
    # and ended, are what summing the study gives (as `status` does).
    now = second.clock.now()
    counted, summed = second._spend(), measure(second.study, {}, second.dir, now)
    assert counted.experiments == summed.experiments == sum("exp_dir" in t.user_attrs for t in study.trials)
    assert counted.gpu_hours == pytest.approx(summed.gpu_hours)
    assert summed.gpu_hours > measure(first.study, {}, first.dir, now).gpu_hours > 0
    assert second.ledger.table() == rows(study)  # its rows, each made once, are the study's
    assert not Path(f"{journal}.lock").exists()


def test_second_controller_is_refused(tmp_path: Path) -> None:
    hold = tmp_path / "hold"  # the first controller's experiments wait until the second is refused
    hold.touch()
    env = {**os.environ, "TOY_SECONDS": "0.5", "TOY_HOLD": str(hold)}
    first = subprocess.Popen(
        campaign_command(tmp_path), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(
            lambda: (
                (tmp_path / "toy" / "controller.lock").exists()
                and any((tmp_path / "toy").glob("experiments/*/runner.pid"))
            ),
            60,
            "the first controller to hold the lock and run an experiment",
        )
        saved = (tmp_path / "toy" / "config.yaml").read_text()
        assert (controller_state(tmp_path / "toy") or "").startswith(f"running: pid {first.pid} on ")
        second = subprocess.run(
            campaign_command(tmp_path, "campaign.budget.max_experiments=99"),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert (
            f"another controller (pid {first.pid}) is running {tmp_path / 'toy'}: follow it with "
            f"`python -m autoresearch.status {tmp_path / 'toy'}`, or stop it (Ctrl-C, or kill {first.pid} on its host) "
            "and run this command again to take over\n"
        ) in second.stdout
        assert (tmp_path / "toy" / "config.yaml").read_text() == saved  # the running one's, not its own
        log = (tmp_path / "toy" / "controller.log").read_text()  # the running one's, without the refusal
        assert log.count("INFO campaign toy in ") == 1 and "another controller" not in log
        assert (controller_state(tmp_path / "toy") or "").startswith(f"running: pid {first.pid} on ")
    finally:
        hold.unlink()
        first.wait(timeout=120)
    assert first.returncode == 0
    ended = controller_state(tmp_path / "toy") or ""
    assert re.fullmatch(
        r"stopped .*: experiments budget reached \(\d+ of 12(: past 12, only the \d+ runs? a decision waited for)?\)",
        ended,
    ), ended


# A controller that stops right before `Campaign.open` (the lock) until a byte on stdin.
AT_THE_SIGNAL = """
import runpy, sys
from autoresearch.campaign import Campaign
opening = Campaign.open
def open_at_the_signal(self):
    print("ready", flush=True)
    sys.stdin.read(1)
    return opening(self)
Campaign.open = open_at_the_signal
runpy.run_module("autoresearch", run_name="__main__", alter_sys=True)
"""


def test_two_controllers_started_on_a_new_folder_at_once_run_it_once(tmp_path: Path) -> None:
    """Two controllers past every check (config, fleet, log file) on one new folder, let go of
    at the same instant: one runs the campaign, the other is refused in one line and leaves the
    folder as the first has it (its config.yaml, log, heartbeat and lock)."""
    controllers = []
    for poll in ("0.05", "0.07"):  # (tells whose config.yaml the folder keeps)
        command = campaign_command(
            tmp_path, "campaign.budget.max_experiments=2", f"cluster.poll_seconds={poll}"
        )
        controllers.append(
            subprocess.Popen(
                [sys.executable, "-c", AT_THE_SIGNAL, *command[3:]],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for proc in controllers:
            assert proc.stdout is not None and proc.stdin is not None
            while (line := proc.stdout.readline()) and line != "ready\n":
                pass
            assert line == "ready\n", proc.stderr.read() if proc.stderr else ""
        for proc in controllers:
            proc.stdin.write("go")
            proc.stdin.flush()
        outs = [proc.communicate(timeout=240) for proc in controllers]
    finally:
        for proc in controllers:
            if proc.poll() is None:
                proc.kill()
    codes = [proc.returncode for proc in controllers]
    assert sorted(codes) == [0, 2], (codes, outs)
    ran, refused = (0, 1) if codes[0] == 0 else (1, 0)
    winner, loser = controllers[ran], controllers[refused]
    folder = tmp_path / "toy"
    said = [line for line in outs[refused][0].splitlines() if "another controller" in line]
    # (pid unknown: refused between the winner's lock and its writing its pid in the lock file)
    assert len(said) == 1 and re.search(
        f"another controller \\(pid ({winner.pid}|unknown)\\) is running {folder}: ", said[0]
    ), said
    assert "Traceback" not in outs[refused][1], outs[refused][1]
    saved = OmegaConf.load(folder / "config.yaml")
    assert saved.cluster.poll_seconds == float(("0.05", "0.07")[ran])  # the runner's own settings
    log = (folder / "controller.log").read_text()
    assert log.count("INFO campaign toy in ") == 1 and "another controller" not in log
    assert str(loser.pid) not in log and str(loser.pid) not in (folder / "controller.json").read_text()
    assert (folder / "controller.lock").read_text() == str(winner.pid)
    ended = controller_state(folder) or ""
    assert re.fullmatch(
        r"stopped .*: experiments budget reached \(\d+ of 2(: past 2, only the \d+ runs? a decision waited for)?\)",
        ended,
    ), ended
    assert len(load(folder).trials) >= 2


def test_a_twin_of_a_train_py_that_ran_is_skipped_and_one_of_a_crash_runs(tmp_path: Path) -> None:
    """Two changes that make the same train.py teach one thing: the second is skipped, whoever
    ran first. A crash says nothing of its train.py (the node, a seed): a twin of it runs, after a
    resume too."""
    first = run_scripted(
        tmp_path,
        [
            Candidate("wider", knobs={"WIDTH": 128}),
            Candidate("wider again", edits=[Edit("WIDTH = 64", "WIDTH = 128")]),
        ],
        "campaign.validate_seeds=0",
        "cluster.cpu_slots=5",  # with the 3 baselines: both run before either is decided
        "cluster.threads_per_slot=1",  # as on one slot below: a resume keeps each run's threads
    )
    wider, again = trial_named(first, "wider"), trial_named(first, "wider again")
    assert again.user_attrs["status"] == "skip" and "exp_dir" not in again.user_attrs
    assert again.user_attrs["reason"] == f"same train.py as trial {wider.number}"
    crash = Candidate("crash", knobs={"CRASH": True})
    twin = Candidate("twin", edits=[Edit("CRASH = False", "CRASH = True")])
    # the twin starts after the crash
    one_slot = ("campaign.validate_seeds=0", "cluster.cpu_slots=1", "cluster.threads_per_slot=1")
    second = run_scripted(tmp_path, [crash, twin], *one_slot)
    again = Candidate(
        "twin again", edits=[Edit("CRASH = False\n", "CRASH = True\n")]
    )  # another edit, same file
    third = run_scripted(tmp_path, [again], *one_slot)  # by a resumed controller
    runs = [trial_named(third, name) for name in ("crash", "twin", "twin again")]
    assert len({t.user_attrs["run_key"] for t in runs}) == 1
    assert [t.user_attrs["status"] for t in runs] == ["crash"] * 3, [t.user_attrs["reason"] for t in runs]
    assert second.ledger.ran(runs[0].user_attrs["run_key"]) == set()


def test_a_grid_whose_only_cell_is_the_frontier_spends_no_run(tmp_path: Path) -> None:
    """propose_wave refuses such a grid; another proposer (a script here) may still send one: the
    launcher skips that cell, its train.py the frontier's, and nothing runs."""
    campaign = scripted_campaign(tmp_path, [], "campaign.validate_seeds=0", "cluster.cpu_slots=1")
    at_the_frontier = Grid("at the frontier", {"LR": [0.01], "WIDTH": [64]})
    campaign.proposer.propose = lambda context: Wave(grids=[at_the_frontier], source="script")  # type: ignore[method-assign]
    campaign.run()
    cell = trial_named(campaign, "at the frontier [LR=0.01, WIDTH=64]")
    assert cell.user_attrs["status"] == "skip" and "exp_dir" not in cell.user_attrs
    assert cell.user_attrs["reason"] == "no change: already part of the frontier"
    launched = [t.user_attrs["kind"] for t in campaign.study.trials if "exp_dir" in t.user_attrs]
    assert launched and set(launched) == {"baseline"}


def test_a_queued_change_that_a_keep_overwrote_is_skipped_not_blamed(tmp_path: Path) -> None:
    """Two changes to one line, queued on one frontier: once the first is kept, the second's edit
    no longer applies. That is the frontier's doing, not a bad proposal: it is skipped with the
    reason, and not shown to the proposer as a rejected edit."""
    campaign = run_scripted(
        tmp_path,
        [
            Candidate("better", edits=[Edit("BETTER_BY = 0.0", "BETTER_BY = 0.2")]),
            Candidate("better too", edits=[Edit("BETTER_BY = 0.0", "BETTER_BY = 0.1")]),
        ],
        "campaign.validate_seeds=0",
        "cluster.cpu_slots=1",  # one run at a time: the second starts after the first is kept
    )
    better, too = trial_named(campaign, "better"), trial_named(campaign, "better too")
    assert better.user_attrs["status"] == "keep"
    assert too.user_attrs["status"] == "skip" and "exp_dir" not in too.user_attrs
    assert too.user_attrs["reason"].startswith(
        f"no longer applies: the frontier changed since it was queued (trial {better.number} kept); edit 1:"
    )
    assert not any("better too" in line for line in campaign.intake.rejected)


@pytest.mark.parametrize(
    ("nothing", "reason"),
    [
        (
            Candidate("nothing", edits=[Edit("WIDTH = 64", "WIDTH = 64")]),
            "edit 1 replaces a text by itself, so it changes nothing",
        ),
        (
            Candidate("nothing", edits=[Edit("WIDTH = 64", "WIDTH = 96")], knobs={"WIDTH": 32}),
            OVERWRITTEN_EDITS,
        ),
    ],
    ids=["a text replaced by itself", "an edit its knob writes over"],
)
def test_a_queued_edit_that_changes_nothing_is_invalid_not_blamed_on_a_keep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing: Candidate, reason: str
) -> None:
    """An edit that replaces a text by itself, or one its knob value writes over (WIDTH = 96 under
    WIDTH=32), queued by an older version that let it in (a resumed study's stored proposal), and
    reached after a keep: its fault is its own on any frontier, yet the first was skipped as the
    keep's doing ("no longer applies: the frontier changed") and never shown to the proposer, the
    second ran as a code change, though its train.py was WIDTH=32's alone. Each is refused as
    invalid, in the engine's words."""
    monkeypatch.setattr(Intake, "precheck", lambda self, cand, fixes=None: "")  # the older version's
    campaign = run_scripted(
        tmp_path,
        [Candidate("better", edits=[Edit("BETTER_BY = 0.0", "BETTER_BY = 0.2")]), nothing],
        "campaign.validate_seeds=0",
        "cluster.cpu_slots=1",  # one run at a time: the second starts after the first is kept
    )
    refused = trial_named(campaign, "nothing")
    assert trial_named(campaign, "better").user_attrs["status"] == "keep"
    assert refused.user_attrs["status"] == "invalid" and "exp_dir" not in refused.user_attrs
    assert refused.user_attrs["reason"] == reason
    assert f"nothing: {reason}" in campaign.intake.rejected


class GuardedOffline(CountingOffline):
    """The offline proposer after a wave of `first` candidates, stopping (stop_requested, which the
    tests below read as a failure) a campaign that would otherwise never end."""

    def __init__(self, first: list[Candidate]) -> None:
        super().__init__()
        self.first = first
        self.campaign: Campaign | None = None

    def propose(self, context: CampaignContext) -> Wave:
        if (len(self.waves) >= 40 or len(context.history) >= 400) and self.campaign:
            self.campaign.stop_requested = True
        if self.first:
            self.waves.append(Wave(candidates=self.first, source="script"))
            self.first = []
            return self.waves[-1]
        return super().propose(context)


def run_offline(tmp_path: Path, first: list[Candidate], *overrides: str) -> tuple[Campaign, Summary]:
    """The toy campaign run to its end in this process, on the offline proposer (after `first`),
    idle slots filled by the inner sampler."""
    cfg = compose_toy(tmp_path, "cluster.poll_seconds=0.02", *overrides)
    campaign_dir = campaign_dir_of(cfg)
    fleet = make_fleet(cfg.cluster, deadline_seconds(cfg), str(campaign_dir))
    proposer = GuardedOffline(first)
    campaign = Campaign(cfg, campaign_dir, fleet, proposer, background_proposals=False)
    proposer.campaign = campaign
    return campaign, campaign.run()


def assert_ended_without_spinning(campaign: Campaign, summary: Summary) -> None:
    """Ended by the budget or by the proposer's empty waves, and the inner sampler drew at most
    MAX_DEAD_EXPLORATIONS trials that could not run on each frontier."""
    trials = campaign.study.trials
    dead = [
        t
        for t in trials
        if t.user_attrs.get("kind") == "exploration" and t.user_attrs.get("status") in ("invalid", "skip")
    ]
    said = f"{len(trials)} trials, {summary.experiments} experiments, {len(dead)} dead explorations"
    assert not campaign.stop_requested, f"stopped by the test's guard: {said}"
    assert summary.stop_reason.startswith(
        ("the proposer had nothing new that could run in 3 waves", "experiments budget reached")
    ), summary.stop_reason
    assert len(dead) <= MAX_DEAD_EXPLORATIONS * (summary.kept + 1), said


def test_a_knob_space_run_through_ends_the_campaign_instead_of_spinning(tmp_path: Path) -> None:
    """Three values of one knob: soon every draw is a train.py that ran, and every wave of the
    offline proposer (which leaves knobs free) is skipped whole. The controller made thousands of
    skip trials and never reached the budget; now the inner sampler stops after a few in a row on a
    frontier, and waves with nothing that could run end the campaign."""
    campaign, summary = run_offline(
        tmp_path,
        [],
        "~campaign.knobs.LR",
        "campaign.knobs.WIDTH.low=64",
        "campaign.knobs.WIDTH.high=66",
        "campaign.knobs.WIDTH.log=false",
        "campaign.budget.max_experiments=30",
    )
    assert_ended_without_spinning(campaign, summary)


def test_a_kept_knob_the_engine_cannot_set_ends_the_campaign_instead_of_spinning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept `LR = LR * 4` after `LR = 0.01` (refused at intake now; kept by a study from before
    that): every draw of LR is invalid ("assigned 2 times"). The controller made thousands of
    invalid trials; now the inner sampler stops after a few, and so do the offline proposer's waves."""
    monkeypatch.setattr(Intake, "_unsets_a_knob", lambda self, cand: "", raising=False)  # as then
    four = Candidate("four times the lr", edits=[Edit("LR = 0.01\n", "LR = 0.01\nLR = LR * 4\n")])
    campaign, summary = run_offline(
        tmp_path, [four], "~campaign.knobs.WIDTH", "campaign.budget.max_experiments=30"
    )
    assert trial_named(campaign, four.description).user_attrs["status"] == "keep"
    assert_ended_without_spinning(campaign, summary)


def test_the_inner_sampler_stops_on_a_frontier_where_nothing_it_draws_can_run(
    tmp_path: Path, open_campaign: Callable[..., Campaign], caplog: pytest.LogCaptureFixture
) -> None:
    """Its cap was per launch round, and a round runs every poll: thousands of invalid trials. Now
    it stops after a few in a row on one frontier, says so once, and draws again after a keep."""
    campaign = open_campaign(tmp_path, [], "campaign.fill_idle_slots=true")
    broken = campaign.frontier.source().replace("LR = 0.01\n", "LR = 0.01\nLR = LR * 4\n")
    first = campaign.frontier.advance(broken, 1, "four times the lr")
    for baseline in campaign.ledger.waiting():  # (no process to run)
        campaign.ledger.drop(baseline, "not needed here")

    def explorations() -> list[FrozenTrial]:
        return [t for t in campaign.study.trials if t.user_attrs.get("kind") == "exploration"]

    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        for _ in range(3):  # a launch round each poll
            campaign.launcher.launch()
    assert len(explorations()) == MAX_DEAD_EXPLORATIONS
    why = "knob LR is assigned 2 times in train.py; cannot set it"
    assert {(t.user_attrs["status"], t.user_attrs["reason"]) for t in explorations()} == {("invalid", why)}
    said = [r.getMessage() for r in caplog.records if "inner sampler" in r.getMessage()]
    assert said == [
        f"the inner sampler's last {MAX_DEAD_EXPLORATIONS} explorations could not run (the last: {why}): "
        f"no more on frontier {first} until a change is kept"
    ]
    campaign.frontier.advance(broken + "# another keep\n", 2, "another keep")
    campaign.launcher.launch()
    assert len(explorations()) == 2 * MAX_DEAD_EXPLORATIONS


def test_a_crashing_experiment_is_a_fail_trial_with_its_reason(tmp_path: Path) -> None:
    campaign = run_scripted(
        tmp_path, [Candidate("crash", knobs={"CRASH": True})], "campaign.budget.max_experiments=5"
    )
    (crashed,) = [t for t in campaign.study.trials if t.user_attrs.get("description") == "crash"]
    assert crashed.state == TrialState.FAIL and crashed.user_attrs["status"] == "crash"
    assert crashed.user_attrs["reason"].startswith("crash: exit 1") and "FAIL" in crashed.user_attrs["reason"]
    spec = json.loads((campaign.dir / crashed.user_attrs["exp_dir"] / "spec.json").read_text())
    assert spec["trial"] == crashed.number


def test_the_study_opens_with_plain_optuna_and_in_optuna_dashboard(tmp_path: Path) -> None:
    import io
    from wsgiref.util import setup_testing_defaults

    import optuna
    from optuna_dashboard import wsgi

    assert run_campaign(tmp_path, "campaign.budget.max_experiments=4").returncode == 0
    journal = tmp_path / "toy" / "study.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="toy", storage=storage)
    assert len(study.trials) >= 4 and study.best_value > 0

    app = wsgi(storage)
    environ: dict = {"PATH_INFO": "/api/studies", "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200")
    studies = json.loads(body)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["toy"]


def test_a_controller_killed_as_it_re_queues_a_lost_run_queues_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preempted = Candidate("preempted", knobs={"PREEMPT": True})
    campaign = killed_and_resumed(
        tmp_path, monkeypatch, [preempted], lambda _, attrs: attrs.get("retry_of") is not None
    )
    first = trial_named(campaign, "preempted")
    # Each run of it is lost; the first was re-queued before the kill and failed after it.
    runs = [t for t in campaign.study.trials if t.user_attrs.get("description") == "preempted"]
    assert first.user_attrs["status"] == "lost" and "runner received SIGUSR2" in first.user_attrs["reason"]
    retries = Counter(t.user_attrs.get("retry_of") for t in runs if "retry_of" in t.user_attrs)
    assert first.number in retries and list(retries.values()) == [1, 1]  # max_retries 2, each queued once
    assert len(runs) == 3 and all(t.state == TrialState.FAIL for t in runs)


def test_a_controller_killed_as_it_stacks_a_winner_stacks_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two winners run side by side (5 slots: with the 3 baselines); the better one is held until
    # the other is kept, so it is decided second, on a frontier that moved meanwhile, and is stacked.
    hold = tmp_path / "faster.hold"
    hold.touch()
    advance = Frontier.advance

    def advance_then_release(self: Frontier, source: str, trial: int, description: str) -> str:
        commit = advance(self, source, trial, description)
        hold.unlink(missing_ok=True)
        return commit

    monkeypatch.setattr(Frontier, "advance", advance_then_release)
    wider = Candidate("wider", knobs={"WIDTH": 128})
    faster = Candidate("faster", knobs={"LR": 0.02, "HOLD": str(hold)})
    campaign = killed_and_resumed(
        tmp_path,
        monkeypatch,
        [wider, faster],
        lambda _, attrs: attrs.get("kind") == "stack",
        overrides=("campaign.validate_seeds=0", "cluster.cpu_slots=5"),
    )
    stacks = Counter(t.user_attrs["stack_of"] for t in campaign.study.trials if "stack_of" in t.user_attrs)
    assert list(stacks.values()) == [1], stacks
    (stacked,) = stacks
    assert campaign.study.trials[stacked].user_attrs["description"] == "faster"
    assert campaign.study.trials[stacked].user_attrs["reason"].endswith("re-queued on the current frontier")


def test_a_controller_killed_while_queueing_the_baselines_queues_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    campaign = killed_and_resumed(tmp_path, monkeypatch, [], lambda _, attrs: attrs.get("kind") == "baseline")
    baselines = [t for t in campaign.study.trials if t.user_attrs.get("kind") == "baseline"]
    # baseline_seeds 2 and the screening seed: one each side
    assert sorted(t.user_attrs["seed"] for t in baselines) == [42, 43, 44]
    assert all(t.state == TrialState.COMPLETE for t in baselines)


def test_a_cancelled_baseline_is_queued_again_until_a_change_is_kept(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """Every change is judged by the baselines, so one cancelled (scancel) runs again; once a change
    is kept, a run queued as a baseline would be of the new frontier, measured by runs of its own."""
    campaign = open_campaign(tmp_path, [])
    ledger, intake = campaign.ledger, campaign.intake

    def baselines() -> list[FrozenTrial]:
        return [t for t in ledger.all() if t.user_attrs.get("kind") == "baseline"]

    def cancel(trial: FrozenTrial) -> None:
        assert ledger.claim(trial)
        ledger.fail(trial.number, {"status": "cancelled", "reason": "cancelled: Slurm CANCELLED by 0"})

    first = baselines()
    cancel(first[0])
    intake.baselines(campaign.decisions.confirm_on)
    again = [t for t in baselines() if t.number not in {b.number for b in first}]
    assert [(t.user_attrs["tier"], t.user_attrs["seed"]) for t in again] == [
        (first[0].user_attrs["tier"], first[0].user_attrs["seed"])
    ]
    assert again[0].state == TrialState.WAITING
    campaign.frontier.advance(campaign.frontier.source() + "\n# kept\n", again[0].number, "a keep")
    cancel(first[1])
    intake.baselines(campaign.decisions.confirm_on)
    assert len(baselines()) == len(first) + 1  # none queued for it now


def test_the_gpu_time_of_a_preempted_run_is_counted(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """A run lost to a preemption held its slot from its start to its end: the budgets, status and
    the report count that time, as they count a crash's."""
    campaign = open_campaign(tmp_path, [])
    ledger = campaign.ledger
    first = launched_and_started(campaign, 1000.0)
    outcome = {
        "status": "interrupted",
        "reason": "runner received SIGUSR2",
        "node": "n1",
        "started_at": 1000.0,
        "ended_at": 1000.0 + 1800,
        "slurm_job_id": "77_0",
    }
    campaign._finish(Finished(first.number, outcome))
    lost = ledger.trial(first.number)
    assert lost.user_attrs["status"] == "lost" and lost.user_attrs["slurm_job_id"] == "77_0"
    # what max_gpu_hours and max_dollars are checked with
    assert by_pool(ledger.rated_hours) == {"local": 0.5}
    assert measure(campaign.study, {}, campaign.dir, 0.0).gpu_hours == 0.5  # status, report


def test_the_dollar_budget_prices_hours_at_the_price_they_were_launched_at(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """`max_dollars` must not under-count: hours run at a partition's price still cost that after
    config.yaml drops the partition or its price before a resume (both read as $0 before)."""
    run_scripted(tmp_path, [], "cluster.partitions.local.price_per_gpu_hour=5000")
    resumed = open_campaign(tmp_path, [], "cluster.partitions.local.price_per_gpu_hour=0")
    ran = [t for t in resumed.ledger.all() if "exp_dir" in t.user_attrs]
    assert ran and all(t.user_attrs[PRICE_ATTR] == 5000 for t in ran)
    spent = resumed._spend()
    assert spent.gpu_hours > 0
    assert spent.gpu_dollars == pytest.approx(5000 * spent.gpu_hours)
    assert measure(resumed.study, {}, resumed.dir, 0.0).gpu_dollars == pytest.approx(spent.gpu_dollars)


def test_hours_an_older_version_launched_cost_what_config_yaml_said_before_the_upgrade(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """A campaign begun by a version that recorded no launch prices, resumed after an upgrade
    with its partition re-priced (or dropped): the hours run before, and a run that ended while no
    controller ran, cost config.yaml's price of then, not the new one ($0 here: max_dollars
    under-counted, and status and the report called the dropped partition's hours unpriced)."""
    older = open_campaign(tmp_path, [], "cluster.partitions.local.price_per_gpu_hour=5000")
    crash = {"status": "crash", "reason": "boom"}  # (told at once, where a result awaits its decision)
    ended = launched_and_started(older, 1000.0)  # (by hand: no price_per_gpu_hour, as it launched)
    older._finish(Finished(ended.number, {**crash, "started_at": 1000.0, "ended_at": 1000.0 + 1800}))
    running = launched_and_started(older, 5000.0)
    outcome = {**crash, "started_at": 5000.0, "ended_at": 5000.0 + 3600}
    (older.dir / f"experiments/{running.number:05d}/outcome.json").write_text(json.dumps(outcome))
    release(older)
    resumed = open_campaign(tmp_path, [], "cluster.partitions.local.price_per_gpu_hour=0")
    assert resumed.ledger.trial(running.number).state == TrialState.FAIL
    assert not any(PRICE_ATTR in resumed.ledger.trial(n).user_attrs for n in (ended.number, running.number))
    spent = resumed._spend()
    assert spent.gpu_hours == pytest.approx(1.5)
    assert spent.gpu_dollars == pytest.approx(5000 * 1.5)
    assert measure(resumed.study, {}, resumed.dir, 0.0).gpu_dollars == pytest.approx(5000 * 1.5)


def launched_and_started(campaign: Campaign, started_at: float, **attrs: object) -> FrozenTrial:
    """The campaign's first queued trial, launched on the local pool, its runner started at
    `started_at` (its started.json), no outcome written."""
    trial = campaign.ledger.waiting()[0]
    assert campaign.ledger.claim(trial)
    exp_dir = f"experiments/{trial.number:05d}"
    campaign.ledger.set(trial.number, {"pool": "local", "exp_dir": exp_dir, **attrs})
    (campaign.dir / exp_dir).mkdir(parents=True)
    started = {"node": "n1", "started_at": started_at, "slurm_job_id": "77_0"}
    (campaign.dir / exp_dir / STARTED_FILE).write_text(json.dumps(started))
    return trial


def test_a_result_with_odd_figures_is_recorded_without_them_on_a_resume(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """A train.py's result is its own: a figure that is null, not a number or not finite is left
    out of its trial (val_bpb alone is judged), and the controller that reads it, here a resumed
    one collecting what ran while none did, goes on."""
    first = scripted_campaign(tmp_path, [])
    first.open()
    trial = launched_and_started(first, 1000.0)
    metrics = {
        "val_bpb": 1.0,
        "peak_vram_mb": None,
        "num_params_M": 10**400,  # an int no float holds
        "training_seconds": "6",
        "mfu_percent": float("nan"),
        "num_steps": 12,
    }
    outcome = {"status": "ok", "started_at": 1000.0, "ended_at": 1010.0, "metrics": metrics}
    (first.dir / f"experiments/{trial.number:05d}" / "outcome.json").write_text(json.dumps(outcome))
    release(first)
    resumed = open_campaign(tmp_path, [])
    attrs = resumed.ledger.trial(trial.number).user_attrs
    assert attrs["val_bpb"] == 1.0 and attrs["memory_gb"] is None and attrs["num_steps"] == 12
    assert attrs["training_seconds"] is None and attrs["mfu"] is None and "num_params" not in attrs
    header, line = render([row_of(resumed.ledger.trial(trial.number))]).splitlines()
    row = dict(zip(header.split("\t"), line.split("\t"), strict=True))
    assert (row["memory_gb"], row["training_seconds"], row["mfu"]) == ("", "", "")  # unknown, not 0.0 or None


@pytest.mark.parametrize(("peak_flops", "mfu"), [(None, ""), (989.5e12, "41.500000")])
def test_mfu_on_a_device_with_no_known_peak_is_unknown_not_zero(
    tmp_path: Path, open_campaign: Callable[..., Campaign], peak_flops: float | None, mfu: str
) -> None:
    """On a GPU missing from prepare.py's peak table (a site's A10, H800, MI300X) or a CPU,
    train.py reports mfu_percent 0: results.tsv said 0.0, as if the GPU had done nothing, where
    the harness's own peak_flops says the figure is unknown."""
    first = scripted_campaign(tmp_path, [])
    first.open()
    trial = launched_and_started(first, 1000.0)
    metrics = {"val_bpb": 1.0, "mfu_percent": 0.0 if peak_flops is None else 41.5, "peak_flops": peak_flops}
    outcome = {"status": "ok", "started_at": 1000.0, "ended_at": 1010.0, "metrics": metrics}
    (first.dir / f"experiments/{trial.number:05d}" / "outcome.json").write_text(json.dumps(outcome))
    release(first)
    resumed = open_campaign(tmp_path, [])
    header, line = render([row_of(resumed.ledger.trial(trial.number))]).splitlines()
    assert dict(zip(header.split("\t"), line.split("\t"), strict=True))["mfu"] == mfu


def test_files_that_are_not_text_read_as_missing_on_a_resume(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """A running trial's outcome.json and the controller's controller.json damaged into bytes that
    are not text: the resume reads them as absent (the run lost, re-queued); status says the
    controller's file is damaged."""
    first = scripted_campaign(tmp_path, [])
    first.open()
    trial = launched_and_started(first, 1000.0)
    (first.dir / f"experiments/{trial.number:05d}" / "outcome.json").write_bytes(b"\xff\xfe{")
    release(first)
    (first.dir / "controller.json").write_bytes(b"\xff\xfe{")
    assert (controller_state(first.dir) or "").startswith("unreadable: ")  # what status shows
    lost = open_campaign(tmp_path, []).ledger.trial(trial.number)
    assert lost.user_attrs["status"] == "lost", lost.user_attrs


@pytest.mark.parametrize("lock", ["index.lock", "HEAD.lock", "refs/heads/main.lock"])
def test_a_stale_git_lock_in_the_frontier_is_removed_when_the_campaign_resumes(
    tmp_path: Path, open_campaign: Callable[..., Campaign], lock: str
) -> None:
    """A controller killed while git wrote the frontier's index, HEAD or branch leaves a lock on
    which every later commit fails: the next controller, holding the campaign, removes it."""
    first = scripted_campaign(tmp_path, [])
    first.open()
    release(first)
    stale = first.dir / "frontier" / ".git" / lock
    stale.write_text("")
    resumed = open_campaign(tmp_path, [])
    assert not stale.exists()
    assert resumed.frontier.commit_of_trial(5) is None and resumed.frontier.advance("A = 1\n", 5, "kept")


@pytest.mark.parametrize("dies_at", ["add", "commit"])
def test_a_first_start_killed_before_the_frontiers_first_commit_is_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_campaign: Callable[..., Campaign], dies_at: str
) -> None:
    """A first start killed (kill -9) between the frontier's `git init` and its first commit left
    a repository with no commit, and every later start stopped on 'git rev-parse failed ...
    Needed a single revision'. The next start makes that first commit, and goes on."""
    git = Frontier._git

    def dies_in_git(self: Frontier, *args: str, **kwargs: bool) -> str:
        if args[0] == dies_at:
            raise Killed
        return git(self, *args, **kwargs)

    monkeypatch.setattr(Frontier, "_git", dies_in_git)
    dying = scripted_campaign(tmp_path, [])
    with pytest.raises(Killed):
        dying.open()
    monkeypatch.undo()
    release(dying)
    resumed = open_campaign(tmp_path, [])
    start = (TOY / "train.py").read_text()
    assert resumed.frontier.start_source() == start and resumed.frontier.source() == start
    assert resumed.ledger.waiting()  # (its baselines queued)


WRITER = """
import os, signal, sys
from pathlib import Path
from autoresearch.files import replacing
with replacing(Path(sys.argv[1])) as tmp:
    tmp.write_text("half")
    if sys.argv[2] == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    print("writing", flush=True)
    sys.stdin.readline()
    tmp.write_text("whole")
"""


def test_a_writer_killed_mid_write_leaves_a_temporary_the_next_start_removes_but_a_live_ones(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """A controller (or `report`) killed by kill -9 inside a whole-file write left its temporary,
    `<file>.<pid>-<thread>.tmp`, for good. The next start removes those of dead writers, and never
    a live writer's: `report` redrawing progress.png beside it still puts its file in place."""
    first = scripted_campaign(tmp_path, [])
    first.open()
    release(first)

    def writer(path: Path, how: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    for path in (first.dir / "results.tsv", first.dir / "proposals" / "00003.json"):
        assert writer(path, "killed").wait() == -signal.SIGKILL
    live = writer(first.dir / "progress.png", "live")
    assert live.stdout.readline() == "writing\n"
    others = [
        first.dir / "notes.tmp",
        first.dir / f"config.yaml.{os.getpid()}-1.tmp",
    ]  # (this controller's own)
    for other in others:  # not a dead writer's temporary: kept
        other.write_text("")
    left = sorted(first.dir.glob("**/*.tmp"))
    assert len(left) == 5
    open_campaign(tmp_path, [])
    assert sorted(first.dir.glob("**/*.tmp")) == sorted([*others, *first.dir.glob("progress.png.*.tmp")])
    live.communicate("\n")
    assert live.returncode == 0 and (first.dir / "progress.png").read_text() == "whole"


def test_a_run_that_ends_as_the_resume_looks_for_its_runner_is_collected_not_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_campaign: Callable[..., Campaign]
) -> None:
    """kill -9 of the controller mid-run; its runner ended between the resume's read of its
    outcome.json (none yet) and its look for the runner (gone): the run was failed as lost and run
    again, its whole result thrown away. The outcome is read again once the runner is found gone."""
    started, hold = controller_killed_mid_run(tmp_path)  # its runner goes on, held
    exp = started.parent
    runner = int((exp / PID_FILE).read_text().split()[0])
    reattach = LocalFleet.reattach

    def ends_first(self: LocalFleet, job: JobSpec, handle: str) -> bool:
        hold.unlink()  # the run ends now, between the two looks
        wait_for(lambda: not is_our_runner(runner, exp), 60, "the runner's end")
        return reattach(self, job, handle)

    monkeypatch.setattr(LocalFleet, "reattach", ends_first)
    resumed = open_campaign(tmp_path / "runs", [], "cluster.partitions.local.slots=1")
    trial = resumed.ledger.trial(int(exp.name))
    assert (exp / OUTCOME_FILE).exists()
    assert trial.user_attrs.get("status") != "lost", trial.user_attrs
    assert trial.user_attrs.get("val_bpb") is not None  # collected, its decision to come
    assert not [t for t in resumed.ledger.all() if t.user_attrs.get("retry_of") == trial.number]


# The harness's write of the result (trainer/prepare.py's `_write_atomic`), killed before its rename.
KILLED_HARNESS_WRITE = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import prepare
os.replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
prepare._write_atomic(Path(sys.argv[2]), b'{"val_bpb": 1.0}')
"""


def test_temporaries_killed_writers_left_in_an_experiment_folder_go_once_its_run_has_ended(
    tmp_path: Path,
) -> None:
    """A runner, train.py's harness or a controller killed inside a write to an experiment folder
    left its temporary there for good: a start removes dead writers' temporaries outside
    experiments/ only, where runners of other hosts write. Once the fleet says the run has ended
    they go, those untouched for a minute: a younger one may be a live writer's all the same (a
    Slurm runner writing outcome.json after its scancel), whose rename would fail without it."""
    started, hold = controller_killed_mid_run(tmp_path)  # its runner goes on, held
    exp = started.parent
    killed = [
        [sys.executable, "-c", WRITER, str(exp / "outcome.json"), "killed"],
        [
            sys.executable,
            "-c",
            KILLED_HARNESS_WRITE,
            str(REPO / "trainer"),
            str(exp / "metrics.json"),
        ],
    ]
    for command in killed:
        writer = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
        assert writer.returncode == -signal.SIGKILL, writer.stderr
    left = sorted(exp.glob("*.tmp"))
    assert [path.name.split(".")[0] for path in left] == ["metrics", "outcome"], left
    killed_long_ago = time.time() - 2 * ENDED_WRITE_S
    for temporary in left:
        os.utime(temporary, (killed_long_ago, killed_long_ago))
    writing = exp / "outcome.json.4242-4242.tmp"  # a live writer's, mid-write
    writing.write_text("{")
    hold.unlink()
    resumed = run_campaign(
        tmp_path / "runs", "campaign.budget.max_experiments=4", "cluster.partitions.local.slots=1"
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert list((tmp_path / "runs" / "toy").glob("**/*.tmp")) == [writing]
    collected = load(tmp_path / "runs" / "toy").trials[int(exp.name)]  # re-attached, not run again
    assert collected.state == TrialState.COMPLETE and collected.user_attrs["status"] == "baseline"


def test_a_broken_frontier_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A git command that fails on the frontier (here a repository whose HEAD is garbage) stops the
    controller with git's own words in one line, not a CalledProcessError traceback."""
    (tmp_path / "toy" / "frontier" / ".git").mkdir(parents=True)
    (tmp_path / "toy" / "frontier" / ".git" / "HEAD").write_text("garbage\n")
    proc = run_campaign(tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert re.search(r"ERROR +git rev-parse failed in the frontier .*: fatal: ", proc.stdout), proc.stdout


def test_a_resume_without_its_config_yaml_is_held_to_how_its_study_measured(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """config.yaml gone (deleted, or never written whole by an older controller): the study's own
    record of how the campaign measures still refuses a resume that would measure otherwise."""
    first = scripted_campaign(tmp_path, [])
    first.open()
    release(first)
    assert first.study.user_attrs["measurement"] == {
        "campaign.scale": "cpu",
        "campaign.data": "offline",
        "seconds of training per experiment": 1.0,
    }
    (first.dir / "config.yaml").unlink()
    refused = scripted_campaign(tmp_path, [], "campaign.time_budget=2")
    with pytest.raises(
        CampaignError,
        match=r"^seconds of training per experiment: .* started with 1.0, this command says 2.0 ",
    ):
        refused.open()
    release(refused)
    assert not (first.dir / "config.yaml").exists()  # refused before anything was written
    open_campaign(tmp_path, [])  # as it started: it goes on, and saves its config again
    assert (first.dir / "config.yaml").is_file()


def test_a_resume_that_moves_a_measured_tier_to_other_hardware_is_refused(tmp_path: Path) -> None:
    """Each experiment trains for the same seconds, so fewer CPU threads per slot (more
    cluster.cpu_slots, or threads_per_slot) make every later result worse than the frontier's,
    for the hardware's sake: a resume that changes them is refused in one line, loses nothing,
    and the command as it was goes on."""
    first = run_campaign(tmp_path, "cluster.threads_per_slot=1", "campaign.budget.max_experiments=2")
    assert first.returncode == 0, first.stdout + first.stderr
    measured = [t for t in load(tmp_path / "toy").trials if "val_bpb" in t.user_attrs]
    assert measured and {t.user_attrs["hardware"] for t in measured} == {"cpu, 1 thread per slot"}
    saved, trials_before = (tmp_path / "toy" / "config.yaml").read_text(), len(load(tmp_path / "toy").trials)
    proc = run_campaign(tmp_path, "cluster.threads_per_slot=2", "campaign.budget.max_experiments=4")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (said,) = [line for line in proc.stdout.splitlines() if "ERROR" in line]
    assert (
        f"ERROR    the screen tier of {tmp_path / 'toy'} measured on cpu, 1 thread per slot, this command "
        "runs it on cpu, 2 threads per slot (local): " in said
    )
    assert said.endswith("or choose a new campaign.name")
    assert len(load(tmp_path / "toy").trials) == trials_before  # nothing queued or written
    assert (tmp_path / "toy" / "config.yaml").read_text() == saved
    went_on = run_campaign(tmp_path, "cluster.threads_per_slot=1", "campaign.budget.max_experiments=4")
    assert went_on.returncode == 0, went_on.stdout + went_on.stderr
    assert len(load(tmp_path / "toy").trials) > trials_before


def test_a_resume_names_each_setting_it_changes_and_a_hand_edit_of_config_yaml_it_replaces(
    tmp_path: Path, open_campaign: Callable[..., Campaign], caplog: pytest.LogCaptureFixture
) -> None:
    """config.yaml records the last start and is replaced by the command's settings: a resume
    says what it changed (under which keep rule later decisions are made), and a value edited
    into config.yaml by hand, which the command does not give, is named as it goes, not lost unsaid."""
    caplog.set_level(logging.INFO, logger="autoresearch")
    first = open_campaign(tmp_path, [])
    release(first)
    said = "settings changed since the last start"
    release(open_campaign(tmp_path, []))  # the same command: nothing to say
    assert said not in caplog.text
    caplog.clear()
    release(open_campaign(tmp_path, [], "campaign.min_delta=0.01", "campaign.budget.max_experiments=20"))
    (line,) = [r.getMessage() for r in caplog.records if said in r.getMessage()]
    assert line == (
        f"{said} (its config.yaml, now replaced): campaign.budget.max_experiments: 12 -> 20; "
        "campaign.min_delta: 0.0005 -> 0.01"
    )
    saved = first.dir / "config.yaml"
    saved.write_text(saved.read_text().replace("wave_size: 4", "wave_size: 6"))  # edited by hand
    caplog.clear()
    open_campaign(tmp_path, [], "campaign.min_delta=0.01", "campaign.budget.max_experiments=20")
    (line,) = [r.getMessage() for r in caplog.records if said in r.getMessage()]
    assert line.endswith("now replaced): campaign.wave_size: 6 -> 4")
    assert "wave_size: 4" in saved.read_text()


def test_a_resume_says_it_resumes_and_what_the_study_holds_where_a_first_start_says_nothing(
    tmp_path: Path, open_campaign: Callable[..., Campaign], caplog: pytest.LogCaptureFixture
) -> None:
    """A resume's first lines were a first start's: a user who ran `make demo` again after a
    Ctrl-C could not tell it went on from what ran, nor how to start over instead."""
    caplog.set_level(logging.INFO, logger="autoresearch")
    first = open_campaign(tmp_path, [])
    assert "resuming" not in caplog.text
    queued = len(load(first.dir).trials)
    release(first)
    load(first.dir).add_trial(create_trial(state=TrialState.FAIL))  # ended, never run: no experiment
    caplog.clear()
    again = open_campaign(tmp_path, [])
    (line,) = [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]
    assert line == (
        f"resuming the campaign in {again.dir}: 0 experiments ended, 0 in flight, {queued} queued "
        "(to start over, move that folder aside or choose a new campaign.name)"
    )


def test_a_resume_of_a_study_in_a_database_says_a_new_name_starts_over_not_the_folder_moved(
    tmp_path: Path, open_campaign: Callable[..., Campaign], caplog: pytest.LogCaptureFixture
) -> None:
    """A database keeps its study by campaign.name: the folder moved aside, as the resume line
    said, a start is refused as another folder's instead of starting over."""
    caplog.set_level(logging.INFO, logger="autoresearch")
    storage = f"sqlite:///{tmp_path / 'db' / 'studies.db'}"
    (tmp_path / "db").mkdir()
    release(open_campaign(tmp_path, [], f"storage={storage}"))
    again = open_campaign(tmp_path, [], f"storage={storage}")
    (line,) = [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]
    assert line.endswith(
        f"(to start over, choose a new campaign.name: {storage} keeps the study by its name)"
    )
    release(again)
    again.dir.rename(tmp_path / "aside")
    with pytest.raises(StudyTaken):
        open_campaign(tmp_path, [], f"storage={storage}")


def test_a_controller_killed_while_it_saves_its_config_leaves_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_campaign: Callable[..., Campaign]
) -> None:
    """config.yaml is replaced whole: a controller killed half-way through writing it leaves the
    one before, which every reader (the next start, status, report) can read."""
    first = scripted_campaign(tmp_path, [])
    first.open()
    release(first)
    saved = first.dir / "config.yaml"
    before = saved.read_text()
    write = Path.write_bytes

    def killed_half_way(path: Path, data: bytes) -> int:
        if path.name.startswith("config.yaml"):
            write(path, data[: len(data) // 2])
            raise Killed
        return write(path, data)

    monkeypatch.setattr(Path, "write_bytes", killed_half_way)
    with pytest.raises(Killed):
        open_campaign(tmp_path, [])
    assert saved.read_text() == before


@pytest.mark.parametrize("state", ["NODE_FAIL", "OUT_OF_MEMORY", "CANCELLED by 0"])
def test_a_run_ended_without_an_outcome_keeps_its_gpu_time_since_its_runner_started(
    tmp_path: Path, state: str, open_campaign: Callable[..., Campaign]
) -> None:
    """Slurm ended the job (node failure, OOM kill, scancel) before the runner wrote outcome.json:
    the controller makes its outcome up, and the slot was held from the runner's start until then."""
    campaign = open_campaign(tmp_path, [])
    started = time.time() - 60
    trial = launched_and_started(campaign, started)
    campaign._finish(Finished(trial.number, outcome_for_state(state, trial.number)))
    spent = by_pool(campaign.ledger.rated_hours).get("local", 0.0) * 3600
    assert 60 <= spent <= time.time() - started
    assert measure(campaign.study, {}, campaign.dir, 0.0).gpu_hours * 3600 == spent


def test_a_hang_without_grace_is_its_runs_timeout_not_a_loss(tmp_path: Path) -> None:
    """cluster.grace_seconds=0 (allowed): the runner's deadline is 2 x 1 s; the local fleet's own
    kill, its clock started at submission, before the runner's, still comes a floor later, so the
    runner ends the hang (timeout, the run's fault) rather than being killed itself (lost, re-run)."""
    proc = run_campaign(tmp_path, "+campaign=toy_hang", "cluster.grace_seconds=0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load(tmp_path / "toy_hang")
    hung = [t for t in study.trials if json.loads(t.user_attrs.get("knobs", "{}")).get("HANG") is True]
    assert [t.user_attrs["reason"] for t in hung] == ["timeout: killed at the 2 s deadline"]


def test_a_job_lost_while_no_controller_ran_bills_its_slot_until_its_deadline_at_most(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """A runner gone when the next controller starts (long after): from its start to no later
    than the fleets' kill deadline, not to the resume."""
    first = scripted_campaign(tmp_path, [])
    first.open()
    not_a_runner = f"local:{os.getpid()}"
    trial = launched_and_started(first, 1000.0, job=not_a_runner)
    release(first)
    second = open_campaign(tmp_path, [])
    lost = second.ledger.trial(trial.number)
    assert lost.user_attrs["status"] == "lost" and lost.user_attrs["reason"].startswith("lost: job lost")
    held = deadline_seconds(second.cfg) + backstop_grace(second.cfg.cluster)
    assert lost.user_attrs.get("started_at") == 1000.0 and lost.user_attrs["ended_at"] == 1000.0 + held
    assert measure(second.study, {}, second.dir, 0.0).gpu_hours == held / 3600


def test_a_running_experiments_folder_deleted_while_no_controller_ran_is_lost_and_run_again(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """An experiment folder removed by hand while its controller was stopped: no run can end in
    it, so the next controller fails its trial as lost and queues it again, where it wrote its
    abandoned.json into the missing folder and died of the traceback."""
    first = scripted_campaign(tmp_path, [])
    first.open()
    trial = launched_and_started(first, 1000.0, job="local:1")
    release(first)
    shutil.rmtree(first.dir / f"experiments/{trial.number:05d}")
    second = open_campaign(tmp_path, [])
    lost = second.ledger.trial(trial.number)
    gone = second.dir / f"experiments/{trial.number:05d}"
    assert lost.user_attrs["status"] == "lost"
    assert lost.user_attrs["reason"] == f"lost: its experiment folder {gone} is gone (deleted?); re-queued"
    assert second.ledger.queued_for("retry_of", trial.number)


@pytest.mark.parametrize("deleted", ["as it is promoted", "as its first re-run ends"])
def test_a_winners_folder_deleted_while_it_awaits_its_decision_is_lost_and_queued_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, deleted: str
) -> None:
    """A screening winner's experiment folder removed by hand while it awaited its re-runs: the
    launch of its re-runs, or its keep, read its train.py there and ended the controller in a
    FileNotFoundError. It is lost and queued again, in one warning naming the folder, and the
    campaign goes on."""
    gone: list[Path] = []

    def delete_once(number: int) -> None:
        if not gone:
            gone.append(campaign.dir / f"experiments/{number:05d}")
            shutil.rmtree(gone[0])

    if deleted == "as it is promoted":
        queue_reruns = Intake.reruns

        def reruns_then_delete(self: Intake, trial: int, *args: Any, **kwargs: Any) -> bool:
            queued = queue_reruns(self, trial, *args, **kwargs)
            delete_once(trial)
            return queued

        monkeypatch.setattr(Intake, "reruns", reruns_then_delete)
    else:
        add = Decisions.add

        def add_then_delete(self: Decisions, trial: FrozenTrial) -> None:
            add(self, trial)
            validated = trial.user_attrs.get("validates")
            if validated is not None and self.ledger.trial(int(validated)).user_attrs.get("promoted"):
                delete_once(int(validated))

        monkeypatch.setattr(Decisions, "add", add_then_delete)
    campaign = scripted_campaign(tmp_path, [Candidate("wider", knobs={"WIDTH": 128})])
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        campaign.run()
    first, *later = [t for t in campaign.study.trials if t.user_attrs.get("description") == "wider"]
    assert gone == [campaign.dir / f"experiments/{first.number:05d}"]
    assert first.user_attrs["status"] == "lost"
    assert (
        first.user_attrs["reason"] == f"lost: its experiment folder {gone[0]} is gone (deleted?); re-queued"
    )
    [warning] = [r.getMessage() for r in caplog.records if str(gone[0]) in r.getMessage()]
    assert (
        warning == f"trial {first.number}: {first.user_attrs['reason']} (retry 1 of campaign.max_retries=2)"
    )
    [retry] = later
    assert retry.user_attrs["retry_of"] == first.number
    if deleted == "as it is promoted":  # its re-runs were dropped before they ran
        assert retry.user_attrs["status"] == "keep"
    else:  # they ran its train.py to a result: run again, it would be their twin
        assert retry.user_attrs["status"] == "skip"
        assert retry.user_attrs["reason"].startswith("same train.py as trial ")
    assert all(t.state.is_finished() for t in campaign.study.trials)


def test_a_kept_changes_folder_deleted_before_its_new_frontier_runs_launch_costs_them_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept change's experiment folder removed by hand while its runs as the new frontier were
    queued: their launch read its train.py there and ended the controller (and every resume) in a
    FileNotFoundError. They run its train.py from its frontier commit."""
    queue_runs = Intake.new_frontier

    def queue_then_delete(self: Intake, trial: int, confirm_on: str | None) -> None:
        queue_runs(self, trial, confirm_on)
        shutil.rmtree(campaign.dir / f"experiments/{trial:05d}", ignore_errors=True)

    monkeypatch.setattr(Intake, "new_frontier", queue_then_delete)
    campaign = scripted_campaign(
        tmp_path, [Candidate("wider", knobs={"WIDTH": 128})], "campaign.validate_seeds=0"
    )
    campaign.run()
    kept = trial_named(campaign, "wider")
    assert kept.user_attrs["status"] == "keep"
    runs = campaign.ledger.queued_for("validates", kept.number)
    assert runs and {t.user_attrs["status"] for t in runs} == {"rerun"}
    assert {t.user_attrs["run_key"] for t in runs} == {kept.user_attrs["run_key"]}


def test_a_started_json_whose_start_is_no_number_is_read_as_missing(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """started.json damaged by hand, its start a string: read as the missing file it stands for
    (no start known, so no GPU time billed), not a TypeError that stopped every resume."""
    first = scripted_campaign(tmp_path, [])
    first.open()
    trial = launched_and_started(first, "yesterday", job="local:1")  # type: ignore[arg-type]
    release(first)
    second = open_campaign(tmp_path, [])
    lost = second.ledger.trial(trial.number)
    assert lost.user_attrs["status"] == "lost" and lost.user_attrs.get("started_at") is None
    assert measure(second.study, {}, second.dir, 0.0).gpu_hours == 0


def test_a_torn_proposal_file_fails_its_trial_and_the_campaign_resumes(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """A proposal file left torn by a controller killed while writing it (before they were written
    whole): a trial claimed when it died is failed, not retried, and one still queued is refused at
    launch as invalid, with the reason; neither stops the campaign opening again or going on."""
    first = scripted_campaign(tmp_path, [])
    first.open()
    for width in (32, 128):
        first.intake.add(Candidate(f"WIDTH={width}", "", knobs={"WIDTH": width}), {"kind": "experiment"})
    claimed, queued = first.ledger.waiting()[-2:]
    for trial in (claimed, queued):
        (first.dir / trial.user_attrs["edit"]).write_text('{"descrip')
    assert first.ledger.claim(claimed)  # then the controller died
    release(first)
    second = open_campaign(tmp_path, [])
    lost = second.ledger.trial(claimed.number)
    assert lost.state == TrialState.FAIL and lost.user_attrs["reason"] == (
        "lost: controller stopped before the experiment started; not re-queued: proposal file "
        f"unreadable: {claimed.user_attrs['edit']}: JSONDecodeError: Unterminated string starting at: "
        "line 1 column 2 (char 1)"
    )
    assert second.ledger.queued_for("retry_of", claimed.number) == []
    for baseline in second.ledger.waiting()[:-1]:  # (no process to run)
        second.ledger.drop(baseline, "not needed here")
    second.launcher.launch()
    refused = second.ledger.trial(queued.number)
    assert refused.state == TrialState.FAIL and refused.user_attrs["status"] == "invalid"
    assert refused.user_attrs["reason"].startswith(f"proposal file unreadable: {queued.user_attrs['edit']}")
    assert second.intake.rejected == [f"WIDTH=128: {refused.user_attrs['reason']}"]


def test_proposers_are_offered_only_the_tiers_a_proposal_may_run_on(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """A validate tier without baselines of its own refuses proposals (intake): the prompt must
    not offer it as hardware to propose on. The keep rule the proposer is told is the policy's,
    with where (and whether) winners are confirmed."""
    offered, confirmed = {}, {}
    for name, overrides, apart in [
        ("shared", ("campaign.min_delta=0.002",), False),  # validate on the screen partition
        ("apart", (), True),
        ("unconfirmed", ("campaign.validate_seeds=0",), True),
    ]:
        campaign = open_campaign(tmp_path / name, [], *overrides, validate_apart=apart)
        context = campaign.context()
        offered[name] = list(context.tiers)
        rule = context.keep_rule
        policy = campaign.policy
        assert (rule.min_delta, rule.promote_z, rule.keep_z) == (
            policy.min_delta,
            policy.promote_z,
            policy.keep_z,
        )
        confirmed[name] = (rule.confirm_tier, rule.validate_seeds, rule.min_delta)
    assert offered == {"shared": ["screen"], "apart": ["screen", "validate"], "unconfirmed": ["screen"]}
    assert confirmed == {
        "shared": ("screen", 2, 0.002),
        "apart": ("validate", 2, CampaignConfig.min_delta),
        "unconfirmed": (None, 0, CampaignConfig.min_delta),
    }


def test_a_resumed_campaign_measures_with_the_files_it_started_from(
    tmp_path: Path, open_campaign: Callable[..., Campaign], caplog: pytest.LogCaptureFixture
) -> None:
    """A prepare.py or train.py changed between two runs of a campaign (a git pull, an edit) is not
    used, and the log says so: results measured by another harness would not be comparable, and a
    new starting train.py would be ignored without a word."""
    files = tmp_path / "files"
    files.mkdir()
    prepare, train = files / "prepare.py", files / "train.py"
    shutil.copy(TOY / "prepare.py", prepare)
    shutil.copy(TOY / "train.py", train)
    paths = (f"campaign.prepare_py={prepare}", f"campaign.train_py={train}")
    started_with = prepare.read_text(), train.read_text()
    first = open_campaign(tmp_path, [], *paths)
    first.launcher.launch()  # the baselines: once an experiment has run, the files are bound
    first.fleet.shutdown(cancel=True)
    release(first)
    prepare.write_text(started_with[0] + "\nEVAL_TOKENS = 1  # changed after the campaign started\n")
    train.write_text(started_with[1] + "\n# changed too\n")

    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        campaign = open_campaign(tmp_path, [], *paths)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("campaign.prepare_py" in w and "its own copy" in w for w in warned) == 1
    assert sum("campaign.train_py" in w and "goes on from its frontier" in w for w in warned) == 1
    assert campaign.frontier.source() == started_with[1]
    try:
        campaign.launcher.launch()  # the baselines
        launched = [t for t in campaign.study.trials if "exp_dir" in t.user_attrs]
        assert launched
        for t in launched:
            assert (campaign.dir / t.user_attrs["exp_dir"] / "prepare.py").read_text() == started_with[0]
    finally:
        campaign.fleet.shutdown(cancel=True)


def test_a_first_start_that_queued_nothing_binds_neither_file(
    tmp_path: Path, open_campaign: Callable[..., Campaign], caplog: pytest.LogCaptureFixture
) -> None:
    """A first start stopped or failed in its data step queued no trial and ran nothing: the next
    start takes the harness and train.py as they are now (a fix of either is not refused)."""
    files = tmp_path / "files"
    files.mkdir()
    prepare, train = files / "prepare.py", files / "train.py"
    prepare.write_text((TOY / "prepare.py").read_text() + "\n# broken, fixed before the next start\n")
    train.write_text((TOY / "train.py").read_text() + "\n# fixed too\n")
    campaign_dir = tmp_path / "toy"
    Frontier(campaign_dir / "frontier", (TOY / "train.py").read_text())  # what the stopped start left
    (campaign_dir / "harness").mkdir()
    (campaign_dir / "harness" / "prepare.py").write_text((TOY / "prepare.py").read_text())
    with caplog.at_level(logging.WARNING, logger="autoresearch"):
        campaign = open_campaign(tmp_path, [], f"campaign.prepare_py={prepare}", f"campaign.train_py={train}")
    assert campaign.harness.read_text() == prepare.read_text()
    assert campaign.frontier.start_source() == train.read_text()
    assert not [r for r in caplog.records if "campaign." in r.getMessage()], caplog.text


def test_a_campaign_from_before_harness_copies_keeps_the_harness_it_ran_with(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """A campaign folder without harness/prepare.py takes its first experiment's copy: the harness
    its results were measured with, not whatever campaign.prepare_py holds today."""
    campaign_dir = tmp_path / "toy"
    first = scripted_campaign(tmp_path, [])
    first.open()
    launched_and_started(first, 1000.0, job="local:1")  # trial 0, in experiments/00000
    release(first)
    shutil.rmtree(campaign_dir / "harness")  # as a version from before harness copies left it
    ran = campaign_dir / "experiments" / "00000"
    (ran / "prepare.py").write_text((TOY / "prepare.py").read_text() + "\n# the harness of that time\n")
    campaign = open_campaign(tmp_path, [])
    assert campaign.harness == campaign_dir / "harness" / "prepare.py"
    assert campaign.harness.read_text() == (ran / "prepare.py").read_text()


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["+campaign=demo", "runs_dir=RUNS", "--cfg", "job"],
        ["check", "+campaign=demo", "runs_dir=RUNS"],
    ],
    ids=["help", "cfg", "check"],  # (the dry run's plan was quiet already: kept so)
)
def test_what_only_prints_ends_quietly_into_a_pipe_its_reader_has_left(
    tmp_path: Path, args: list[str]
) -> None:
    """`autoresearch --help | head -3`: Hydra's help and the resolved config ended in a
    BrokenPipeError traceback once the reader had gone."""
    proc = autoresearch_into_closed_pipe([a.replace("RUNS", str(tmp_path)) for a in args])
    assert (proc.returncode, proc.stderr) == (0, "")


def test_help_says_how_to_run_a_campaign_and_the_tools() -> None:
    """--help starts with the three commands (Hydra's own help listed `campaign` among the groups
    to override, which is refused without a +, and knew nothing of status and report)."""
    proc = subprocess.run(
        [sys.executable, "-m", "autoresearch", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    usage = [line.split()[:2] for line in proc.stdout.splitlines()[1:6] if line.strip()]
    assert usage[:4] == [
        ["autoresearch", "+campaign=NAME"],
        ["autoresearch", "check"],
        ["autoresearch", "status"],
        ["autoresearch", "report"],
    ]
    assert "campaign: demo, gpt2" in proc.stdout and "added with a + (+campaign=demo)" in proc.stdout
    # the campaign's own settings (budgets, keep rule) are one --help away, as it says
    assert "+campaign=demo --help shows its settings" in proc.stdout and "max_experiments" not in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "autoresearch", "+campaign=demo", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        proc.returncode == 0
        and "    max_experiments: 30\n" in proc.stdout
        and "min_delta: 0.01" in proc.stdout
    )
    # a knob's bounds as its campaign file has them: an int knob's are ints (not `low: 32.0`)
    knobs = OmegaConf.load(REPO / "conf" / "campaign" / "demo.yaml").knobs
    int_bounds = [(k.low, k.high) for k in knobs.values() if k.kind == "int"]
    assert int_bounds and all(isinstance(v, int) for bounds in int_bounds for v in bounds)
    for low, high in int_bounds:
        assert f"      low: {low}\n      high: {high}\n" in proc.stdout


def test_a_temporary_too_young_to_remove_when_its_run_ended_goes_when_a_later_run_ends_or_at_the_next_start(
    tmp_path: Path,
) -> None:
    """A temporary in an experiment folder untouched for less than ENDED_WRITE_S when its run ended
    was kept (it may be a live writer's) and never looked at again, so one a writer killed just
    before the end left stayed for good; it goes once it is that old, when a later run ends or at
    the next start, and a young one is still kept."""
    campaign = scripted_campaign(tmp_path, [])
    campaign.open()
    numbers = [campaign.study.ask().number for _ in range(2)]  # two runs under way
    folders = [experiment_dir(campaign.dir, number) for number in numbers]
    for folder in folders:
        folder.mkdir()
    killed_just_now = folders[0] / "outcome.json.4242-4242.tmp"
    killed_just_now.write_text("{")
    campaign._finish(Finished(numbers[0], {"status": "crash", "reason": "killed"}))
    assert killed_just_now.exists()  # young: maybe a live writer's
    a_minute_later = time.time() - 2 * ENDED_WRITE_S
    os.utime(killed_just_now, (a_minute_later, a_minute_later))
    campaign._finish(Finished(numbers[1], {"status": "crash", "reason": "killed"}))
    assert not killed_just_now.exists()  # swept when the later run ended
    release(campaign)

    killed_before_the_stop = folders[1] / "metrics.json.4243-4243.tmp"
    killed_before_the_stop.write_text("{")
    os.utime(killed_before_the_stop, (a_minute_later, a_minute_later))
    writing = folders[1] / "outcome.json.4244-4244.tmp"
    writing.write_text("{")
    resumed = scripted_campaign(tmp_path, [])
    resumed.open()
    release(resumed)
    assert list(folders[1].glob("*.tmp")) == [writing]


def test_a_start_looks_for_temporaries_only_in_folders_where_a_writer_may_have_left_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start listed the folder of every ended run for temporaries its last controller left too
    young to remove: thousands of listings in a long campaign, each a round trip on NFS. A folder
    is now kept in a list from its run's end while a writer of that run may still write, or while
    it holds a temporary, and a start looks in those alone (in every ended run's once, where the
    list was never kept)."""
    campaign = scripted_campaign(tmp_path, [])
    campaign.open()
    numbers = [campaign.study.ask().number for _ in range(3)]
    folders = [experiment_dir(campaign.dir, number) for number in numbers]
    for folder in folders:
        folder.mkdir()
    killed_just_now = folders[1] / "outcome.json.4242-4242.tmp"
    killed_just_now.write_text("{")
    for number in numbers:
        campaign._finish(Finished(number, {"status": "crash", "reason": "killed"}))
    release(campaign)
    assert killed_just_now.exists()  # young: maybe a live writer's
    # An hour later: the runs' writers are long gone, and the temporary is old.
    an_hour_ago = time.time() - 3600
    os.utime(killed_just_now, (an_hour_ago, an_hour_ago))
    listed = campaign.dir / SWEEP_FILE
    listed.write_text(json.dumps(dict.fromkeys((folder.name for folder in folders), an_hour_ago)))
    (folders[0] / "outcome.json.4243-4243.tmp").write_text("{")  # a folder found clean: never again
    looked = []
    iterdir = Path.iterdir

    def noted(folder: Path) -> Iterator[Path]:
        if folder.parent.name == "experiments":
            looked.append(folder)
        return iterdir(folder)

    monkeypatch.setattr(Path, "iterdir", noted)
    resumed = scripted_campaign(tmp_path, [])
    resumed.open()
    release(resumed)
    assert looked == folders  # listed: each looked in once
    assert not killed_just_now.exists()
    looked.clear()
    again = scripted_campaign(tmp_path, [])
    again.open()
    release(again)
    assert looked == [folders[0]]  # the one holding a temporary too young to go
    assert json.loads(listed.read_text()).keys() == {folders[0].name}
    listed.unlink()  # a campaign begun before the list was kept: every ended run's folder, once
    looked.clear()
    first = scripted_campaign(tmp_path, [])
    first.open()
    release(first)
    assert looked == folders and json.loads(listed.read_text()).keys() == {folders[0].name}


def test_a_run_lost_before_it_started_says_it_cost_a_launch_and_a_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run the cluster refused (sbatch) is lost before it starts, and its launch counts against
    max_experiments, and its loss against the run's retries, as any loss does: so a cluster that
    refuses every run ends the campaign's tries. The line said only "re-queued", and nothing when
    the retries were used up: the user could not tell where the experiments had gone."""
    campaign = scripted_campaign(tmp_path, [], "campaign.max_retries=1")
    campaign.open()
    caplog.set_level(logging.WARNING, logger="autoresearch")
    refused = {"status": "lost", "reason": "sbatch: error: Invalid account or account/partition combination"}
    said = []
    baseline = campaign.ledger.waiting()[0]
    for _ in range(2):  # the run, then its retry
        assert campaign.ledger.claim(baseline)
        exp_dir = experiment_dir(campaign.dir, baseline.number)
        exp_dir.mkdir()
        campaign.ledger.launch(
            baseline.number, {"run_key": "k", "exp_dir": str(exp_dir.relative_to(campaign.dir))}
        )
        caplog.clear()
        campaign._finish(Finished(baseline.number, refused))
        said.append(caplog.records[-1].getMessage())
        baseline = next(iter(campaign.ledger.queued_for("retry_of", baseline.number)), baseline)
    release(campaign)
    never_started = "it never started, yet it counts as one of campaign.budget.max_experiments' launches"
    assert said[0].endswith(f"; re-queued (retry 1 of campaign.max_retries=1); {never_started}"), said
    assert said[1].endswith(f"; not re-queued: campaign.max_retries=1 used; {never_started}"), said


def test_a_preempted_run_says_its_re_queue_cost_no_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A preempted run is run again at no cost to its retries, any number of times, yet its line
    said only "re-queued", where a counted one says which retry it took: the user could not tell
    that a preemption spends none of campaign.max_retries."""
    campaign = scripted_campaign(tmp_path, [], "campaign.max_retries=1")
    campaign.open()
    caplog.set_level(logging.WARNING, logger="autoresearch")
    preempted = {"status": "lost", "reason": "Slurm PREEMPTED", "taken_off": "preempted"}
    said = []
    run = campaign.ledger.waiting()[0]
    for _ in range(2):  # past max_retries=1: the second would be refused were preemptions counted
        assert campaign.ledger.claim(run)
        exp_dir = experiment_dir(campaign.dir, run.number)
        exp_dir.mkdir()
        write_json_atomic(exp_dir / STARTED_FILE, {"started_at": time.time()})
        campaign.ledger.launch(
            run.number, {"run_key": "k", "exp_dir": str(exp_dir.relative_to(campaign.dir))}
        )
        caplog.clear()
        campaign._finish(Finished(run.number, preempted))
        said.append(caplog.records[-1].getMessage())
        (run,) = campaign.ledger.queued_for("retry_of", run.number)
    release(campaign)
    free = "; re-queued (free: preempted, it costs none of campaign.max_retries=1)"
    assert all(line.endswith(f"Slurm PREEMPTED{free}") for line in said), said


def test_a_run_its_controller_died_before_launching_costs_no_retry(tmp_path: Path) -> None:
    """A controller that stopped between claiming a run and recording its launch (its workspace's
    spec.json refused by a full disk, a kill -9) had started nothing, yet the next start counted
    the loss as one of the run's retries: two such stops and the edit was dropped untried."""
    first = scripted_campaign(tmp_path, [])
    first.open()
    claimed = first.ledger.waiting()[0]
    assert first.ledger.claim(claimed)  # then the controller stopped
    release(first)
    second = scripted_campaign(tmp_path, [])
    second.open()
    release(second)
    (retry,) = second.ledger.queued_for("retry_of", claimed.number)
    assert second.ledger.trial(claimed.number).user_attrs["status"] == "lost"
    assert retry.user_attrs.get("retries", 0) == 0


def test_a_run_whose_launch_stops_its_controller_every_time_is_dropped_in_the_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run whose workspace or spec.json write stopped the controller at each try was re-queued
    at no cost to its retries at every start, for ever: never launched, never dropped. Such
    re-queues are free up to campaign.max_retries times, then count as retries; the line of a free
    one said only "re-queued", and now says which free one of how many it was."""
    caplog.set_level(logging.WARNING, logger="autoresearch")
    run = None
    said = []  # each start's line on the run the start before left claimed
    for _ in range(3):  # the run, its free re-queue, its one retry
        campaign = scripted_campaign(tmp_path, [], "campaign.max_retries=1")
        campaign.open()
        if run is not None:
            said.append(
                next(
                    r.getMessage()
                    for r in caplog.records
                    if r.getMessage().startswith(f"trial {run.number}: ")
                )
            )
        queued = (
            campaign.ledger.waiting() if run is None else campaign.ledger.queued_for("retry_of", run.number)
        )
        run = queued[0]
        assert campaign.ledger.claim(run)  # then the controller stopped
        release(campaign)
    last = scripted_campaign(tmp_path, [], "campaign.max_retries=1")
    last.open()
    release(last)
    assert not last.ledger.queued_for("retry_of", run.number)
    assert caplog.records[-1].getMessage().endswith("; not re-queued: campaign.max_retries=1 used")
    assert said[0].endswith("; re-queued (free, 1 of campaign.max_retries=1: it never launched)"), said
    assert said[1].endswith("; re-queued (retry 1 of campaign.max_retries=1)"), said


def test_a_run_whose_disk_refused_its_writes_is_re_queued_free_and_stops_the_campaign(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A change whose train.py died of a disk refusing its writes (a quota: "OSError: [Errno 122]
    Disk quota exceeded", the harness's write of its result refused) was recorded as the change's
    crash: the agent learnt from it as if its idea broke training, and the change was dropped. It
    is lost to the disk now, re-queued at no cost to its retries, and the campaign stops in one
    line, as it does when a write of the controller's own into the campaign folder is refused."""
    # (a quota is not seen by statvfs: the kernel's refusal, as train.py reports it, is what the
    # runner reads; a full disk is tested in test_runner, on a real small one)
    refused = Edit("CRASH = False\n", "CRASH = False\nraise OSError(122, 'Disk quota exceeded')\n")
    campaign = scripted_campaign(
        tmp_path, [Candidate("cache in memory", edits=[refused])], "campaign.max_retries=0"
    )
    caplog.set_level(logging.WARNING, logger="autoresearch")
    with pytest.raises(CampaignError) as stopped:
        campaign.run()
    change = trial_named(campaign, "cache in memory")
    assert change.user_attrs["status"] == "lost", change.user_attrs
    assert change.user_attrs["reason"].startswith("lost: a disk quota refused train.py's writes ("), (
        change.user_attrs
    )
    (retry,) = campaign.ledger.queued_for("retry_of", change.number)
    assert retry.state == TrialState.WAITING and retry.user_attrs["retries"] == 0
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"trial {change.number}:")]
    assert said[-1].endswith("re-queued (free: disk full, it costs none of campaign.max_retries=0)"), said
    exp_dir = experiment_dir(campaign.dir, change.number)
    assert str(stopped.value).startswith(
        f"trial {change.number} could not write in {exp_dir}: a disk quota refused train.py's writes ("
    ), stopped.value
    assert "\n" not in str(stopped.value)


def test_a_change_the_disk_refuses_again_after_the_resume_spends_its_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A change whose own writes pass a quota (a checkpoint of 200 MiB) looks like a disk others
    filled, as statvfs shows no quota: each of its runs was re-queued free and stopped the
    campaign, the user freed space and ran the same command again, and it came back, for ever,
    never charged. Only an experiment's first disk refusal is free and stops the campaign; the
    next, at the resume, spends a retry and the campaign goes on, and once they are spent the
    change is dropped."""
    refused = Edit("CRASH = False\n", "CRASH = False\nraise OSError(122, 'Disk quota exceeded')\n")
    first = scripted_campaign(tmp_path, [Candidate("checkpoint", edits=[refused])], "campaign.max_retries=1")
    with pytest.raises(CampaignError):
        first.run()
    caplog.set_level(logging.WARNING, logger="autoresearch")
    resumed = scripted_campaign(tmp_path, [], "campaign.max_retries=1")
    resumed.run()  # not stopped again by the same change
    chain = [trial_named(resumed, "checkpoint")]
    while retry := resumed.ledger.queued_for("retry_of", chain[-1].number):
        chain.append(retry[0])
    assert [t.user_attrs["status"] for t in chain] == ["lost"] * 3, [t.user_attrs for t in chain]
    assert [t.user_attrs.get("retries", 0) for t in chain] == [0, 0, 1]
    said = [
        r.getMessage()
        for t in chain[1:]
        for r in caplog.records
        if r.getMessage().startswith(f"trial {t.number}:")
    ]
    again = "the disk refused it again, only an experiment's first disk refusal is free"
    assert said[0].endswith(f"; re-queued (retry 1 of campaign.max_retries=1: {again})"), said
    assert said[1].endswith(f"; not re-queued: campaign.max_retries=1 used ({again})"), said


def test_a_refusal_of_the_runners_own_files_is_free_whatever_came_before() -> None:
    """Only an experiment's first refusal of train.py's writes is free: a later one is taken for
    its own (a quota its writes pass). A refusal of the runner's own started.json or outcome.json
    (`runner_files`: the disk filled before train.py ran, or after it ended) is never its change's
    doing, and was charged a retry from the experiment's second refusal on, the campaign not
    stopped for a disk others filled."""
    trains = {"status": "lost", "disk_full": True}
    runners = {**trains, "runner_files": True}
    assert [free_disk_refusal(trains, before) for before in (0, 1)] == [True, False]
    assert [free_disk_refusal(runners, before) for before in (0, 1, 2)] == [True, True, True]
    assert not free_disk_refusal({"status": "lost", "reason": "runner ended without an outcome"}, 0)
    ended = [Finished(7, {**runners, "reason": "the disk of its folder refused the runner's own files"})]
    stop = disk_refusal(ended, Path("runs/x"), lambda trial: 1)
    assert stop.startswith("trial 7 could not write in ") and "(or make it writable)" in stop, stop


def test_no_space_on_another_disk_is_still_the_changes_crash(tmp_path: Path) -> None:
    """ "No space left on device" where the run's folder has room is another disk's (a change that
    fills /dev/shm with more loader workers, or the node's /tmp): the change's crash, not a full
    campaign disk that stops the campaign."""
    elsewhere = Edit("CRASH = False\n", "CRASH = False\nraise OSError(28, 'No space left on device')\n")
    campaign = scripted_campaign(
        tmp_path, [Candidate("more workers", edits=[elsewhere])], "campaign.max_retries=0"
    )
    campaign.run()
    change = trial_named(campaign, "more workers")
    assert change.user_attrs["status"] == "crash", change.user_attrs
    assert change.user_attrs["reason"].endswith("No space left on device"), change.user_attrs


def test_a_disk_refusal_met_while_no_controller_ran_is_re_queued_alone_at_the_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A campaign stopped by a full disk leaves its other runs in flight, and they meet the same
    disk. Once space is freed, the same command adopted such a run as it adopts a Slurm job, by
    its id, ended or not, and its first look collected the refusal as this controller's: the
    campaign stopped again, 'free space there', where there was room. A refusal written before
    this controller began is re-queued alone, and the campaign goes on."""
    started, hold = controller_killed_mid_run(tmp_path)
    exp = started.parent
    runner = int((exp / PID_FILE).read_text().split()[0])
    hold.unlink()
    wait_for(lambda: not is_our_runner(runner, exp), 60, "the runner's end")
    ran = json.loads((exp / OUTCOME_FILE).read_text())
    refusal = "a disk quota refused train.py's writes (0 KiB free in its folder, 4 KiB written by this run)"
    write_json_atomic(exp / OUTCOME_FILE, {**ran, "status": "lost", "disk_full": True, "reason": refusal})
    reattach = LocalFleet.reattach

    def adopts_by_its_id(self: LocalFleet, job: JobSpec, handle: str) -> bool:
        """As SlurmFleet.reattach adopts its job: whether it has ended is for `poll` to find out."""
        with monkeypatch.context() as patch:
            patch.setattr("autoresearch.fleet.local.is_our_runner", lambda pid, exp_dir: True)
            return reattach(self, job, handle)

    monkeypatch.setattr(LocalFleet, "reattach", adopts_by_its_id)
    resumed = scripted_campaign(
        tmp_path / "runs", [], "campaign.budget.max_experiments=4", "cluster.partitions.local.slots=1"
    )
    resumed.run()
    trial = resumed.ledger.trial(int(exp.name))
    assert trial.user_attrs["status"] == "lost" and trial.user_attrs["reason"].startswith(
        f"lost: {refusal}; re-q"
    )
    (retry,) = resumed.ledger.queued_for("retry_of", trial.number)
    assert retry.user_attrs["retries"] == 0


def test_a_runner_whose_files_the_disk_refused_while_no_controller_ran_is_lost_to_the_disk(
    tmp_path: Path,
) -> None:
    """A local runner whose started.json or outcome.json a full disk refused ends with
    DISK_REFUSED_EXIT, which only the controller that started it sees: at a resume, its runner
    was gone without an outcome, 'job lost', a retry of its change spent on a full disk. The
    runner's runner.pid, renamed runner.refused (`runner.run_or_exit_if_disk_refuses`), makes it
    lost to the disk: re-queued free, as a refusal found at a resume is."""
    started, hold = controller_killed_mid_run(tmp_path)
    exp = started.parent
    runner = int((exp / PID_FILE).read_text().split()[0])
    os.killpg(runner, signal.SIGKILL)  # it ends as the runner whose outcome.json the disk refused:
    hold.unlink()
    wait_for(lambda: not is_our_runner(runner, exp), 60, "the runner's end")
    (exp / PID_FILE).rename(exp / REFUSED_FILE)  # no outcome, its runner.pid renamed
    study = load(tmp_path / "runs" / "toy")
    assert launch_state(study.trials[int(exp.name)], tmp_path / "runs" / "toy")[0] == NOT_COLLECTED
    resumed = scripted_campaign(
        tmp_path / "runs", [], "campaign.budget.max_experiments=4", "cluster.partitions.local.slots=1"
    )
    resumed.run()
    trial = resumed.ledger.trial(int(exp.name))
    assert trial.user_attrs["status"] == "lost", trial.user_attrs
    assert trial.user_attrs["reason"].startswith(
        f"lost: the disk of its folder {exp} refused the runner's own"
    )
    (retry,) = resumed.ledger.queued_for("retry_of", trial.number)
    assert retry.user_attrs["retries"] == 0


def test_a_run_that_ended_while_no_controller_ran_holds_its_tier_to_its_hardware(tmp_path: Path) -> None:
    """kill -9 of the controller mid-run, whose runner then ended with a result; a resume onto
    other hardware (here fewer CPU threads per slot) was let through, as no result of the tier
    was told yet: it collected that run and compared its own runs, on other hardware, with it.
    A result waiting to be collected holds its tier as a told one does."""
    started, hold = controller_killed_mid_run(tmp_path)  # its runner goes on, held
    exp, runs = started.parent, tmp_path / "runs"
    runner = int((exp / PID_FILE).read_text().split()[0])
    hold.unlink()
    wait_for(lambda: not is_our_runner(runner, exp), 60, "the runner's end")
    ran_on = load(runs / "toy").trials[int(exp.name)].user_attrs["hardware"]  # "cpu, N threads per slot"
    threads = int(ran_on.split()[1]) + 1
    moved = run_campaign(
        runs,
        "campaign.budget.max_experiments=4",
        "cluster.partitions.local.slots=1",
        f"cluster.threads_per_slot={threads}",
    )
    said = moved.stdout + moved.stderr
    assert moved.returncode == 2, said
    assert f"the screen tier of {runs / 'toy'} measured on {ran_on}, this command runs it on cpu" in said
    assert load(runs / "toy").trials[int(exp.name)].state == TrialState.RUNNING  # left to collect


def test_the_closing_hint_names_the_python_that_has_the_project_where_the_shells_lacks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` runs .venv/bin/python; its closing line said `python -m autoresearch.status`,
    which the shell's own python (without optuna) failed with a traceback. Where the shell's
    python is another, the hint names the environment's, as the user can type it from here."""
    venv_bin, other_bin = tmp_path / ".venv" / "bin", tmp_path / "elsewhere"
    for folder in (venv_bin, other_bin):
        folder.mkdir(parents=True)
        (folder / "python").write_text("#!/bin/sh\n")
        (folder / "python").chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(other_bin))
    assert python_command() == ".venv/bin/python"
    monkeypatch.setenv("PATH", f"{venv_bin}{os.pathsep}{other_bin}")  # the environment activated
    assert python_command() == "python"


def test_the_closing_hint_names_no_python_of_another_version_beside_the_one_that_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """python3.11 ran the campaign, and the `python` in its folder is another interpreter (a 3.9,
    a 2.7) without the project: the hint said `python -m autoresearch.status`, which fails there.
    The hint names a command only where it runs this very file: `python3` here, else the path."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name in ("python3.11", "python"):
        (bin_ / name).write_text(f"#!/bin/sh\n# {name}\n")
        (bin_ / name).chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(bin_ / "python3.11"))
    monkeypatch.setenv("PATH", str(bin_))
    assert python_command() == "bin/python3.11"
    (bin_ / "python3").symlink_to("python3.11")
    assert python_command() == "python3"


def move_back(campaign: Path, first_start: float, counting_since: float, last_beat: float) -> None:
    """The campaign's history as if its first start, and its last controller's count and last beat,
    had been at these times (seconds before their recorded ones): hours a test cannot wait."""
    study = load(campaign)
    study.set_user_attr("started_at", study.user_attrs["started_at"] - first_start)
    record = json.loads((campaign / "controller.json").read_text())
    record["counting_since"] = record.get("counting_since", record["started_at"]) - counting_since
    record["seen_at"] -= last_beat
    write_json_atomic(campaign / "controller.json", record)


def test_a_campaign_resumed_after_a_stop_longer_than_its_wall_budget_runs_on(tmp_path: Path) -> None:
    """The wall budget counted time stopped: a campaign stopped for two hours, resumed with
    max_wall_hours=1, ended at once ('wall hours budget reached (2 of 1)'); only the time its
    controllers ran counts, so it runs on to its experiment budget, and status counts the same."""
    campaign = tmp_path / "toy"
    first = run_campaign(tmp_path, "campaign.budget.max_experiments=3")
    assert first.returncode == 0, first.stderr + first.stdout
    move_back(campaign, 2 * 3600, 2 * 3600, 2 * 3600)  # it ran minutes, two hours ago
    resumed = run_campaign(tmp_path, "campaign.budget.max_experiments=5", "campaign.budget.max_wall_hours=1")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert "experiments budget reached" in resumed.stdout, resumed.stdout
    study = load(campaign)
    assert sum("exp_dir" in t.user_attrs for t in study.trials) >= 5
    assert measure(study, {}, campaign, time.time()).wall_hours < 0.1


def test_a_killed_controllers_time_counts_on_the_wall_budget_up_to_its_last_beat(tmp_path: Path) -> None:
    """A controller killed outright writes no stop: its time, 40 minutes to its last beat, still
    counts on the wall budget, and the 2 h 20 min until the resume does not."""
    campaign = tmp_path / "toy"
    beat = campaign / "controller.json"
    controller = subprocess.Popen(
        campaign_command(tmp_path),
        cwd=REPO,
        env={**os.environ, "TOY_SECONDS": "0.6"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: any(campaign.glob("experiments/*/runner.pid")), 60, "a running experiment")
        controller.send_signal(signal.SIGKILL)
    finally:
        controller.wait(timeout=30)
    record = json.loads(beat.read_text())
    ran = record["seen_at"] - record.get("counting_since", record["started_at"])
    stopped = 140 * 60
    move_back(campaign, stopped + 2400 - ran, stopped + 2400 - ran, stopped)
    resumed = run_campaign(tmp_path, "campaign.budget.max_wall_hours=0.5")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    said = re.search(r"wall hours budget reached \(([\d.]+) of 0.5\)", resumed.stdout)
    assert said is not None, resumed.stdout
    assert 2400 / 3600 <= float(said[1]) < 0.7


def test_an_upgraded_campaign_whose_first_resume_failed_keeps_the_older_versions_count(
    tmp_path: Path,
) -> None:
    """A campaign an older version ran 10 minutes, stopped 2 hours ago: a resume whose data step
    failed wrote a record with no sum, so the next resume counted as the older version did up to
    that failure, the 2 hours stopped included, and ended at once ('wall hours budget reached');
    the count stops at the older version's last stop, however many starts failed since."""
    campaign = tmp_path / "toy"
    first = run_campaign(tmp_path, "campaign.budget.max_experiments=2")
    assert first.returncode == 0, first.stderr + first.stdout
    record = json.loads((campaign / "controller.json").read_text())
    for key in ("ran_before", "counting_since"):  # as an older version wrote it
        record.pop(key, None)
    record["seen_at"] = time.time() - 2 * 3600
    write_json_atomic(campaign / "controller.json", record)
    study = load(campaign)
    study.set_user_attr("started_at", record["seen_at"] - 600)
    failed = run_campaign(tmp_path, "campaign.prepare_data=true", env={"TOY_DATA_FAILS": "1"})
    assert "data preparation failed" in failed.stdout + failed.stderr, failed.stdout
    resumed = run_campaign(tmp_path, "campaign.budget.max_experiments=4", "campaign.budget.max_wall_hours=1")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert "experiments budget reached" in resumed.stdout, resumed.stdout
    assert measure(load(campaign), {}, campaign, time.time()).wall_hours < 0.25


def test_the_wall_budget_sums_each_controllers_time_across_stops_kills_and_resumes(tmp_path: Path) -> None:
    """Start, Ctrl-C, resume, kill -9, resume to a wall budget's stop, resume with a larger one:
    each controller's time (its count's start to its last record) is counted once, none lost,
    none twice; what each start finds is the sum of those before it, and status says the total."""
    campaign = tmp_path / "toy"
    beat = campaign / "controller.json"
    segments: list[float] = []

    def ended() -> None:
        record = json.loads(beat.read_text())
        assert record["ran_before"] == pytest.approx(sum(segments), abs=1e-6), record
        segments.append(record["seen_at"] - record["counting_since"])

    def interrupted(sig: signal.Signals, experiments: int) -> None:
        slow = {**os.environ, "TOY_SECONDS": "0.6"}
        command = campaign_command(tmp_path, f"campaign.budget.max_experiments={experiments}")
        controller = subprocess.Popen(
            command, cwd=REPO, env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def counting() -> bool:
            record = read_json(beat) or {}
            return record.get("pid") == controller.pid and "counting_since" in record

        try:
            wait_for(counting, 60, "the controller to count")
            controller.send_signal(sig)
        finally:
            controller.wait(timeout=60)

    first = run_campaign(tmp_path, "campaign.budget.max_experiments=2")
    assert first.returncode == 0, first.stderr + first.stdout
    ended()
    interrupted(signal.SIGINT, 6)  # Ctrl-C
    assert json.loads(beat.read_text())["state"] == "stopped"
    ended()
    interrupted(signal.SIGKILL, 8)  # kill -9: counted to its last beat
    assert json.loads(beat.read_text())["state"] == "running"
    ended()
    spent = sum(segments) / 3600
    reached = run_campaign(
        tmp_path, "campaign.budget.max_experiments=20", f"campaign.budget.max_wall_hours={spent}"
    )
    assert "wall hours budget reached" in reached.stdout, reached.stdout
    ended()
    more = run_campaign(tmp_path, "campaign.budget.max_experiments=10", "campaign.budget.max_wall_hours=1")
    assert more.returncode == 0, more.stderr + more.stdout
    assert "experiments budget reached" in more.stdout, more.stdout
    ended()
    assert measure(load(campaign), {}, campaign, time.time()).wall_hours * 3600 == pytest.approx(
        sum(segments)
    )


def test_the_closing_line_counts_the_runs_cancelled_or_lost_apart(
    tmp_path: Path, open_campaign: Callable[..., Campaign]
) -> None:
    """A run scancelled or preempted counts among the experiments: the closing line said '3
    experiments, 0 kept, 0 crashed' as if all three had measured something."""
    from autoresearch.__main__ import done_line

    campaign = open_campaign(tmp_path, [])
    for status in ("cancelled", "lost", "cancelled"):
        number = queue_run(campaign, kind="experiment", exp_dir=f"experiments/{status}")
        assert campaign.ledger.claim(campaign.ledger.trial(number))
        campaign.ledger.fail(number, {"status": status})
    said = done_line(campaign.summary("stopped by the user"))
    assert said.startswith(
        "done (stopped by the user): 3 experiments, 0 kept, 0 crashed, 2 cancelled, 1 lost; "
    )
